"""Export a saved bi-encoder student to ONNX for CPU deployment, optionally int8 (dynamic quantisation).

The files go where sentence-transformers' ONNX backend looks for them: ``DIR/onnx/model.onnx`` (fp32) and
``DIR/onnx/model_qint8.onnx`` (int8 weights per output channel, activations quantised at run time), with the inputs
(``input_ids``, ``attention_mask``, ``token_type_ids`` where the model reads it) and the output
(``last_hidden_state``) that Optimum's ``ORTModelForFeatureExtraction`` expects: where Optimum is installed,
``SentenceTransformer(DIR, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8.onnx"})`` loads them.
Here they run through :class:`OnnxTransformer`, an ``onnxruntime`` session behind the ``transformers`` call
signature, so every hf-margin scorer and evaluator (and the speed measurement) runs on it unchanged.

Needs ``onnx`` and ``onnxruntime`` (``pip install 'hf-margin[onnx]'``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutput

from hf_margin.models.modeling import load_student

logger = logging.getLogger(__name__)

ONNX_FOLDER = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
QUANTIZATIONS = ("int8",)
OPSET = 17


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("ONNX export and inference need onnx and onnxruntime: pip install 'hf-margin[onnx]'") from exc
    return onnxruntime


class _LastHiddenState(nn.Module):
    """The encoder as a function of tensors only (what ``torch.onnx.export`` traces)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, inputs))).last_hidden_state


def export_onnx(
    model_dir: str | os.PathLike,
    *,
    quantize: str | None = None,
    output_dir: str | os.PathLike | None = None,
    opset: int = OPSET,
) -> Path:
    """Export the student saved in ``model_dir`` (transformers + tokenizer files) to ``onnx/model.onnx`` under
    ``output_dir`` (default ``model_dir``); with ``quantize="int8"`` also ``onnx/model_qint8.onnx``. Files are
    written beside and renamed into place, so an interrupted export leaves no half file. Returns the path of
    the last file written (the int8 one when asked)."""
    _require_onnxruntime()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None; got {quantize!r}")
    from transformers import AutoTokenizer

    model = load_student(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer(["an example query", "a longer example document to trace"], padding=True, return_tensors="pt")
    names = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample)
    folder = Path(output_dir if output_dir is not None else model_dir) / ONNX_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / FP32_FILE
    tmp = folder / f".{FP32_FILE}.{os.getpid()}.tmp"
    dynamic = {n: {0: "batch", 1: "sequence"} for n in (*names, "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow over shapes
        torch.onnx.export(
            _LastHiddenState(model, names),
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=list(names),
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic batch and sequence axes
        )
    os.replace(tmp, fp32)
    logger.info("Exported %s to %s (fp32, opset %d, dynamic batch and length)", model_dir, fp32, opset)
    if quantize is None:
        return fp32
    # onnxruntime is optional (the onnx extra; _require_onnxruntime checked it): imported where it is used
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = folder / INT8_FILE
    tmp = folder / f".{INT8_FILE}.{os.getpid()}.tmp"
    # Per-channel weight scales: one scale per output row keeps the student's embeddings (cosine >= 0.99 against
    # PyTorch on SciFact abstracts; a per-tensor scale gave 0.83 to 0.89). 7-bit weights (reduce_range) avoid the
    # u8 x s8 overflow of x86 CPUs without VNNI; on VNNI ones they cost a little precision (0.993 against 0.994).
    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    os.replace(tmp, int8)
    logger.info("Quantised to %s (int8 weights per channel, dynamic activation quantisation)", int8)
    return int8


class OnnxTransformer(nn.Module):
    """An ONNX encoder (``last_hidden_state`` of ``input_ids``/``attention_mask``) behind the ``transformers``
    call signature: ``model(input_ids=..., attention_mask=...).last_hidden_state`` is a CPU tensor ``(T, L, H)``.

    It holds no weights of its own: its one buffer is the file's SHA-256, so a scorer's fingerprint names the
    file. ``threads`` sets onnxruntime's intra-op threads (default: torch's, so a comparison runs alike).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        super().__init__()
        ort = _require_onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        digest = hashlib.sha256(self.path.read_bytes()).digest()
        self.register_buffer("file_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        self.dtype = "onnx-int8" if self.path.name == INT8_FILE else "onnx-float32"

    def forward(self, **inputs: Tensor | None) -> BaseModelOutput:
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None:  # e.g. token_type_ids the tokenizer did not return
                value = torch.zeros_like(inputs["input_ids"])
            feed[name] = value.detach().cpu().numpy().astype(np.int64)
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden).to(inputs["input_ids"].device))


__all__ = ["INT8_FILE", "FP32_FILE", "ONNX_FOLDER", "OnnxTransformer", "export_onnx"]
