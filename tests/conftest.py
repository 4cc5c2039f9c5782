"""Tiny offline fixtures: a word-level tokenizer, random BERT students and a known synthetic teacher."""

from __future__ import annotations

import copy
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

from hf_margin.models.modeling import encode
from hf_margin.models.scoring import BiEncoderScorer

TOPICS = {name: [f"{name}{i}" for i in range(8)] for name in ("sun", "sea", "car", "dog", "tea", "map")}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [w for ws in TOPICS.values() for w in ws])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def tiny_config(vocab_size: int, **kwargs) -> BertConfig:
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        **(sizes | kwargs),
    )


def topic_histogram(text: str) -> np.ndarray:
    counts = Counter(w.rstrip("0123456789") for w in text.split())
    return np.array([counts[t] for t in TOPICS], dtype=np.float64)


class TopicTeacher:
    """A known teacher: cosine of the two texts' topic histograms. Counts the pairs it scores."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.calls = 0
        self.pairs = 0

    @property
    def fingerprint(self) -> str:
        return f"topic-teacher-{self.offset}"

    def score_pairs(self, queries, documents) -> np.ndarray:
        self.calls += 1
        self.pairs += len(queries)
        out = []
        for q, d in zip(queries, documents):
            a, b = topic_histogram(q), topic_histogram(d)
            out.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) + self.offset)
        return np.array(out)


def make_triplets(n: int, num_negatives: int = 3, seed: int = 0, ragged: bool = False) -> Dataset:
    """Query: 3 words of one topic. Positive: 3 words, mostly the query's topic. Negatives: less and less of it."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = {"query": [], "positive": [], "negatives": []}
    for _ in range(n):
        topic = rng.choice(names)
        others = [t for t in names if t != topic]

        def text(k_same: int, length: int = 3, topic: str = topic, others: list = others) -> str:
            words = rng.sample(TOPICS[topic], k_same) + [
                rng.choice(TOPICS[rng.choice(others)]) for _ in range(length - k_same)
            ]
            rng.shuffle(words)
            return " ".join(words)

        rows["query"].append(text(3))
        rows["positive"].append(text(rng.choice([2, 3])))
        k = rng.randint(1, num_negatives) if ragged else num_negatives
        rows["negatives"].append([text(rng.choice([0, 0, 1, 2])) for _ in range(k)])
    return Dataset.from_dict(rows)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def bi_encoder(tokenizer) -> BertModel:
    torch.manual_seed(0)
    return BertModel(tiny_config(len(tokenizer)), add_pooling_layer=False)


@pytest.fixture
def cross_encoder(tokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config(len(tokenizer), num_labels=1))


@pytest.fixture
def teacher() -> TopicTeacher:
    return TopicTeacher()


def write_tiny_stsb(folder: Path) -> None:
    """A small STS-B-shaped folder: pairs from the same topic score high, across topics low."""
    rng = random.Random(0)
    names = list(TOPICS)
    folder.mkdir()
    for split, n in [("sts-train.csv", 60), ("sts-dev.csv", 20), ("sts-test.csv", 20)]:
        rows = []
        for i in range(n):
            a = rng.choice(names)
            b = a if i % 2 == 0 else rng.choice(names)
            s1 = " ".join(rng.sample(TOPICS[a], 3))
            s2 = " ".join(rng.sample(TOPICS[b], 3))
            score = 4.0 + rng.random() if a == b else rng.random() * 2
            rows.append(f"g\tf\t2012\t{i:04d}\t{score:.3f}\t{s1}\t{s2}")
        (folder / split).write_text("\n".join(rows) + "\n")


def write_tiny_teacher(folder: Path) -> Path:
    """A tiny random bi-encoder teacher with its tokenizer, saved like a Hub checkpoint."""
    tok = make_tokenizer()
    torch.manual_seed(0)
    BertModel(tiny_config(len(tok)), add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def teacher_for(model, tokenizer, **kwargs) -> BiEncoderScorer:
    return BiEncoderScorer(model, tokenizer, device="cpu", show_progress=False, **kwargs)


def perturbed(
    model: torch.nn.Module, delta: float = 1e-3, name: str = "encoder.layer.0.output.dense.bias", noise: bool = False
):
    """A deep copy of ``model`` with ``delta`` (or ``delta`` × fixed Gaussian noise) added to one parameter."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        param = other.get_parameter(name)
        param.add_(delta * torch.randn(param.shape, generator=torch.Generator().manual_seed(7)) if noise else delta)
    return other


def sharpen(model: torch.nn.Module, std: float = 0.2, seed: int = 1) -> torch.nn.Module:
    """Redraw the weight matrices with a larger std, in place.

    At BERT's initializer_range (0.02) every text embeds almost alike (scores differ by ~1e-5), so a
    pair scored in the wrong order would hide inside the tolerance; here scores spread by ~0.1 or more.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


@pytest.fixture
def sharp_bi_encoder(bi_encoder):
    return sharpen(bi_encoder)


@pytest.fixture
def sharp_cross_encoder(cross_encoder):
    return sharpen(cross_encoder)


def embed_one_by_one(model, tokenizer, texts, *, pooling="mean", normalize=False, max_length=128) -> torch.Tensor:
    """Each text in its own unpadded forward pass: the reference a batched scorer must equal."""
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length)
            out.append(encode(model, enc["input_ids"], enc["attention_mask"], pooling=pooling, normalize=normalize)[0])
    return torch.stack(out)
