"""Fault suite: the teacher-margin cache hits when it should and heals when it breaks; bad input gets an early,
clear error naming the file, the line or row, and what to do. Each case failed on the code before issue 11."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertModel

from hf_margin import attach_teacher_margins
from hf_margin.app.cli import main
from hf_margin.data.columns import DataValidationError, validate_triplets
from hf_margin.data.formats import normalize_dataset
from hf_margin.data.sources import load_data_file
from hf_margin.models.scoring import BiEncoderScorer, CrossEncoderScorer

from .conftest import TopicTeacher, make_tokenizer, make_triplets, tiny_config, write_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).parent / "faults"


def entry_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ---- 1. the fingerprint depends only on what scoring uses ----------------------------------------------


def checkpoint_without_pooler(folder: Path) -> Path:
    """A bi-encoder saved the way hf-margin saves students: no pooler weights in the checkpoint."""
    return write_tiny_teacher(folder)


FINGERPRINT_SCRIPT = """
import sys, torch
from hf_margin.models.scoring import BiEncoderScorer
torch.manual_seed(int(sys.argv[2]))  # a random pooler would differ between these processes
print(BiEncoderScorer.from_pretrained(sys.argv[1], device="cpu").fingerprint)
"""


def test_same_checkpoint_same_fingerprint_in_any_process(tmp_path):
    """Guards the cache that never hit: AutoModel initialised a random pooler for a checkpoint without one, the
    weights hash included it, and each process got another fingerprint (46e686b4…, then e5432b7b…)."""
    path = checkpoint_without_pooler(tmp_path / "student")
    prints = [
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT_SCRIPT, str(path), seed],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=120,
        )  # fmt: skip
        for seed in ("1", "2")
    ]
    assert all(p.returncode == 0 for p in prints), prints[0].stderr[-2000:]
    assert prints[0].stdout.split()[-1] == prints[1].stdout.split()[-1]
    assert "newly initialized" not in prints[0].stderr and "pooler" not in prints[0].stderr


def test_a_random_pooler_does_not_change_the_fingerprint(tmp_path):
    """A model built with a pooler the score never reads: two random poolers, one fingerprint; a change to a
    weight that scores does change it."""
    tok = make_tokenizer()
    fingerprints = []
    for seed in (1, 2):
        torch.manual_seed(0)
        model = BertModel(tiny_config(len(tok)), add_pooling_layer=True)
        torch.manual_seed(seed)
        torch.nn.init.normal_(model.pooler.dense.weight)
        fingerprints.append(BiEncoderScorer(model, tok, device="cpu").fingerprint)
    assert fingerprints[0] == fingerprints[1]
    with torch.no_grad():
        model.encoder.layer[0].output.dense.bias.add_(1e-3)
    assert BiEncoderScorer(model, tok, device="cpu").fingerprint != fingerprints[1]


def test_second_run_with_a_reloaded_teacher_hits_the_cache(tmp_path, monkeypatch):
    path = checkpoint_without_pooler(tmp_path / "teacher")
    data = make_triplets(10, seed=2)
    torch.manual_seed(1)
    first = attach_teacher_margins(data, BiEncoderScorer.from_pretrained(path, device="cpu"), cache_dir=tmp_path / "c")
    torch.manual_seed(2)
    again_teacher = BiEncoderScorer.from_pretrained(path, device="cpu")
    monkeypatch.setattr(again_teacher, "score_pairs", lambda *a: pytest.fail("the cache was missed"))
    again = attach_teacher_margins(data, again_teacher, cache_dir=tmp_path / "c")
    assert again["teacher_margins"] == first["teacher_margins"]
    assert len([p for p in (tmp_path / "c").iterdir() if p.is_dir()]) == 1


def test_cross_encoder_teacher_with_a_random_head_is_refused(tmp_path):
    """A checkpoint with no classification head would score with random weights (and a new fingerprint)."""
    path = checkpoint_without_pooler(tmp_path / "encoder-only")
    with pytest.raises(ValueError, match="score head would be random"):
        CrossEncoderScorer.from_pretrained(path, device="cpu")


# ---- 2. temp files of killed runs; two runs at once -----------------------------------------------------


def test_orphans_of_other_entries_are_left_alone(tmp_path):
    """Only the entry being computed (under its lock) is cleaned: another entry's temp file may belong to a
    live run."""
    other = tmp_path / "teacher-margins-0123456789abcdef"
    other.mkdir(parents=True)
    (other / "tmpLIVE1234").write_bytes(b"being written")
    attach_teacher_margins(make_triplets(6), TopicTeacher(), cache_dir=tmp_path)
    assert (other / "tmpLIVE1234").read_bytes() == b"being written"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_only_temp_files_of_killed_runs_are_cleaned_from_an_entry(tmp_path):
    """In the entry being computed, a live temporary file (``datasets`` writing a derived cache, e.g. the tokenised
    set, of this entry in another process: fresh, its writer unknown) is kept; a dead process's ``tmp-<pid>-`` file
    or folder and a temporary file nobody wrote to for 10 minutes are removed. The CI failure this guards: one
    process's cleanup deleted the file another was about to rename into place."""
    data = make_triplets(6)
    attach_teacher_margins(data, TopicTeacher(), cache_dir=tmp_path)
    [entry] = [p for p in tmp_path.iterdir() if p.is_dir()]
    live, old = entry / "tmpLIVE1234", entry / "tmpOLD5678"
    live.write_bytes(b"being written")
    old.write_bytes(b"left behind")
    os.utime(old, (old.stat().st_atime, old.stat().st_mtime - 601))
    dead_file, dead_folder = entry / f"tmp-{dead_pid()}-checksum.json", entry / f"tmp-{dead_pid()}-writing"
    dead_file.write_text("{")
    dead_folder.mkdir()
    (dead_folder / "tmpabcd").write_bytes(b"half a map")
    alive = entry / f"tmp-{os.getppid()}-checksum.json"  # a live process that is not this one
    alive.write_text("{")
    teacher = TopicTeacher()
    attach_teacher_margins(data, teacher, cache_dir=tmp_path)
    assert teacher.calls == 0  # a hit: the cleanup left the entry itself alone
    assert live.read_bytes() == b"being written" and alive.exists()
    assert not old.exists() and not dead_file.exists() and not dead_folder.exists()


