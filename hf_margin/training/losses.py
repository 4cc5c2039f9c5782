"""Margin losses for teacher-student distillation of similarity scores.

Every loss takes margins shaped ``(B,)`` (one negative per example) or ``(B, N)`` (N negatives), and an
optional boolean ``mask`` shaped like the margins that marks the real entries of ragged negatives. The
reduction is a mean over unmasked entries, or a sum divided by ``num_items`` when the caller counts the
entries over several micro-batches (gradient accumulation, several processes).

Teacher margins are constants: they are detached inside every loss, so no gradient ever reaches them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "softplus", "squared_relu"]
TeacherActivation = Literal["identity", "sigmoid", "tanh"]

ACTIVATIONS: tuple[str, ...] = ("relu", "softplus", "squared_relu")
TEACHER_ACTIVATIONS: tuple[str, ...] = ("identity", "sigmoid", "tanh")


def _reduce(values: Tensor, mask: Tensor | None, num_items: Tensor | int | float | None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is true (all entries when ``mask`` is None).

    With ``num_items`` the sum is divided by it instead of the local count, so that micro-batches of a
    larger batch add up to that batch's mean.
    """
    if mask is not None:
        if mask.shape != values.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)} but the margins have {tuple(values.shape)}")
        values = values.masked_fill(~mask.bool(), 0.0)
        count = mask.bool().sum()
    else:
        count = values.numel()
    total = values.sum()
    if num_items is not None:
        return total / num_items
    return total / (count if not torch.is_tensor(count) else count.clamp_min(1))


def _check_shapes(student_margin: Tensor, teacher_margin: Tensor) -> None:
    if student_margin.shape != teacher_margin.shape:
        raise ValueError(
            f"student margin has shape {tuple(student_margin.shape)} but the teacher margin has "
            f"{tuple(teacher_margin.shape)}: both must be (B,) or (B, N) for the same B and N"
        )
    if student_margin.dim() not in (1, 2):
        raise ValueError(f"margins must be (B,) or (B, N), got {student_margin.dim()} dimensions")


