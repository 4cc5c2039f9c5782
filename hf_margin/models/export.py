"""Export a saved bi-encoder student to ONNX for CPU deployment: plain, fused for onnxruntime, and int8.

The files go where sentence-transformers' ONNX backend looks for them, under its names:

- ``DIR/onnx/model.onnx``: fp32, standard ONNX operators only (any ONNX runtime);
- ``DIR/onnx/model_O2.onnx``: the same graph with onnxruntime's transformer fusions (one ``Attention``,
  ``SkipLayerNormalization`` and ``BiasGelu`` node per layer, an ``EmbedLayerNormalization``): Optimum's O2 level,
  onnxruntime only;
- ``DIR/onnx/model_qint8.onnx``: the fused graph with int8 weights per output channel and activations quantised
  at run time (``QAttention``, ``MatMulInteger``).

The inputs (``input_ids``, ``attention_mask``, ``token_type_ids`` where the model reads it) and the output
(``last_hidden_state``) are the ones Optimum's ``ORTModelForFeatureExtraction`` expects: where Optimum is installed,
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

from hf_margin.data.cache import written_whole
from hf_margin.models.modeling import load_student

logger = logging.getLogger(__name__)

ONNX_FOLDER = "onnx"
FP32_FILE = "model.onnx"
OPTIMIZED_FILE = "model_O2.onnx"
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
    optimize: bool = True,
    output_dir: str | os.PathLike | None = None,
    opset: int = OPSET,
) -> dict[str, Path]:
    """Export the student saved in ``model_dir`` (transformers + tokenizer files) under ``output_dir`` (default
    ``model_dir``)``/onnx/``: ``model.onnx``; with ``optimize`` also ``model_O2.onnx`` (onnxruntime's transformer
    fusions; skipped with a warning where they fail); with ``quantize="int8"`` also ``model_qint8.onnx``, quantised
    from the fused graph where there is one. Each file is written beside and renamed into place, so an interrupted
    export leaves no half file.

    Returns the files written: ``{"fp32": ..., "O2": ..., "int8": ...}`` (the keys of the files asked for)."""
    _require_onnxruntime()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None; got {quantize!r}")
    from transformers import AutoTokenizer

    # Eager attention traces to the MatMul/Softmax pattern onnxruntime's fusion recognises (SDPA's does not fuse)
    model = load_student(model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer(["an example query", "a longer example document to trace"], padding=True, return_tensors="pt")
    names = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample)
    folder = Path(output_dir if output_dir is not None else model_dir) / ONNX_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files = {"fp32": folder / FP32_FILE}
    dynamic = {n: {0: "batch", 1: "sequence"} for n in (*names, "last_hidden_state")}
    with written_whole(files["fp32"]) as tmp, warnings.catch_warnings(), torch.no_grad():
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
    logger.info("Exported %s to %s (fp32, opset %d, dynamic batch and length)", model_dir, files["fp32"], opset)
    if optimize:
        fused = _fuse(files["fp32"], folder / OPTIMIZED_FILE, model.config)
        if fused is not None:
            files["O2"] = fused
    if quantize is None:
        return files
    # onnxruntime is optional (the onnx extra; _require_onnxruntime checked it): imported where it is used
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = files.get("O2", files["fp32"])
    files["int8"] = folder / INT8_FILE
    with written_whole(files["int8"]) as tmp:
        # Per-channel weight scales: one scale per output row keeps the student's embeddings (cosine >= 0.99
        # against PyTorch on SciFact abstracts; a per-tensor scale gave 0.83 to 0.89). 7-bit weights (reduce_range)
        # avoid the u8 x s8 overflow of x86 CPUs without VNNI; on VNNI ones they cost a little precision. The fused
        # graph's contrib operators carry no inferred output type: float is the default to assume.
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
    logger.info("Quantised %s to %s (int8 weights per channel, dynamic activations)", source.name, files["int8"])
    return files


def _fuse(source: Path, target: Path, config) -> Path | None:
    """onnxruntime's transformer fusions of ``source`` into ``target``; None (and a warning) where they fail."""
    from onnxruntime.transformers import optimizer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = optimizer.optimize_model(
                str(source),
                model_type="bert",
                num_heads=config.num_attention_heads,
                hidden_size=config.hidden_size,
                opt_level=1,
            )
    except Exception as exc:  # an architecture the fusion patterns do not know: the plain graph still runs
        logger.warning("onnxruntime's transformer fusion failed (%s); only the plain graph is written", exc)
        return None
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    with written_whole(target) as tmp:
        fused.save_model_to_file(str(tmp))
    logger.info("Fused %s into %s: %s", source.name, target, counts or "no transformer fusion applied")
    return target


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
        self.dtype = {INT8_FILE: "onnx-int8", OPTIMIZED_FILE: "onnx-O2-float32"}.get(self.path.name, "onnx-float32")

    def forward(self, **inputs: Tensor | None) -> BaseModelOutput:
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None:  # e.g. token_type_ids the tokenizer did not return
                value = torch.zeros_like(inputs["input_ids"])
            feed[name] = value.detach().cpu().numpy().astype(np.int64)
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden).to(inputs["input_ids"].device))


__all__ = ["INT8_FILE", "FP32_FILE", "ONNX_FOLDER", "OPTIMIZED_FILE", "OnnxTransformer", "export_onnx"]