CONCURRENT_SCRIPT = """
import json, sys, time
from tests.conftest import TopicTeacher, make_triplets
from hf_margin import attach_teacher_margins

class Slow(TopicTeacher):
    def score_pairs(self, queries, documents):
        time.sleep(0.05)  # widens the window in which the two runs overlap; no assertion depends on it
        return super().score_pairs(queries, documents)

teacher = Slow()
scored = attach_teacher_margins(make_triplets(40, seed=4), teacher, cache_dir=sys.argv[1], batch_size=4)
print(json.dumps({"pairs": teacher.pairs, "margins": list(scored["teacher_margins"])}))
"""


def test_two_runs_at_once_write_one_good_cache(tmp_path):
    """Two terminals scoring the same data: no error, one cache entry, the data scored once in all (the second
    run waits on the lock and reads), and both get the margins of a clean run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", CONCURRENT_SCRIPT, str(tmp_path / "cache")]
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    data = make_triplets(40, seed=4)
    assert sum(r["pairs"] for r in results) == sum(1 + len(n) for n in data["negatives"])
    clean = attach_teacher_margins(data, TopicTeacher(), cache_dir=tmp_path / "clean")
    assert results[0]["margins"] == results[1]["margins"] == list(clean["teacher_margins"])
    assert [p.name for p in entry_files(tmp_path / "cache")] == ["checksum.json", "data.arrow"]
    assert not list((tmp_path / "cache").rglob("tmp*"))


# ---- 3. a damaged cache heals ----------------------------------------------------------------------------


def overwrite_first_margin(path: Path, margin: float) -> None:
    """Replace the float32 bytes of one teacher margin in place (same size), as a disk error or an edit would."""
    raw = bytearray(path.read_bytes())
    old = struct.pack("<f", np.float32(margin))
    at = raw.find(old)
    assert at >= 0
    raw[at : at + 4] = struct.pack("<f", 123.0)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["half", "empty", "margin", "no-checksum"])
def test_damaged_cache_is_reported_deleted_and_recomputed(tmp_path, caplog, damage):
    """Guards: a cache cut to half crashed with OSError ('Expected to be able to read 2320 bytes'), one cut to 0
    bytes with ArrowInvalid, neither naming the file; a margin overwritten in place (0.359 -> 123.0) was read back
    silently. Now: one warning naming the file, then the same cache as a clean run's."""
    data = make_triplets(12, seed=3)
    first_margins = list(attach_teacher_margins(data, TopicTeacher(), cache_dir=tmp_path / "cache")["teacher_margins"])
    [cache_file] = list((tmp_path / "cache").glob("teacher-margins-*/data.arrow"))
    clean_bytes = cache_file.read_bytes()
    if damage == "half":
        cache_file.write_bytes(clean_bytes[: len(clean_bytes) // 2])
    elif damage == "empty":
        cache_file.write_bytes(b"")
    elif damage == "margin":
        overwrite_first_margin(cache_file, first_margins[0][0])
        assert len(cache_file.read_bytes()) == len(clean_bytes)
    else:
        (cache_file.parent / "checksum.json").unlink()
    teacher = TopicTeacher()
    with caplog.at_level(logging.WARNING, logger="hf_margin.data.cache"):
        healed = attach_teacher_margins(data, teacher, cache_dir=tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cache_file) in warnings[0] and "recomputed" in warnings[0]
    assert teacher.calls > 0
    assert list(healed["teacher_margins"]) == first_margins
    assert cache_file.read_bytes() == clean_bytes


def test_check_costs_a_hash_of_the_file_not_a_rescore(tmp_path, monkeypatch):
    """A sound cache is read after its checksum matches, without one teacher call."""
    data = make_triplets(12, seed=3)
    attach_teacher_margins(data, TopicTeacher(), cache_dir=tmp_path)
    teacher = TopicTeacher()
    attach_teacher_margins(data, teacher, cache_dir=tmp_path)
    assert teacher.calls == 0


# ---- 4-6. bad input: early, clear, named --------------------------------------------------------------


def test_empty_dataset_is_refused_before_scoring(tmp_path):
    """Guards attach_teacher_margins returning a 0-row dataset without margin columns."""
    empty = make_triplets(3).select([])
    teacher = TopicTeacher()
    with pytest.raises(DataValidationError, match="0 rows"):
        attach_teacher_margins(empty, teacher, cache_dir=tmp_path)
    assert teacher.calls == 0


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("empty.jsonl", ["empty.jsonl", "0 bytes"]),
        ("blank_lines.jsonl", ["blank_lines.jsonl", "no rows"]),
        ("bad_utf8.jsonl", ["bad_utf8.jsonl, line 3", "not valid UTF-8", "0xe9", "iconv"]),
        ("json_syntax.jsonl", ["json_syntax.jsonl, line 2", "JSON syntax error"]),
        ("array_syntax.json", ["array_syntax.json, line 4", "JSON syntax error"]),
    ],
)
def test_bad_files_name_file_line_and_fix(name, fragments):
    """Guards a bare StopIteration (empty file), pyarrow's UnicodeDecodeError on first access with no file or row,
    and DatasetGenerationError with the line only in the chained cause."""
    with pytest.raises(DataValidationError) as info:
        load_data_file(FAULTS / name)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_whitespace_only_text_is_called_so():
    """Guards '   ' being reported as 'an empty string'."""
    data = load_data_file(FAULTS / "whitespace_text.jsonl")
    with pytest.raises(DataValidationError, match="column 'positive', row 1: a whitespace-only string"):
        validate_triplets(data)
    with pytest.raises(DataValidationError, match="whitespace-only"):
        normalize_dataset(data, source="whitespace_text.jsonl")


def test_bad_files_through_the_cli_are_one_line(capsys):
    for name in ("bad_utf8.jsonl", "json_syntax.jsonl", "empty.jsonl"):
        assert main(["train", "--train_file", str(FAULTS / name)]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and name in errors[0]


def test_empty_dataset_after_a_filter_through_the_trainer_path():
    data = Dataset.from_dict({"query": ["a"], "positive": ["b"], "negatives": [["c"]]}).filter(lambda r: False)
    with pytest.raises(DataValidationError, match="0 rows|empty"):
        normalize_dataset(data)


@pytest.mark.parametrize("fsync", [False, True])
def test_a_file_is_written_whole_or_not_at_all(tmp_path, fsync):
    """Guards every cache and report write (checksums, shards, margins, metrics.json, ONNX files): a block that
    fails leaves the old file as it was and no temporary file; one that finishes replaces the file in one rename."""
    from hf_margin.data.cache import written_whole

    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), written_whole(target, fsync=fsync) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with written_whole(target, fsync=fsync) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith("tmp")  # a cache entry's cleanup finds it
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
