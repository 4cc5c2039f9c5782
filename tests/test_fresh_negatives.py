"""Fresh negatives per epoch: each row's negatives are redrawn every epoch from its cached candidate band, with the
band's cached teacher margins, reproducibly, in data-loader workers too, and without a teacher call in training."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from hf_margin import MarginDistillConfig, MarginDistillTrainer
from hf_margin.app.cli import main
from hf_margin.data.fresh_negatives import FreshNegatives
from hf_margin.data.margin_scaling import scale_teacher_margins
from hf_margin.data.margins import BAND, BAND_MARGINS, attach_band_margins
from hf_margin.data.mining import build_corpus_triplets, mine_hard_negatives
from hf_margin.models.scoring import CrossEncoderScorer

from .conftest import TOPICS, TopicTeacher, make_tokenizer, sharpen, teacher_for, tiny_config, write_tiny_stsb

WORDS = [w for ws in TOPICS.values() for w in ws]
CORPUS = [" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(3)) for i in range(40)]
PAIRS = Dataset.from_dict({"query": CORPUS[0:24:2], "positive": CORPUS[1:24:2]})  # 12 rows, distinct queries
MINING = {"num_negatives": 3, "skip_top": 1, "sample_from": 12}  # bands of about 11 candidates


@pytest.fixture
def miner():
    from transformers import BertModel

    torch.manual_seed(0)
    tok = make_tokenizer()
    return teacher_for(sharpen(BertModel(tiny_config(len(tok)), add_pooling_layer=False)), tok)


def banded(cache, miner, teacher, **options) -> Dataset:
    """Pairs mined with their bands, every candidate scored by ``teacher`` (both cached under ``cache``)."""
    mined = mine_hard_negatives(PAIRS, CORPUS, miner, **{**MINING, **options}, cache_dir=cache, keep_band=True)
    return attach_band_margins(mined, teacher, cache_dir=cache)


def picks(data: FreshNegatives, epoch: int) -> list[list[str]]:
    return [data[(epoch, row)]["negatives"] for row in range(len(data))]


def keep(items: list) -> list:
    return items


def test_negatives_change_between_epochs_but_repeat_for_the_same_seed_and_epoch(tmp_path, miner):
    """Guards against negatives that never change (the band unused, or the epoch not in the draw) and against a
    draw that is not reproducible (an unseeded or process-dependent RNG): two independent runs (fresh caches,
    fresh objects) give the same negatives for the same (seed, epoch), epochs 0 and 1 differ, other seeds differ."""
    a = FreshNegatives(banded(tmp_path / "a", miner, TopicTeacher()), 3, seed=0)
    b = FreshNegatives(banded(tmp_path / "b", miner, TopicTeacher()), 3, seed=0)
    assert picks(a, 0) == picks(b, 0) and picks(a, 1) == picks(b, 1)
    assert [a[(1, r)]["teacher_margins"] for r in range(len(a))] == [b[(1, r)]["teacher_margins"] for r in range(12)]
    changed = sum(x != y for x, y in zip(picks(a, 0), picks(a, 1)))
    assert changed >= len(a) // 2, f"only {changed} of {len(a)} rows drew other negatives in epoch 1"
    assert picks(FreshNegatives(banded(tmp_path / "a", miner, TopicTeacher()), 3, seed=1), 0) != picks(a, 0)
    assert all(len(set(row)) == 3 for e in (0, 1) for row in picks(a, e))  # without replacement


@pytest.mark.parametrize("kind", ["bi-encoder", "cross-encoder"])
def test_every_negative_is_from_its_band_with_the_teachers_own_margin(
    tmp_path, miner, tokenizer, sharp_bi_encoder, sharp_cross_encoder, kind
):
    """Guards the band and its margins: the band leaves out the query, its positives and duplicates, holds the mined
    negatives, and every negative drawn in epochs 0-2 is a band candidate whose margin is the teacher's own
    t(q,p) - t(q,n), checked against a direct per-pair call of a fresh scorer of the same tiny model (a margin
    shifted to another candidate, or a band scored out of order, fails)."""
    if kind == "bi-encoder":
        teacher, reference = teacher_for(sharp_bi_encoder, tokenizer), teacher_for(sharp_bi_encoder, tokenizer)
    else:
        teacher, reference = (
            CrossEncoderScorer(sharp_cross_encoder, tokenizer, device="cpu", show_progress=False) for _ in range(2)
        )
    scored = banded(tmp_path, miner, teacher)
    data = FreshNegatives(scored, 3, seed=0)

    for row, example in enumerate(scored):
        band = example[BAND]
        assert len(band) == len(set(band)) >= 3
        assert example["query"] not in band and example["positive"] not in band
        assert set(example["negatives"]) <= set(band)
        by_text = dict(zip(band, example[BAND_MARGINS]))
        assert example["teacher_margins"] == [by_text[n] for n in example["negatives"]]
        q, p = example["query"], example["positive"]
        direct = reference.score_pairs([q] * (1 + len(band)), [p, *band])  # one call per row, its own batch
        expected = dict(zip(band, direct[0] - direct[1:]))
        for epoch in range(3):
            item = data[(epoch, row)]
            assert set(item["negatives"]) <= set(band)
            for n, m in zip(item["negatives"], item["teacher_margins"]):
                assert m == pytest.approx(expected[n], rel=1e-4, abs=1e-5), (row, epoch, n)


def test_trainer_trains_on_each_epochs_draw_without_calling_the_teacher(tmp_path, miner, tokenizer, bi_encoder):
    """Guards the Trainer wiring with 2 persistent data-loader workers: the teacher (counting) is not called once
    training starts, and the margins each epoch trains on are exactly that epoch's draw (a worker holding a stale
    epoch, or set_epoch not reaching the sampler, would repeat epoch 0's negatives)."""
    teacher = TopicTeacher()
    scored = banded(tmp_path, miner, teacher)
    calls = teacher.calls
    raw = FreshNegatives(scored, 3, seed=0)
    seen: list[tuple[tuple[int, ...], list[float]]] = []

    class Recording(MarginDistillTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            b = inputs["negatives_mask"].shape[0]
            for i in range(b):
                ids = inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist()
                seen.append((tuple(ids), inputs["teacher_margins"][i][inputs["negatives_mask"][i]].tolist()))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    args = MarginDistillConfig(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        num_train_epochs=2,
        per_device_train_batch_size=4,
        dataloader_num_workers=2,
        dataloader_persistent_workers=True,
    )
    trainer = Recording(bi_encoder, args, train_dataset=raw, processing_class=tokenizer)
    trainer.train()
    assert teacher.calls == calls
    assert len(seen) == 2 * len(raw)
    row_of = {tuple(tokenizer(q)["input_ids"]): r for r, q in enumerate(scored["query"])}
    for epoch in (0, 1):
        got = {row_of[ids]: m for ids, m in seen[epoch * len(raw) : (epoch + 1) * len(raw)]}
        assert sorted(got) == list(range(len(raw)))
        for row, margins in got.items():
            assert margins == pytest.approx(raw[(epoch, row)]["teacher_margins"], abs=1e-6), (epoch, row)
    assert any(raw[(0, r)]["teacher_margins"] != raw[(1, r)]["teacher_margins"] for r in range(len(raw)))


def test_band_and_band_margins_hit_the_cache_on_rerun(tmp_path, miner):
    """Guards the caches: a rerun embeds nothing and calls no teacher; another teacher recomputes (its fingerprint
    names the teacher); mining without a band keeps its own cache and draws the same fixed negatives."""
    first = banded(tmp_path, miner, TopicTeacher())
    embeds = []
    original = miner.embed
    miner.embed = lambda texts: embeds.append(texts) or original(texts)  # type: ignore[method-assign]
    again_teacher = TopicTeacher()
    again = banded(tmp_path, miner, again_teacher)
    assert embeds == [] and again_teacher.calls == 0
    assert again[BAND_MARGINS] == first[BAND_MARGINS] and again[BAND] == first[BAND]
    other = TopicTeacher(offset=0.5)
    banded(tmp_path, miner, other)
    assert other.calls > 0
    plain = mine_hard_negatives(PAIRS, CORPUS, miner, **MINING, cache_dir=tmp_path)
    assert BAND not in plain.column_names and plain["negatives"] == first["negatives"]
    assert len(list(tmp_path.glob("band-margins-*/data.arrow"))) == 2


def test_dataloader_workers_see_the_epoch_change(tmp_path, miner):
    """Guards the multi-process path: with 2 persistent workers (each holding a copy of the dataset), epoch 5 set in
    the main process after epoch 0 reaches the items the workers build (a worker reading its own copy's epoch would
    stay at 0), and epoch 6 follows from a completed pass alone."""
    data = FreshNegatives(banded(tmp_path, miner, TopicTeacher()), 3, seed=0)
    loader = DataLoader(
        data, batch_size=4, sampler=data.sampler(seed=0), num_workers=2, persistent_workers=True, collate_fn=keep
    )
    row_of = {q: r for r, q in enumerate(data.triplets["query"])}
    epochs = []
    for epoch in range(3):
        if epoch == 1:
            data.set_epoch(5)
        epochs.append({row_of[item["query"]]: item["negatives"] for batch in loader for item in batch})
    for epoch, got in zip((0, 5, 6), epochs):
        assert got == {r: data[(epoch, r)]["negatives"] for r in range(len(data))}, epoch
    assert epochs[0] != epochs[1] != epochs[2]


def test_corpus_mode_keeps_the_band_its_negatives_come_from(tmp_path, miner):
    """Guards corpus mode's band: never the query or its positive, holds its negatives, the negatives are the same
    sample as without the band (the band must not change the fixed-negatives run), and its margins are the
    teacher's for each candidate."""
    options = {"num_negatives": 3, "skip_top": 2, "sample_from": 10, "cache_dir": tmp_path}
    built = build_corpus_triplets(CORPUS, miner, keep_band=True, **options)
    for row in built:
        assert row["query"] not in row[BAND] and row["positive"] not in row[BAND]
        assert set(row["negatives"]) <= set(row[BAND]) and len(row[BAND]) >= 3
    assert build_corpus_triplets(CORPUS, miner, **options)["negatives"] == built["negatives"]
    row, ref = attach_band_margins(built, TopicTeacher(), cache_dir=tmp_path)[0], TopicTeacher()
    pos = ref.score_pairs([row["query"]], [row["positive"]])[0]
    expected = [pos - ref.score_pairs([row["query"]], [c])[0] for c in row[BAND]]
    assert row[BAND_MARGINS] == pytest.approx(expected, abs=1e-6)


def test_margin_scaling_rescales_the_band_like_the_negatives(tmp_path, miner):
    """Guards --teacher_margin_scaling with fresh negatives: band margins get the same affine map as teacher_margins
    (else redrawn negatives would train on raw margins while fixed ones are scaled)."""
    scored = banded(tmp_path, miner, TopicTeacher())
    scaled, stats = scale_teacher_margins({"train": scored}, "zscore")
    mean, std = stats["teacher_mean"], stats["teacher_std"]
    for raw, row in zip(scored, scaled["train"]):
        assert row[BAND_MARGINS] == pytest.approx([(m - mean) / std for m in raw[BAND_MARGINS]], abs=1e-5)
        by_text = dict(zip(row[BAND], row[BAND_MARGINS]))
        assert row["teacher_margins"] == pytest.approx([by_text[n] for n in row["negatives"]], abs=1e-6)


def test_trainer_scales_the_band_it_draws_from(tmp_path, miner, tokenizer, bi_encoder):
    """Guards teacher_margin_scaling with fresh negatives in the trainer: the statistics are the band's (every
    candidate a draw may pick), the band's margins are rescaled once, and the draw per epoch is unchanged."""
    scored = banded(tmp_path, miner, TopicTeacher())
    raw = FreshNegatives(scored, 3, seed=0)
    args = MarginDistillConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                               teacher_margin_scaling="zscore")  # fmt: skip
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=raw, processing_class=tokenizer)
    band = torch.tensor([m for row in scored[BAND_MARGINS] for m in row], dtype=torch.float64)
    mean, std = band.mean().item(), band.std(correction=0).item()
    assert trainer.margin_scaling_stats["teacher_mean"] == pytest.approx(mean)
    assert trainer.margin_scaling_stats["teacher_std"] == pytest.approx(std)
    scaled = trainer.train_dataset
    assert isinstance(scaled, FreshNegatives) and (scaled.num_negatives, scaled.seed) == (3, 0)
    for row in range(len(raw)):
        want = [(m - mean) / std for m in raw[(1, row)]["teacher_margins"]]
        assert scaled[(1, row)]["teacher_margins"] == pytest.approx(want, abs=1e-5)


