"""The package layout: the library core never imports the application layer, every core module lives in one of the
five concept subpackages, and hf_margin's modules import each other without a cycle."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import hf_margin

CORE = Path(hf_margin.__file__).parent
SUBPACKAGES = ("data", "models", "training", "evaluation", "reporting")


def module_name(path: Path) -> str:
    """``hf_margin/data/columns.py`` -> ``hf_margin.data.columns``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_files() -> dict[str, Path]:
    """Every module of the hf_margin package, by name (the ``evaluate`` metric scripts in ``evaluate_metrics/`` are
    package data loaded by path, not modules of the package)."""
    return {
        module_name(p): p
        for p in sorted(CORE.rglob("*.py"))
        if "evaluate_metrics" not in p.relative_to(CORE).parts and "__pycache__" not in p.parts
    }


def core_files() -> dict[str, Path]:
    """The library core: every module outside ``hf_margin.app`` (and ``__main__``, which runs the command)."""
    return {
        name: p
        for name, p in package_files().items()
        if not name.startswith("hf_margin.app") and name != "hf_margin.__main__"
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.Module, *, lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (module level, also inside ``if``/``try``/
    ``with`` and class bodies), plus with ``lazy`` those inside functions; never those under
    ``if TYPE_CHECKING:``, which do not run."""
    stack: list[ast.AST] = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not lazy:
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(reversed(node.orelse))
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def imported_modules(name: str, path: Path, modules: set[str] | None = None, *, lazy: bool = True) -> set[str]:
    """What ``name`` imports: ``from a.b import c`` names ``a.b.c`` when that is a module in ``modules``, else
    ``a.b``; relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in import_nodes(ast.parse(path.read_text()), lazy=lazy):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            found.add(candidate if modules is not None and candidate in modules else base)
    return found


def import_graph(*, lazy: bool) -> dict[str, set[str]]:
    """hf_margin module -> the hf_margin modules it imports (top-level imports only unless ``lazy``)."""
    files = package_files()
    return {
        name: {m for m in imported_modules(name, path, set(files), lazy=lazy) if m in files and m != name}
        for name, path in files.items()
    }


def test_core_never_imports_the_application():
    """Guards the split: the core (hf_margin.data, .models, .training, .evaluation, .reporting) must not import
    hf_margin.app (CLI, recipe arguments, STS-B task), directly or lazily inside a function."""
    modules = set(package_files())
    offenders = {
        name: sorted(m for m in imported_modules(name, path, modules) if m.startswith("hf_margin.app"))
        for name, path in core_files().items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_core_module_lives_in_a_concept_subpackage():
    """No stray module beside the package root: each core module sits in data/, models/, training/, evaluation/
    or reporting/, and each of those is a package whose __init__ says what it holds."""
    stray = sorted(p.name for p in CORE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert stray == []
    folders = sorted(p.name for p in CORE.iterdir() if p.is_dir() and any(p.rglob("*.py")))  # not a bare __pycache__
    assert folders == sorted((*SUBPACKAGES, "app"))
    for name in SUBPACKAGES:
        init = CORE / name / "__init__.py"
        assert init.is_file(), init
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"
    outside = sorted(
        name
        for name in core_files()
        if name != "hf_margin" and not name.startswith(tuple(f"hf_margin.{s}" for s in SUBPACKAGES))
    )
    assert outside == []


APP_MODULE_LINES = 250


def test_application_modules_stay_small():
    """Each module of hf_margin.app holds one concept in at most about 250 lines (arguments.py, pipeline.py and
    tasks/common.py once held 540, 435 and 275: recipes, help, reporting and model loading mixed in)."""
    sizes = {p.relative_to(CORE).as_posix(): len(p.read_text().splitlines()) for p in (CORE / "app").rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > APP_MODULE_LINES} == {}


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-function-level"])
def test_no_import_cycle_among_hf_margin_modules(lazy):
    """The module-level import graph of hf_margin is acyclic (modeling and scoring once imported each other through
    a function-level import; the model card imported the package root); with ``lazy`` the imports inside functions
    count too, so that none of them hides a cycle either."""
    graph = import_graph(lazy=lazy)
    assert "hf_margin.models.modeling" in graph and graph["hf_margin"]  # the graph is really built
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(reversed(exc.args[1]))}")


def test_core_modules_import_from_the_defining_module():
    """Only the package __init__ files re-export: a core module that imported from hf_margin or from a subpackage's
    __init__ (``from hf_margin.data import ...``) would depend on the order the __init__ files run in."""
    files = package_files()
    packages = {"hf_margin", *(f"hf_margin.{s}" for s in SUBPACKAGES)}
    offenders = {
        name: sorted(m for m in imported_modules(name, path, set(files)) if m in packages)
        for name, path in core_files().items()
        if path.name != "__init__.py"
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
    assert all(hasattr(hf_margin, name) for name in hf_margin.__all__)


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
        "teacher_margin_scaling": "auto",  # the target's rescaling, applied by the trainer, listed with the loss
    }
    assert LOSS_REGISTRY["label_hinge"].card_options(args) == {"label_margin": 0.1}  # reads no teacher margins
