"""Scorers: bi-encoder and cross-encoder scores equal the model's own, fingerprints follow weights and options."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_margin.models.scoring import (
    CrossEncoderTeacher,
    EmbeddingMemo,
    MeanScoreScorer,
    eval_mode,
    weights_fingerprint,
)

from .conftest import embed_one_by_one, perturbed, teacher_for

QUERIES = ["sun1", "sea1 sea2 sea3", "car1 car2", "sun1", "dog1 dog2 dog3 dog4 dog5"]
DOCUMENTS = ["sun2 sun3", "sea4", "car3 car4 car5 car6", "map1 map2 map3", "sun1"]


# --------------------------------------------------------------------------------------------- bi-encoder teacher


@pytest.mark.parametrize(
    ("pooling", "normalize", "similarity_fn"),
    [("mean", False, "cosine"), ("cls", False, "cosine"), ("mean", True, "dot"), ("cls", False, "dot")],
)
def test_bi_encoder_teacher_scores_equal_embedding_similarity(
    tokenizer, sharp_bi_encoder, pooling, normalize, similarity_fn
):
    """Guards that length-sorted, deduplicated batches give sim(embed(q), embed(d)) in the callers' order."""
    bi_encoder = sharp_bi_encoder
    teacher = teacher_for(
        bi_encoder, tokenizer, pooling=pooling, normalize=normalize, similarity_fn=similarity_fn, batch_size=2
    )
    got = teacher.score_pairs(QUERIES, DOCUMENTS)
    q = embed_one_by_one(bi_encoder, tokenizer, QUERIES, pooling=pooling, normalize=normalize)
    d = embed_one_by_one(bi_encoder, tokenizer, DOCUMENTS, pooling=pooling, normalize=normalize)
    want = F.cosine_similarity(q, d, dim=-1) if similarity_fn == "cosine" else (q * d).sum(-1)
    assert got.shape == (len(QUERIES),)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    assert np.ptp(got) > 0.05  # the pairs really differ: a pair scored out of order would fail


def test_embeddings_remembered_over_several_calls_come_back_in_the_callers_order(tokenizer, sharp_bi_encoder):
    """Guards the block memo: texts embedded in three calls (three blocks, repeats, a text seen before) must come
    back as the model's own embeddings, row for row, and a repeat must not be embedded again."""
    teacher = teacher_for(sharp_bi_encoder, tokenizer, batch_size=2)
    calls = [QUERIES[:3], ["sea4", "sun1", "map1 map2 map3"], DOCUMENTS + QUERIES]
    for texts in calls:
        got = teacher.embed(texts)
        want = embed_one_by_one(sharp_bi_encoder, tokenizer, texts)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    memo = teacher.memo("document")
    assert len(memo.blocks) == 3  # each call with new texts adds one block, none for known texts
    assert len(memo) == len(set(QUERIES + DOCUMENTS))
    teacher.embed(QUERIES)  # nothing new: no block
    assert len(memo.blocks) == 3


