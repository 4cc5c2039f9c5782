"""Build the small example files of the README's "Your own data" section from the shipped STS-B (CC BY-SA 4.0).

    .venv/bin/python scripts/make_examples.py      # writes recipes/examples/ (committed; rerun to refresh)

- triplets.jsonl     query / positive / negatives (STS-B train pairs with gold >= 4, 3 random other sentences)
- flag-scored.jsonl  the same rows as FlagEmbedding query / pos / neg with all-MiniLM-L6-v2 cosine scores
- pairs.jsonl        query / positive only (negatives are mined)
- corpus.txt         every distinct STS-B train sentence, one per line (to mine negatives from)
- sts-dev.csv        STS-B dev pairs: sentence1, sentence2, score
- ir/                STS-B dev duplicate retrieval in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv)
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from hf_margin import BiEncoderScorer
from hf_margin.app.stsb import load_stsb
from hf_margin.resolve import resolve_model
from hf_margin.retrieval import duplicate_retrieval_data

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
    triplets = []
    for q, p in pairs:
        negatives = [s for s in rng.sample(sentences, 5) if s not in (q, p)][:3]
        triplets.append({"query": q, "positive": p, "negatives": negatives})
    write_jsonl(OUT / "triplets.jsonl", triplets)
    write_jsonl(OUT / "pairs.jsonl", [{"query": t["query"], "positive": t["positive"]} for t in triplets])
    (OUT / "corpus.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")

    scorer = BiEncoderScorer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
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
    ir = duplicate_retrieval_data(dev["sentence1"], dev["sentence2"], dev["score"], min_score=4.0)
    (OUT / "ir" / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(OUT / "ir" / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in ir.corpus.items()])
    write_jsonl(OUT / "ir" / "queries.jsonl", [{"_id": i, "text": t} for i, t in ir.queries.items()])
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{g}" for q, docs in ir.qrels.items() for d, g in docs.items()]
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