def teacher_target(
    teacher_margin: Tensor,
    *,
    teacher_activation: TeacherActivation = "identity",
    temperature: float = 1.0,
    scale: float = 1.0,
) -> Tensor:
    """The target margin ``g(Δt) = scale · a(Δt / temperature)`` the student must reach; no gradient."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = teacher_margin.detach() / temperature
    if teacher_activation == "identity":
        y = x
    elif teacher_activation == "sigmoid":
        y = torch.sigmoid(x)
    elif teacher_activation == "tanh":
        y = torch.tanh(x)
    else:
        raise ValueError(f"teacher_activation must be one of {TEACHER_ACTIVATIONS}, got {teacher_activation!r}")
    return scale * y


def shortfall_penalty(x: Tensor, *, activation: Activation = "relu", beta: float = 1.0) -> Tensor:
    """``φ(x)``: ``relu(x)``, the smooth ``softplus(x) = log(1 + exp(beta·x)) / beta``, or the squared hinge
    ``relu(x)²`` (no kink at 0; large shortfalls weigh more)."""
    if activation == "relu":
        return F.relu(x)
    if activation == "squared_relu":
        return F.relu(x).square()
    if activation == "softplus":
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        return F.softplus(x, beta=beta, threshold=20.0)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def adaptive_difference_loss(
    student_margin: Tensor,
    teacher_margin: Tensor,
    *,
    activation: Activation = "relu",
    teacher_activation: TeacherActivation = "identity",
    temperature: float = 1.0,
    scale: float = 1.0,
    beta: float = 1.0,
    overshoot_width: float | None = None,
    mse_weight: float = 0.0,
    mask: Tensor | None = None,
    num_items: Tensor | int | float | None = None,
) -> Tensor:
    """Adaptive difference loss ``mean φ(g(Δt) − Δs)``: a hinge whose margin is the teacher's, per example.

    Two optional variants keep ``g`` and ``φ`` and add pressure from above:
    ``overshoot_width = ρ`` makes it two-sided with a dead zone ``[g, g + ρ·|g|]`` whose width is set by the
    teacher margin: ``φ(g − Δs) + φ(Δs − g − ρ·|g|)``; ``mse_weight = λ`` adds ``λ·(g − Δs)²``.

    Args:
        student_margin: ``s(q,p) − s(q,n)``, shape ``(B,)`` or ``(B, N)``.
        teacher_margin: ``t(q,p) − t(q,n)``, same shape; treated as a constant.
        activation: ``φ``, ``"relu"`` (hinge) or ``"softplus"`` (smooth hinge with sharpness ``beta``).
        teacher_activation: ``a`` in ``g(x) = scale · a(x / temperature)``.
        overshoot_width: ``ρ >= 0`` of the two-sided dead-zone variant; None keeps the loss one-sided.
        mse_weight: ``λ >= 0`` of the hinge + squared-difference variant.
        mask: boolean, same shape, true where a negative exists.
        num_items: divide the sum by this count instead of the number of unmasked entries.

    Returns:
        A scalar tensor.
    """
    _check_shapes(student_margin, teacher_margin)
    target = teacher_target(teacher_margin, teacher_activation=teacher_activation, temperature=temperature, scale=scale)
    shortfall = target - student_margin
    penalty = shortfall_penalty(shortfall, activation=activation, beta=beta)
    if overshoot_width is not None:
        if overshoot_width < 0:
            raise ValueError(f"overshoot_width must be >= 0, got {overshoot_width}")
        penalty = penalty + shortfall_penalty(
            -shortfall - overshoot_width * target.abs(), activation=activation, beta=beta
        )
    if mse_weight < 0:
        raise ValueError(f"mse_weight must be >= 0, got {mse_weight}")
    if mse_weight > 0:
        penalty = penalty + mse_weight * shortfall**2
    return _reduce(penalty, mask, num_items)


def margin_mse_loss(
    student_margin: Tensor,
    teacher_margin: Tensor,
    *,
    mask: Tensor | None = None,
    num_items: Tensor | int | float | None = None,
) -> Tensor:
    """Margin-MSE (Hofstätter et al. 2020): ``mean (Δs − Δt)²``, shapes as in :func:`adaptive_difference_loss`."""
    _check_shapes(student_margin, teacher_margin)
    return _reduce((student_margin - teacher_margin.detach()) ** 2, mask, num_items)


def label_hinge_loss(
    student_margin: Tensor,
    *,
    margin: float = 0.1,
    mask: Tensor | None = None,
    num_items: Tensor | int | float | None = None,
) -> Tensor:
    """Fixed-margin hinge on the gold ordering (positive above negative): ``mean relu(margin − Δs)``."""
    if student_margin.dim() not in (1, 2):
        raise ValueError(f"margins must be (B,) or (B, N), got {student_margin.dim()} dimensions")
    return _reduce(F.relu(margin - student_margin), mask, num_items)


def embedding_distance_loss(
    student_embeddings: Tensor, teacher_embeddings: Tensor, *, num_items: Tensor | int | float | None = None
) -> Tensor:
    """Cosine distance to the teacher's embedding of the same text: ``mean 1 − cos(e_s, e_t)``.

    ================================  =========================================================
    input                             shape
    ================================  =========================================================
    ``student_embeddings``            ``(T, H)``: the student's embedding of each of T texts
    ``teacher_embeddings``            ``(T, H)``: the teacher's, same texts, same width (detached)
    ================================  =========================================================

    It asks the student for the teacher's whole geometry, not only its margins: the distillation of
    sentence-transformers' ``MSELoss`` (Reimers & Gurevych, 2020, "Making Monolingual Sentence Embeddings
    Multilingual using Knowledge Distillation"), on the unit sphere, where the scores of a cosine student live.
    The student and the teacher must share a space: a student cut from the teacher does.

    Example::

        loss = embedding_distance_loss(student(texts), cached_teacher_embeddings)
    """
    if student_embeddings.shape != teacher_embeddings.shape:
        raise ValueError(
            f"student embeddings have shape {tuple(student_embeddings.shape)} but the teacher's have "
            f"{tuple(teacher_embeddings.shape)}: the two must embed the same texts at the same width"
        )
    distance = 1.0 - F.cosine_similarity(student_embeddings.float(), teacher_embeddings.detach().float(), dim=-1)
    return _reduce(distance, None, num_items)


def in_batch_kl_loss(
    student_queries: Tensor,
    student_documents: Tensor,
    teacher_queries: Tensor,
    teacher_documents: Tensor,
    *,
    temperature: float = 0.1,
    similarity: str = "cosine",
    teacher_similarity: str | None = None,
    num_items: Tensor | int | float | None = None,
) -> Tensor:
    """In-batch listwise distillation: each query against *every* document of the batch,
    ``KL(softmax(t(q, D)/τ) ‖ softmax(s(q, D)/τ)) · τ²`` averaged over the queries.

    ================================  =========================================================
    input                             shape
    ================================  =========================================================
    ``student_queries``               ``(B, H)``: the student's query embeddings
    ``student_documents``             ``(D, H)``: the student's embeddings of the batch's documents (positives,
                                      negatives)
    ``teacher_queries``               ``(B, H')``: the teacher's, same queries; any width ``H'`` (detached)
    ``teacher_documents``             ``(D, H')``: the teacher's, same documents
    ================================  =========================================================

    The margins give the student ``N`` teacher scores per query; this term gives it ``D`` (the other queries'
    positives and negatives too), and only compares scores, so the teacher may be of another width than the
    student (mpnet's 768 against a cut MiniLM's 384). The in-batch distillation of Lin, Yang & Lin (2021), "In-Batch
    Negatives for Knowledge Distillation with Tightly-Coupled Teachers for Dense Retrieval"; the ``τ²`` factor as
    in :func:`listwise_kl_loss`. ``similarity`` scores the student's side (``cosine`` or ``dot``),
    ``teacher_similarity`` the teacher's (unset: the same), as each scores its own margins.

    Example::

        loss = in_batch_kl_loss(student(queries), student(documents), teacher_q, teacher_d, temperature=0.1)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher_similarity = teacher_similarity or similarity
    for name, value in (("similarity", similarity), ("teacher_similarity", teacher_similarity)):
        if value not in ("cosine", "dot"):
            raise ValueError(f"{name} must be 'cosine' or 'dot', got {value!r}")
    sides = {"student": (student_queries, student_documents), "teacher": (teacher_queries, teacher_documents)}
    for name, (q, d) in sides.items():
        if q.dim() != 2 or d.dim() != 2 or q.shape[1] != d.shape[1]:
            raise ValueError(
                f"{name} queries {tuple(q.shape)} and documents {tuple(d.shape)} must be (B, H) and (D, H)"
            )
    if student_queries.shape[0] != teacher_queries.shape[0] or student_documents.shape[0] != teacher_documents.shape[0]:
        raise ValueError(
            f"the student embeds {student_queries.shape[0]} queries and {student_documents.shape[0]} documents, the "
            f"teacher {teacher_queries.shape[0]} and {teacher_documents.shape[0]}: they must embed the same texts"
        )

    def scores(q: Tensor, d: Tensor, similarity: str) -> Tensor:
        q, d = q.float(), d.float()
        if similarity == "cosine":
            q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
        return q @ d.T  # (B, D)

    teacher_scores = scores(teacher_queries.detach(), teacher_documents.detach(), teacher_similarity)
    teacher_log_p = (teacher_scores / temperature).log_softmax(dim=1)
    student_log_p = (scores(student_queries, student_documents, similarity) / temperature).log_softmax(dim=1)
    kl = (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(dim=1) * temperature**2  # (B,)
    return _reduce(kl, None, num_items)


def listwise_kl_loss(
    student_margin: Tensor,
    teacher_margin: Tensor,
    *,
    temperature: float = 1.0,
    student_temperature: float | None = None,
    mask: Tensor | None = None,
    num_items: Tensor | int | float | None = None,
) -> Tensor:
    """Listwise distillation: ``KL(softmax(t/τt) ‖ softmax(s/τs)) · τs²`` over each example's list
    ``[positive, negatives]``, like sentence-transformers' ``DistillKLDivLoss``.

    A softmax does not change when a constant is added to every score, so the lists are built from the margins
    alone: logits ``[0, −Δ_1, …, −Δ_N] / τ``. Masked negatives are left out of both softmaxes. Each real negative
    carries its example's KL, so the reduction (mean, or sum / ``num_items``) is the mean KL per example when every
    example has the same number of negatives.

    Args:
        student_margin, teacher_margin: ``(B,)`` or ``(B, N)`` margins; the teacher's is a constant.
        temperature: ``τt`` of the teacher's softmax.
        student_temperature: ``τs`` of the student's softmax; None uses ``τt``. The ``τs²`` factor keeps the
            gradient's size independent of it (Hinton et al. 2015).
    """
    _check_shapes(student_margin, teacher_margin)
    tau_s = temperature if student_temperature is None else student_temperature
    if temperature <= 0 or tau_s <= 0:
        raise ValueError(f"temperatures must be > 0, got teacher {temperature}, student {tau_s}")
    one_negative = student_margin.dim() == 1
    if one_negative:
        student_margin, teacher_margin = student_margin.unsqueeze(-1), teacher_margin.unsqueeze(-1)
        mask = None if mask is None else mask.unsqueeze(-1)
    keep = torch.ones_like(student_margin, dtype=torch.bool) if mask is None else mask.bool()
    first = torch.ones_like(keep[:, :1])
    keep_all = torch.cat([first, keep], dim=1)
    zero = student_margin.new_zeros(student_margin.shape[0], 1)
    student_logits = torch.cat([zero, -student_margin / tau_s], dim=1).masked_fill(~keep_all, -torch.inf)
    teacher_logits = torch.cat([zero, -teacher_margin.detach().to(student_margin.dtype) / temperature], dim=1)
    teacher_logits = teacher_logits.masked_fill(~keep_all, -torch.inf)
    teacher_log_p = teacher_logits.log_softmax(dim=1)
    terms = teacher_log_p.exp() * (teacher_log_p - student_logits.log_softmax(dim=1))
    kl = terms.masked_fill(~keep_all, 0.0).sum(dim=1) * tau_s**2  # (B,)
    per_negative = kl.unsqueeze(1).expand_as(student_margin)
    if one_negative:
        per_negative, mask = per_negative.squeeze(-1), None if mask is None else mask.squeeze(-1)
    return _reduce(per_negative, mask, num_items)


@dataclass(frozen=True)
class LossSpec:
    """One entry of the loss registry: what config, trainer and model card know of a loss.

    Attributes:
        function: the pure loss ``function(student_margin, teacher_margin, **options, mask=, num_items=)``.
        options: names of the :class:`~hf_margin.MarginDistillConfig` fields passed to it as keyword arguments
            (``label_margin`` is passed as ``margin``).
        label: how the model card names the loss.
        needs_teacher: whether it reads teacher margins.
        target_options: names of the config fields that shape the teacher margins it reads (the trainer applies
            them to its datasets before training; the loss function never sees them), listed on the card too.
    """

    function: Callable[..., Tensor]
    options: tuple[str, ...]
    label: str
    needs_teacher: bool = True
    target_options: tuple[str, ...] = ()

    def __call__(self, student_margin: Tensor, teacher_margin: Tensor | None, config: Any, **kwargs: Any) -> Tensor:
        """Apply the loss with its options read from ``config`` (any object with the option attributes)."""
        options = {_ARGUMENT_NAMES.get(o, o): getattr(config, o) for o in self.options}
        if self.needs_teacher:
            return self.function(student_margin, teacher_margin, **options, **kwargs)
        return self.function(student_margin, **options, **kwargs)

    def card_options(self, config: Any) -> dict[str, Any]:
        """The options that shape this loss and its target, as the model card and metrics.json list them (softplus'
        beta only with softplus)."""
        values = {o: getattr(config, o) for o in (*self.options, *self.target_options)}
        if values.get("activation") == "relu":
            values.pop("beta", None)
        if values.get("overshoot_width") is None:
            values.pop("overshoot_width", None)
        if values.get("mse_weight") == 0:
            values.pop("mse_weight", None)
        if "student_temperature" in values and values["student_temperature"] is None:
            values["student_temperature"] = values.get("temperature")
        return values


_ARGUMENT_NAMES = {"label_margin": "margin"}
# What every loss that reads teacher margins lists beside its options: their one global rescaling.
TEACHER_TARGET_OPTIONS = ("teacher_margin_scaling",)

LOSS_REGISTRY: dict[str, LossSpec] = {
    "adaptive": LossSpec(
        adaptive_difference_loss,
        (
            "activation",
            "teacher_activation",
            "temperature",
            "scale",
            "beta",
            "overshoot_width",
            "mse_weight",
        ),
        "adaptive difference (margin) loss φ(g(Δt) − Δs)",
        target_options=TEACHER_TARGET_OPTIONS,
    ),
    "margin_mse": LossSpec(margin_mse_loss, (), "Margin-MSE loss (Δs − Δt)²", target_options=TEACHER_TARGET_OPTIONS),
    "label_hinge": LossSpec(label_hinge_loss, ("label_margin",), "fixed-margin label hinge relu(m − Δs)", False),
    "listwise_kl": LossSpec(
        listwise_kl_loss,
        ("temperature", "student_temperature"),
        "listwise KL divergence of softmax([positive, negatives]), teacher ‖ student",
        target_options=TEACHER_TARGET_OPTIONS,
    ),
}
"""Every distillation loss by its ``loss=`` name; config choices, the trainer and the model card read this."""


class RegistryLoss(nn.Module):
    """``nn.Module`` form of a registry loss (``name``): its options, those its :class:`LossSpec` lists (as keyword
    arguments, or positionally in that order), fixed at construction; the function's defaults for the rest.
    ``forward(student_margin, teacher_margin=None, mask=None, num_items=None)`` returns the loss, a scalar."""

    name: str = ""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__()
        spec = LOSS_REGISTRY[self.name]
        allowed = [_ARGUMENT_NAMES.get(o, o) for o in spec.options]
        if len(args) > len(allowed):
            raise TypeError(f"{type(self).__name__} takes at most {len(allowed)} positional options {allowed}")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no option {', '.join(unknown)}; its options: {allowed}")
        self.options = dict(zip(allowed, args)) | options

    def forward(
        self,
        student_margin: Tensor,
        teacher_margin: Tensor | None = None,
        mask: Tensor | None = None,
        num_items: Tensor | int | float | None = None,
    ) -> Tensor:
        spec = LOSS_REGISTRY[self.name]
        margins = (student_margin, teacher_margin) if spec.needs_teacher else (student_margin,)
        return spec.function(*margins, **self.options, mask=mask, num_items=num_items)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class AdaptiveDifferenceLoss(RegistryLoss):
    """``nn.Module`` form of :func:`adaptive_difference_loss` (``loss="adaptive"``)."""

    name = "adaptive"


class MarginMSELoss(RegistryLoss):
    """``nn.Module`` form of :func:`margin_mse_loss` (``loss="margin_mse"``)."""

    name = "margin_mse"


class LabelHingeLoss(RegistryLoss):
    """``nn.Module`` form of :func:`label_hinge_loss` (``loss="label_hinge"``; option ``margin``); no teacher."""

    name = "label_hinge"


class ListwiseKLLoss(RegistryLoss):
    """``nn.Module`` form of :func:`listwise_kl_loss` (``loss="listwise_kl"``)."""

    name = "listwise_kl"
