"""The core/application split: the library core never imports the application layer."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_margin

CORE = Path(hf_margin.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_the_application():
    """Guards the split: hf_margin/*.py (losses, data, scoring, margins, trainer, ...) must not import hf_margin.app
    (CLI, recipe arguments, STS-B task), directly or lazily inside a function."""
    offenders = {
        p.name: sorted(m for m in imported_modules(p) if m.startswith("hf_margin.app"))
        for p in CORE.glob("*.py")
        if p.name != "__main__.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_public_names_stay_importable():
    for name in (
        "attach_teacher_margins",
        "BiEncoderTeacher",
        "CrossEncoderTeacher",
        "MarginDistillConfig",
        "MarginDistillTrainer",
        "load_student",
        "adaptive_difference_loss",
        "margin_mse_loss",
        "label_hinge_loss",
        "AdaptiveDifferenceLoss",
        "MarginMSELoss",
        "LabelHingeLoss",
    ):
        assert hasattr(hf_margin, name), name


def test_loss_registry_is_the_one_list_of_losses():
    """Config choices, trainer dispatch and card labels all come from LOSS_REGISTRY (the card once missed options)."""
    from hf_margin import LOSS_REGISTRY, MarginDistillConfig

    field = MarginDistillConfig.__dataclass_fields__["loss"]
    assert tuple(field.metadata["choices"]) == tuple(LOSS_REGISTRY)
    adaptive = LOSS_REGISTRY["adaptive"]
    args = MarginDistillConfig(output_dir="x", overshoot_width=0.5, mse_weight=0.1, report_to="none")
    assert adaptive.card_options(args) == {
        "activation": "relu",
        "teacher_activation": "identity",
        "temperature": 1.0,
        "scale": 1.0,
        "overshoot_width": 0.5,
        "mse_weight": 0.1,
    }
