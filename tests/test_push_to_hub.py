"""``MarginDistillTrainer.push_to_hub`` uploads the student, its card and metrics, through the Trainer's own
mechanism, to a local stand-in for the Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .hub_standin import HubStandin, hub_standin  # noqa: F401  (hub_standin is a fixture)

ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "test-user/tiny-student"
TOKEN = "hf_testtoken_SECRET123"  # fake: it only ever reaches the local stand-in
COMMIT_MESSAGE = "hf-margin: distilled student"
TEACHER = "topic-teacher (synthetic)"

# Runs in a fresh interpreter: huggingface_hub reads HF_ENDPOINT, HF_TOKEN etc. when it is imported.
# Like `hf_margin.app.pipeline.run_train`: train, write metrics.json, set the card's info, then `trainer.push_to_hub`.
PUSH_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    root, out_dir, cache_dir, repo_id, teacher, commit_message = sys.argv[1:7]
    sys.path.insert(0, root)

    import torch
    from transformers import BertModel

    from hf_margin import MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins
    from tests.conftest import TopicTeacher, make_tokenizer, make_triplets, tiny_config

    torch.manual_seed(0)
    tok = make_tokenizer()
    train = attach_teacher_margins(make_triplets(16), TopicTeacher(), cache_dir=cache_dir)
    model = BertModel(tiny_config(len(tok)), add_pooling_layer=False)
    args = MarginDistillConfig(
        output_dir=out_dir,
        push_to_hub=True,
        hub_model_id=repo_id,
        max_steps=2,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = MarginDistillTrainer(model=model, args=args, train_dataset=train, processing_class=tok)
    result = trainer.train()
    metrics = {"train_loss": result.training_loss, "stsb_test_spearman": {"after": 12.3}}
    trainer.results = metrics  # the trainer writes metrics.json (with these) when push_to_hub saves
    trainer.card_info = {
        "teacher": teacher,
        "eval": {"student after training": {"STS-B test Spearman x100": 12.3}},
        "license": "apache-2.0",
        "language": "en",
    }
    info = trainer.push_to_hub(commit_message=commit_message)
    print("PUSHED", json.dumps({"commit_url": str(info), "oid": info.oid, "hub_model_id": trainer.hub_model_id}))
    """
)


def run_push(hub: HubStandin, tmp_path: Path, *, xet: bool) -> tuple[subprocess.CompletedProcess, Path]:
    out_dir = tmp_path / "out"
    script = tmp_path / "push.py"
    script.write_text(PUSH_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN=TOKEN,
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(tmp_path / "hf_home"),  # no stored token or cache of the developer's
        TOKENIZERS_PARALLELISM="false",
        # A request that is not for HF_ENDPOINT would reach the stand-in as a proxy request and be recorded.
        HTTP_PROXY=hub.url,
        HTTPS_PROXY=hub.url,
        ALL_PROXY=hub.url,
        NO_PROXY="127.0.0.1",
    )
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(ROOT), str(out_dir), str(tmp_path / "margins")]
        + [REPO_ID, TEACHER, COMMIT_MESSAGE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc, out_dir


@pytest.mark.parametrize(
    "xet",
    [
        pytest.param(True, id="hf_xet-pipeline"),  # upload_folder's path when hf_xet is installed (the default)
        pytest.param(False, id="create_commit"),  # HF_HUB_DISABLE_XET=1: upload_folder -> create_commit
    ],
)
def test_push_to_hub_uploads_student_card_and_metrics(hub_standin, tmp_path, xet):  # noqa: F811
    """``trainer.push_to_hub`` (``Trainer.init_hf_repo`` -> ``create_repo``, then ``save_model``, our
    ``create_model_card`` and ``upload_folder``) sends the student, the sentence-transformers files, the model
    card and ``metrics.json`` in one commit, authenticated with the token as a Bearer header, and leaks the
    token into no output or saved file.

    The real Hub was not contacted: ``HF_ENDPOINT`` points at :mod:`tests.hub_standin`, a local stand-in that
    answers only the endpoints these calls use, and any other outgoing request would reach the stand-in as a
    proxy request and fail the test. Passing does not prove compatibility with the live Hub's API beyond these
    endpoints (nor its permission checks, LFS/xet storage or metadata validation).
    """
    hub = hub_standin
    proc, out_dir = run_push(hub, tmp_path, xet=xet)
    calls = "\n".join(f"{r.request_line} -> {r.status} ({r.endpoint})" for r in hub.requests)
    assert proc.returncode == 0, f"push failed\n--- requests\n{calls}\n--- stderr\n{proc.stderr[-6000:]}"
    pushed = json.loads(proc.stdout.split("PUSHED ", 1)[1])

    # Only the stand-in's known endpoints were called, directly (no request went elsewhere through the proxy).
    assert hub.unknown_requests == [], calls
    assert all(r.target.startswith("/api/") for r in hub.requests), calls
    assert all(r.status == 200 for r in hub.requests), calls
    endpoints = {r.endpoint for r in hub.requests}
    assert {"create_repo", "preupload", "commit"} <= endpoints, calls
    assert hub.repos() == [("model", REPO_ID)]
    assert pushed["hub_model_id"] == REPO_ID

    # One commit, with the message given, holding the student, its tokenizer, the ST layout, the card, metrics.
    assert [(c.repo_id, c.message) for c in hub.commits] == [(REPO_ID, COMMIT_MESSAGE)]
    assert pushed["oid"] == hub.commits[0].oid
    files = hub.files(REPO_ID)
    expected = {
        "model.safetensors",
        "config.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "metrics.json",
    }
    assert expected <= set(files), sorted(files)
    assert not [p for p in files if p.startswith(("_", "checkpoint-"))], sorted(files)
    for path in expected:
        assert files[path] == (out_dir / path).read_bytes(), path
    local = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()}
    assert set(files) == {p for p in local if not p.startswith(("_", "checkpoint-"))}

    card = files["README.md"].decode()
    assert TEACHER in card
    assert "STS-B test Spearman x100" in card and "12.3" in card
    assert REPO_ID in card  # usage snippet points at the pushed repo
    assert "library_name: sentence-transformers" in card
    assert json.loads(files["metrics.json"])["stsb_test_spearman"] == {"after": 12.3}
    assert json.loads(files["modules.json"])[1]["path"] == "1_Pooling"

    # Every request carried the token, as a Bearer header; the token is nowhere in the output or saved files.
    assert hub.requests
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}, calls
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    leaked = [p for p in out_dir.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
    assert not [p for p, content in files.items() if TOKEN.encode() in content]
