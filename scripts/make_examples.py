"""Build the small example files of the README's "Your own data" section from the shipped STS-B (CC BY-SA 4.0).

    .venv/bin/python scripts/make_examples.py      # writes recipes/examples/ (committed; rerun to refresh)

- triplets.jsonl     query / positive / negatives (STS-B train pairs with gold >= 4; 3 hard negatives mined by
                     all-MiniLM-L6-v2 from the other train sentences, ranks 3 to 30)
- flag-scored.jsonl  the same rows as FlagEmbedding query / pos / neg with all-MiniLM-L6-v2 cosine scores
- pairs.jsonl        query / positive only (negatives are mined)
- corpus.txt         every distinct STS-B train sentence, one per line (to mine negatives from)
- sts-dev.csv        STS-B dev pairs: sentence1, sentence2, score
- ir/                STS-B dev duplicate retrieval in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv):
                     queries = sentence 1 of pairs with gold >= 4, corpus = the sentence-2 side
"""

from __future__ import annotations

import csv
import json
import random
import tempfile
from pathlib import Path

from datasets import Dataset

from hf_margin import BiEncoderScorer, mine_hard_negatives
from hf_margin.app.stsb import load_stsb
from hf_margin.evaluation.retrieval import duplicate_retrieval_data
from hf_margin.models.resolve import resolve_model

OUT = Path(__file__).resolve().parents[1] / "recipes" / "examples"
ROWS = 400


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    stsb = load_stsb()
    train = stsb["train"]
    rng = random.Random(0)
    sentences = list(dict.fromkeys([*train["sentence1"], *train["sentence2"]]))
    pairs = [(a, b) for a, b, g in zip(train["sentence1"], train["sentence2"], train["score"]) if g >= 4 and a != b]
    pairs = rng.sample(pairs, ROWS)
    scorer = BiEncoderScorer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    with tempfile.TemporaryDirectory() as cache:
        mined = mine_hard_negatives(
            Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]}),
            sentences,
            scorer,
            num_negatives=3,
            skip_top=3,
            sample_from=30,
            cache_dir=cache,
        ).to_list()
    triplets = [{"query": r["query"], "positive": r["positive"], "negatives": r["negatives"]} for r in mined]
    write_jsonl(OUT / "triplets.jsonl", triplets)
    write_jsonl(OUT / "pairs.jsonl", [{"query": t["query"], "positive": t["positive"]} for t in triplets])
    (OUT / "corpus.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")

    flag = []
    for t in triplets:
        scores = scorer.score_pairs([t["query"]] * 4, [t["positive"], *t["negatives"]])
        flag.append(
            {
                "query": t["query"],
                "pos": [t["positive"]],
                "neg": t["negatives"],
                "pos_scores": [round(float(scores[0]), 5)],
                "neg_scores": [round(float(s), 5) for s in scores[1:]],
            }
        )
    write_jsonl(OUT / "flag-scored.jsonl", flag)

    dev = stsb["validation"]
    with open(OUT / "sts-dev.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(zip(dev["sentence1"], dev["sentence2"], dev["score"]))
    # BEIR has no "skip the query's own text": the corpus is the dev sentence-2 side, minus any query text
    ir = duplicate_retrieval_data(dev["sentence1"], dev["sentence2"], dev["score"], min_score=4.0)
    query_texts = set(ir.queries.values())
    corpus = {i: t for i, t in ir.corpus.items() if t in set(dev["sentence2"]) and t not in query_texts}
    qrels = {q: {d: g for d, g in docs.items() if d in corpus} for q, docs in ir.qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    (OUT / "ir" / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(OUT / "ir" / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in corpus.items()])
    write_jsonl(OUT / "ir" / "queries.jsonl", [{"_id": q, "text": ir.queries[q]} for q in qrels])
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{g}" for q, docs in qrels.items() for d, g in docs.items()]
    (OUT / "ir" / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (OUT / "README.md").write_text(
        "# Example data\n\nSmall files made from the STS Benchmark shipped in `hf_margin/app/data/stsb` by "
        '`scripts/make_examples.py`, for the README\'s "Your own data" commands. Texts and gold scores: STS '
        "Benchmark (scores CC BY-SA 4.0; each text source under its own licence, see "
        "`hf_margin/app/data/stsb/LICENSE.txt`). `flag-scored.jsonl` scores: cosine similarity of "
        "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0).\n",
        encoding="utf-8",
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
