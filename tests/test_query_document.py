"""Queries and documents are different inputs: each side truncated by its own length and prefixed by its own
prompt, queries padded apart from documents, and the prompts saved for sentence-transformers."""

from __future__ import annotations

import torch

from hf_margin import MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins
from hf_margin.data.columns import MarginDistillCollator, tokenize_triplets
from hf_margin.models.modeling import student_scores
from hf_margin.models.scoring import BiEncoderScorer

from .conftest import TopicTeacher, embed_one_by_one, make_triplets

# Prompts made of words the tiny tokenizer knows, so they are real tokens.
QUERY_PROMPT, DOCUMENT_PROMPT = "map7 ", "tea7 "


def ids(tokenizer, text: str, length: int) -> list[int]:
    return tokenizer(text, truncation=True, max_length=length)["input_ids"]


def test_queries_and_documents_are_truncated_and_prefixed_each_by_their_own(tokenizer):
    data = make_triplets(8, num_negatives=2, seed=3)
    tokens = tokenize_triplets(
        data,
        tokenizer,
        max_length=5,
        query_max_length=3,
        query_prompt=QUERY_PROMPT,
        document_prompt=DOCUMENT_PROMPT,
    )
    for raw, row in zip(data, tokens):
        assert row["query_input_ids"] == ids(tokenizer, QUERY_PROMPT + raw["query"], 3)
        assert row["positive_input_ids"] == ids(tokenizer, DOCUMENT_PROMPT + raw["positive"], 5)
        assert row["negatives_input_ids"] == [ids(tokenizer, DOCUMENT_PROMPT + n, 5) for n in raw["negatives"]]
        assert len(row["query_input_ids"]) <= 3 and max(map(len, row["negatives_input_ids"])) <= 5
    assert any(len(r["positive_input_ids"]) == 5 for r in tokens)  # documents really reach their own length


def test_queries_padded_apart_score_as_the_joint_batch(tokenizer, bi_encoder):
    """Short queries are not padded to the documents' width, and the scores stay those of the joint layout."""
    data = tokenize_triplets(make_triplets(6, ragged=True, seed=4), tokenizer, max_length=12, query_max_length=3)
    features = list(data)
    joint = MarginDistillCollator(tokenizer.pad_token_id)(features)
    apart = MarginDistillCollator(tokenizer.pad_token_id, pad_queries_apart=True)(features)
    assert apart["query_input_ids"].shape == (6, max(len(f["query_input_ids"]) for f in features)) == (6, 3)
    assert apart["input_ids"].shape[0] == joint["input_ids"].shape[0] - 6
    assert apart["input_ids"].shape[1] > apart["query_input_ids"].shape[1]
    bi_encoder.eval()
    for chunk_size in (0, 4):
        got = student_scores(bi_encoder, apart, student_type="bi-encoder", chunk_size=chunk_size)
        want = student_scores(bi_encoder, joint, student_type="bi-encoder", chunk_size=chunk_size)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_scorer_reads_queries_with_the_query_prompt(tokenizer, bi_encoder):
    scorer = BiEncoderScorer(
        bi_encoder, tokenizer, query_prompt=QUERY_PROMPT, document_prompt=DOCUMENT_PROMPT, show_progress=False
    )
    texts = ["sun1 sun2", "sea3 car4 dog5"]
    bi_encoder.eval()
    torch.testing.assert_close(
        scorer.embed(texts, role="query"), embed_one_by_one(bi_encoder, tokenizer, [QUERY_PROMPT + t for t in texts])
    )
    torch.testing.assert_close(
        scorer.embed(texts), embed_one_by_one(bi_encoder, tokenizer, [DOCUMENT_PROMPT + t for t in texts])
    )
    assert scorer.options()["query_prompt"] == QUERY_PROMPT  # part of the fingerprint: caches do not mix
    pairs = (["sun1 sun2", "sea3 car4 dog5", "sun1 sun2"], ["sea3 car4 dog5", "sun1 sun2", "sun1 sun2"])
    q = embed_one_by_one(bi_encoder, tokenizer, [QUERY_PROMPT + t for t in pairs[0]])
    d = embed_one_by_one(bi_encoder, tokenizer, [DOCUMENT_PROMPT + t for t in pairs[1]])
    want = torch.nn.functional.cosine_similarity(q, d, dim=-1).numpy()
    assert abs(scorer.score_pairs(*pairs) - want).max() < 1e-5  # each side in its own role, in the pairs' order


def test_prompts_survive_a_save_and_load_in_sentence_transformers(tmp_path, tokenizer, bi_encoder):
    """Trained with prompts and a query length, the saved student carries them: SentenceTransformer's
    encode_query / encode_document prepend the prompts and give the trained model's embeddings."""
    from sentence_transformers import SentenceTransformer

    args = MarginDistillConfig(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=8,
        max_length=16,
        query_max_length=8,
        query_prompt=QUERY_PROMPT,
        document_prompt=DOCUMENT_PROMPT,
    )
    data = attach_teacher_margins(make_triplets(16), TopicTeacher(), cache_dir=tmp_path / "cache")
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=data, processing_class=tokenizer)
    assert trainer.data_collator.pad_queries_apart
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    model = SentenceTransformer(str(tmp_path / "student"), device="cpu")
    assert model.prompts == {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}
    assert model.max_seq_length == 16
    texts = ["sun1 sun2", "sea3 car4"]
    bi_encoder.eval()
    for encode, prompt in ((model.encode_query, QUERY_PROMPT), (model.encode_document, DOCUMENT_PROMPT)):
        want = torch.nn.functional.normalize(embed_one_by_one(bi_encoder, tokenizer, [prompt + t for t in texts]))
        torch.testing.assert_close(encode(texts, convert_to_tensor=True).cpu(), want, atol=1e-5, rtol=0)
