"""Scorers: bi-encoder and cross-encoder scores equal the model's own, fingerprints follow weights and options."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_margin.scoring import CrossEncoderTeacher, eval_mode, weights_fingerprint

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