def test_cli_option_trains_stsb_and_refuses_data_with_its_own_negatives(tmp_path, caplog, capsys, monkeypatch):
    """Guards the user option: `--fresh_negatives_per_epoch true` on the STS-B task trains, logs how many candidates
    per row are cached and says so in the card; pairs mixed with corpus mode train too (their band columns must
    survive the concatenation); triplets that bring their own negatives, or another sampling strategy, are a
    one-line error (exit 2) before any model loads."""
    import json

    from hf_margin.app.tasks import own_data as pipeline

    from .conftest import write_tiny_teacher

    teacher = write_tiny_teacher(tmp_path / "teacher")
    write_tiny_stsb(tmp_path / "stsb")
    common = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "true"]
    common += ["--save_strategy", "no", "--disable_tqdm", "true", "--cache_dir", str(tmp_path / "cache")]
    caplog.set_level(logging.INFO)
    argv = ["train", *common, "--teacher", str(teacher), "--data_dir", str(tmp_path / "stsb"), "--student_layers", "0"]
    argv += ["--num_negatives", "2", "--skip_top", "1", "--sample_from", "6", "--fresh_negatives_per_epoch", "true"]
    assert main([*argv, "--output_dir", str(tmp_path / "out")]) == 0
    assert "candidates per row cached" in caplog.text and "fresh negatives per epoch: 2 of" in caplog.text
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["options"]["data"]["fresh_negatives_per_epoch"] is True
    assert "drawn anew from all its mined candidates" in (tmp_path / "out" / "README.md").read_text()

    # pairs mined from their positives, mixed with corpus-mode triplets: both keep (and score) their bands
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in zip(CORPUS[:20], CORPUS[20:])))
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(CORPUS) + "\n")
    argv = ["train", *common, "--train_file", str(pairs), "--unlabelled_file", str(texts), "--teacher", str(teacher)]
    argv += ["--num_negatives", "2", "--skip_top", "1", "--sample_from", "8", "--fresh_negatives_per_epoch", "true"]
    assert main([*argv, "--output_dir", str(tmp_path / "mixed")]) == 0
    mixed = json.loads((tmp_path / "mixed" / "metrics.json").read_text())["data"]
    assert (mixed["gold_triplets"], mixed["corpus_triplets"]) == (20, len(CORPUS))

    rows = [{"query": "sun0 sun1", "positive": "sun2 sun3", "negatives": ["sea0 sea1"]}] * 4
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(pipeline, "load_teacher", lambda *a, **k: pytest.fail("a model loaded before the refusal"))
    capsys.readouterr()
    code = main(["train", *common, "--train_file", str(data), "--teacher", str(teacher), "--output_dir",
                 str(tmp_path / "x"), "--fresh_negatives_per_epoch", "true"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(err) == 1 and "brings its own negatives" in err[0]
    code = main(["train", *common, "--data_dir", str(tmp_path / "stsb"), "--teacher", str(teacher), "--output_dir",
                 str(tmp_path / "y"), "--fresh_negatives_per_epoch", "true", "--train_sampling_strategy",
                 "group_by_length"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(err) == 1 and "drop --train_sampling_strategy group_by_length" in err[0]
