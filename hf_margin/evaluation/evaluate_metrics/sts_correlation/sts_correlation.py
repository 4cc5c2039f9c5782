"""STS correlation: Spearman and Pearson (x100) between predicted similarities and gold scores."""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr

_DESCRIPTION = """
Spearman and Pearson correlation (times 100) between a model's similarity scores for sentence pairs and the gold
similarity scores, as reported for the STS Benchmark.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): the model's similarity of each pair (e.g. cosine of the two embeddings).
    references (list of float): the gold score of each pair (any scale: 0-5 or 0-1).
Returns:
    spearman (float): Spearman rank correlation x 100.
    pearson (float): Pearson correlation x 100.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class StsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        return {
            "spearman": float(spearmanr(predictions, references).statistic * 100),
            "pearson": float(pearsonr(predictions, references).statistic * 100),
        }