def test_embedding_memo_gathers_across_blocks_and_refuses_a_short_block():
    """Guards the row arithmetic of the memo (which block holds a row, at which offset) and a block registered
    for the wrong number of texts (rows would point past its end)."""
    memo = EmbeddingMemo()
    memo.add(["a", "b"], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    memo.add(["c"], torch.tensor([[3.0, 0.0]]))
    memo.add(["d", "e", "f"], torch.tensor([[4.0, 0.0], [5.0, 0.0], [6.0, 0.0]]))
    got = memo.gather(["f", "a", "c", "e", "a"])
    assert got[:, 0].tolist() == [6.0, 1.0, 3.0, 5.0, 1.0]
    got[0, 0] = -1  # a copy: the caller may change it
    assert memo.gather(["f"])[0, 0] == 6.0
    with pytest.raises(ValueError, match="2 texts but 1 embeddings"):
        memo.add(["g", "h"], torch.zeros(1, 2))
    assert "g" not in memo and len(memo) == 6
    memo.clear()
    assert len(memo) == 0 and not memo.blocks


def test_weights_fingerprint_tracks_every_weight(bi_encoder):
    """Guards the content hash: equal for an identical copy, different after a 1e-3 change of one bias."""
    base = weights_fingerprint(bi_encoder)
    assert len(base) == 64
    assert weights_fingerprint(copy.deepcopy(bi_encoder)) == base
    assert weights_fingerprint(perturbed(bi_encoder)) != base
    assert weights_fingerprint(perturbed(bi_encoder, name="embeddings.word_embeddings.weight")) != base
    assert weights_fingerprint(bi_encoder) == base  # perturbing copies left the original alone


def test_bi_encoder_teacher_fingerprint_tracks_weights_and_options(tokenizer, bi_encoder):
    """Guards that weights and every scoring option change the teacher fingerprint, and batch size does not."""
    base = teacher_for(bi_encoder, tokenizer).fingerprint
    assert teacher_for(copy.deepcopy(bi_encoder), tokenizer).fingerprint == base
    assert teacher_for(copy.deepcopy(bi_encoder), tokenizer, batch_size=7).fingerprint == base
    changed = {
        "weights": teacher_for(perturbed(bi_encoder), tokenizer).fingerprint,
        "cls": teacher_for(copy.deepcopy(bi_encoder), tokenizer, pooling="cls").fingerprint,
        "max_length": teacher_for(copy.deepcopy(bi_encoder), tokenizer, max_length=16).fingerprint,
        "normalize": teacher_for(copy.deepcopy(bi_encoder), tokenizer, normalize=True).fingerprint,
        "dot": teacher_for(copy.deepcopy(bi_encoder), tokenizer, similarity_fn="dot").fingerprint,
    }
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed)


def test_bi_encoder_teacher_fingerprint_follows_in_place_weight_updates(tokenizer, bi_encoder):
    """Guards against a stale fingerprint: weights changed in place after a first use must change it."""
    teacher = teacher_for(bi_encoder, tokenizer)
    before = teacher.fingerprint
    with torch.no_grad():
        bi_encoder.get_parameter("encoder.layer.0.output.dense.bias").add_(1e-3)
    assert teacher.fingerprint == teacher_for(bi_encoder, tokenizer).fingerprint
    assert teacher.fingerprint != before


@pytest.mark.parametrize("apply_sigmoid", [False, True])
def test_cross_encoder_teacher_scores_equal_model_logit(tokenizer, sharp_cross_encoder, apply_sigmoid):
    """Guards that batched, length-sorted scoring returns each pair's own logit (or its sigmoid) in order."""
    cross_encoder = sharp_cross_encoder
    teacher = CrossEncoderTeacher(
        cross_encoder, tokenizer, apply_sigmoid=apply_sigmoid, batch_size=2, device="cpu", show_progress=False
    )
    got = teacher.score_pairs(QUERIES, DOCUMENTS)
    with torch.no_grad():
        logits = torch.tensor(
            [
                cross_encoder(**tokenizer(q, d, return_tensors="pt")).logits[0, 0].item()
                for q, d in zip(QUERIES, DOCUMENTS)
            ]
        )
    want = torch.sigmoid(logits) if apply_sigmoid else logits
    assert got.shape == (len(QUERIES),)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    assert np.ptp(got) > 0.05


def test_cross_encoder_teacher_fingerprint(tokenizer, cross_encoder):
    """Guards that the cross-encoder fingerprint follows its weights and apply_sigmoid, not the batch size."""

    def make(model, **kwargs):
        return CrossEncoderTeacher(model, tokenizer, device="cpu", show_progress=False, **kwargs).fingerprint

    base = make(cross_encoder)
    assert make(copy.deepcopy(cross_encoder), batch_size=3) == base
    assert make(copy.deepcopy(cross_encoder), apply_sigmoid=True) != base
    assert make(perturbed(cross_encoder, name="classifier.bias")) != base


def test_scoring_restores_a_training_model_to_training_mode(tokenizer, bi_encoder):
    """Guards evaluation during training: a scorer must not leave the student in eval mode (no dropout after)."""
    bi_encoder.train()
    teacher_for(bi_encoder, tokenizer).score_pairs(QUERIES, DOCUMENTS)
    assert bi_encoder.training
    with eval_mode(bi_encoder):
        assert not bi_encoder.training
    assert bi_encoder.training


# --------------------------------------------------------------------------------------------- mean-score teacher


def test_mean_score_teacher_scores_the_mean_of_its_members_and_its_embeddings_agree(tokenizer, sharp_bi_encoder):
    """Guards the side-by-side embedding: the dot product of two of its rows (each unit-length) must be the mean of
    the members' cosines, so search, mining and evaluation rank by the mean; queries are embedded with each
    member's own query prompt and length (an E5-style member beside a plain one)."""
    from transformers import BertModel

    from .conftest import sharpen, tiny_config

    torch.manual_seed(5)
    wider = sharpen(BertModel(tiny_config(len(tokenizer), hidden_size=48), add_pooling_layer=False), seed=2)
    members = [
        teacher_for(sharp_bi_encoder, tokenizer, batch_size=2, query_prompt="sea1 ", query_max_length=3),
        teacher_for(wider, tokenizer, pooling="cls"),
    ]
    mean = MeanScoreScorer(members)
    want = (members[0].score_pairs(QUERIES, DOCUMENTS) + members[1].score_pairs(QUERIES, DOCUMENTS)) / 2
    np.testing.assert_allclose(mean.score_pairs(QUERIES, DOCUMENTS), want, atol=1e-6)
    q, d = mean.embed_queries(QUERIES), mean.embed(DOCUMENTS)
    assert q.shape == (len(QUERIES), 32 + 48) and mean.similarity_fn == "cosine"
    np.testing.assert_allclose((q * d).sum(-1).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(q.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    assert np.ptp(want - members[0].score_pairs(QUERIES, DOCUMENTS)) > 0.01  # the second member really counts
    plain = (mean.embed(QUERIES) * d).sum(-1).numpy()
    assert np.abs(plain - want).max() > 1e-3  # the query role (prompt, 3 tokens) really was used


def test_mean_score_teacher_sets_options_on_every_member_and_fingerprints_them_all(tokenizer, bi_encoder):
    members = [teacher_for(bi_encoder, tokenizer), teacher_for(copy.deepcopy(bi_encoder), tokenizer)]
    mean = MeanScoreScorer(members)
    before = mean.fingerprint
    assert before not in {m.fingerprint for m in members}
    mean.max_length, mean.batch_size = 12, 3
    assert [(m.max_length, m.batch_size) for m in members] == [(12, 3), (12, 3)]
    assert mean.role_settings("document") == ("", 12) and mean.fingerprint != before
    mean.max_length = 256
    assert mean.fingerprint == before
    members[1].max_length = 40
    from hf_margin.evaluation.throughput import encoding_throughput

    assert encoding_throughput(mean, QUERIES, max_length=8)["max_length"] == 8
    assert [m.max_length for m in members] == [256, 40]  # each member's own length comes back after timing
    members[1].max_length = 256
    with torch.no_grad():
        members[1].model.get_parameter("encoder.layer.0.output.dense.bias").add_(1e-3)
    assert mean.fingerprint != before  # the second member's weights count


def test_mean_score_teacher_refuses_one_member_a_dot_product_member_or_a_cross_encoder(
    tokenizer, bi_encoder, cross_encoder
):
    with pytest.raises(ValueError, match="at least 2"):
        MeanScoreScorer([teacher_for(bi_encoder, tokenizer)])
    with pytest.raises(ValueError, match=r"member\(s\) \[1\] score by dot product"):
        MeanScoreScorer([teacher_for(bi_encoder, tokenizer), teacher_for(bi_encoder, tokenizer, similarity_fn="dot")])
    with pytest.raises(ValueError, match="bi-encoders only; got CrossEncoderScorer"):
        MeanScoreScorer(
            [teacher_for(bi_encoder, tokenizer), CrossEncoderTeacher(cross_encoder, tokenizer, device="cpu")]
        )
