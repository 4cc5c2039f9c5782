"""Loss values against hand-computed numbers, masks, shapes and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from hf_margin.training.losses import (
    AdaptiveDifferenceLoss,
    LabelHingeLoss,
    ListwiseKLLoss,
    MarginMSELoss,
    adaptive_difference_loss,
    label_hinge_loss,
    listwise_kl_loss,
    margin_mse_loss,
)

S = [0.10, 0.50, -0.20]
T = [0.30, 0.20, 0.40]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float, beta: float = 1.0) -> float:
    return math.log1p(math.exp(beta * x)) / beta


def hand_adaptive(s, t, g, phi) -> float:
    return sum(phi(g(ti) - si) for si, ti in zip(s, t)) / len(s)


@pytest.mark.parametrize(
    ("teacher_activation", "temperature", "scale", "g"),
    [
        ("identity", 1.0, 1.0, lambda x: x),
        ("identity", 2.0, 3.0, lambda x: 3.0 * x / 2.0),
        ("sigmoid", 0.5, 2.0, lambda x: 2.0 * sigmoid(x / 0.5)),
        ("tanh", 0.25, 0.8, lambda x: 0.8 * math.tanh(x / 0.25)),
    ],
)
@pytest.mark.parametrize(
    ("activation", "beta", "phi"),
    [("relu", 1.0, lambda x: max(x, 0.0)), ("softplus", 1.0, softplus), ("softplus", 5.0, lambda x: softplus(x, 5.0))],
)
def test_adaptive_loss_matches_hand_computation(teacher_activation, temperature, scale, g, activation, beta, phi):
    """Guards the formula mean φ(scale·a(Δt/T) − Δs) for every φ and g."""
    got = adaptive_difference_loss(
        torch.tensor(S, dtype=torch.float64),
        torch.tensor(T, dtype=torch.float64),
        activation=activation,
        teacher_activation=teacher_activation,
        temperature=temperature,
        scale=scale,
        beta=beta,
    )
    assert got.item() == pytest.approx(hand_adaptive(S, T, g, phi), abs=1e-12)


def test_relu_identity_value_by_hand():
    """relu(0.3−0.1)=0.2, relu(0.2−0.5)=0, relu(0.4+0.2)=0.6: mean 0.8/3."""
    got = adaptive_difference_loss(torch.tensor(S), torch.tensor(T))
    assert got.item() == pytest.approx(0.8 / 3, abs=1e-7)


def test_two_dimensional_margins_average_over_all_negatives():
    """(B, N) margins give the mean over all B·N entries, equal to the flat (B·N,) loss."""
    s = torch.tensor([[0.1, 0.5], [-0.2, 0.0]])
    t = torch.tensor([[0.3, 0.2], [0.4, 0.1]])
    expected = (0.2 + 0.0 + 0.6 + 0.1) / 4
    assert adaptive_difference_loss(s, t).item() == pytest.approx(expected, abs=1e-7)
    assert adaptive_difference_loss(s.flatten(), t.flatten()).item() == pytest.approx(expected, abs=1e-7)
    assert margin_mse_loss(s, t).item() == pytest.approx((0.04 + 0.09 + 0.36 + 0.01) / 4, abs=1e-7)


def test_mask_drops_padded_negatives_from_the_mean():
    """Ragged negatives: padded entries add nothing and do not count in the mean, whatever their values."""
    s = torch.tensor([[0.1, 123.0], [-0.2, 0.0]])
    t = torch.tensor([[0.3, -50.0], [0.4, 0.1]])
    mask = torch.tensor([[True, False], [True, True]])
    assert adaptive_difference_loss(s, t, mask=mask).item() == pytest.approx((0.2 + 0.6 + 0.1) / 3, abs=1e-7)
    assert margin_mse_loss(s, t, mask=mask).item() == pytest.approx((0.04 + 0.36 + 0.01) / 3, abs=1e-6)
    assert label_hinge_loss(s, margin=0.3, mask=mask).item() == pytest.approx((0.2 + 0.5 + 0.3) / 3, abs=1e-7)


def test_num_items_divides_the_sum():
    """With num_items the sum is divided by it: micro-batches then add up to the large batch's mean."""
    s, t = torch.tensor(S), torch.tensor(T)
    whole = adaptive_difference_loss(s, t)
    parts = adaptive_difference_loss(s[:1], t[:1], num_items=3) + adaptive_difference_loss(s[1:], t[1:], num_items=3)
    assert parts.item() == pytest.approx(whole.item(), abs=1e-7)


def test_relu_is_zero_with_zero_gradient_once_student_reaches_target():
    """Δs ≥ g(Δt) everywhere: loss 0 and no gradient, the student is not pushed to match the teacher exactly."""
    s = torch.tensor([0.5, 0.9, 0.3], requires_grad=True)
    t = torch.tensor([0.3, 0.2, 0.3], requires_grad=True)
    loss = adaptive_difference_loss(s, t)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(s.grad, torch.zeros(3))


def test_gradient_is_minus_one_over_count_on_shortfalls():
    """d/dΔs of mean relu(Δt − Δs) is −1/n where Δs falls short, 0 elsewhere."""
    s = torch.tensor(S, requires_grad=True)
    adaptive_difference_loss(s, torch.tensor(T)).backward()
    assert torch.allclose(s.grad, torch.tensor([-1 / 3, 0.0, -1 / 3]))


def test_softplus_gradient_is_smooth_sigmoid():
    """Softplus gives −sigmoid(β(g−Δs))/n: a small pull even past the target."""
    s = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    adaptive_difference_loss(s, torch.tensor(T, dtype=torch.float64), activation="softplus", beta=2.0).backward()
    expected = [-sigmoid(2.0 * (t - x)) / 3 for x, t in zip(S, T)]
    assert s.grad.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("loss_fn", [adaptive_difference_loss, margin_mse_loss])
def test_no_gradient_flows_into_teacher_margins(loss_fn):
    """Teacher margins are constants: a teacher tensor with requires_grad gets no gradient."""
    s = torch.tensor(S, requires_grad=True)
    t = torch.tensor(T, requires_grad=True)
    loss_fn(s, t).backward()
    assert t.grad is None
    assert s.grad is not None


def test_margin_mse_and_label_hinge_values():
    assert margin_mse_loss(torch.tensor(S), torch.tensor(T)).item() == pytest.approx((0.04 + 0.09 + 0.36) / 3)
    assert label_hinge_loss(torch.tensor(S), margin=0.2).item() == pytest.approx((0.1 + 0.0 + 0.4) / 3)


def test_modules_match_functions():
    s, t = torch.tensor(S), torch.tensor(T)
    module = AdaptiveDifferenceLoss(activation="softplus", teacher_activation="tanh", temperature=0.5, scale=2.0)
    assert module(s, t).item() == pytest.approx(
        adaptive_difference_loss(
            s, t, activation="softplus", teacher_activation="tanh", temperature=0.5, scale=2.0
        ).item()
    )
    assert MarginMSELoss()(s, t).item() == pytest.approx(margin_mse_loss(s, t).item())
    assert LabelHingeLoss(0.2)(s).item() == pytest.approx(label_hinge_loss(s, margin=0.2).item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "gelu"}, "activation"),
        ({"teacher_activation": "exp"}, "teacher_activation"),
        ({"temperature": 0.0}, "temperature"),
        ({"activation": "softplus", "beta": 0.0}, "beta"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adaptive_difference_loss(torch.tensor(S), torch.tensor(T), **kwargs)


def test_shape_mismatch_is_rejected():
    """Student (B, N) against teacher (B,) would broadcast silently; it must raise."""
    with pytest.raises(ValueError, match="shape"):
        adaptive_difference_loss(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="mask"):
        adaptive_difference_loss(torch.zeros(3, 2), torch.zeros(3, 2), mask=torch.ones(3, dtype=torch.bool))


def test_two_sided_dead_zone_variant_by_hand():
    """overshoot_width ρ: zero loss inside [g, g + ρ|g|], φ of the overshoot beyond it. Guards a sign error that
    would penalise students for *reaching* the target."""
    t = torch.tensor([0.4, 0.4, 0.4, -0.2])
    s = torch.tensor([0.1, 0.5, 0.7, -0.15])  # short by 0.3; inside [0.4, 0.6]; over by 0.1; g<0: in [-0.2, -0.1]
    loss = adaptive_difference_loss(s, t, overshoot_width=0.5)
    assert loss.item() == pytest.approx((0.3 + 0.0 + 0.1 + 0.0) / 4, abs=1e-6)
    s.requires_grad_(True)
    adaptive_difference_loss(s, t, overshoot_width=0.5).backward()
    assert s.grad.tolist() == pytest.approx([-0.25, 0.0, 0.25, 0.0])


def test_hinge_plus_squared_difference_variant_by_hand():
    """mse_weight λ adds λ(g − Δs)² on every entry, also where the hinge is already satisfied."""
    s, t = torch.tensor(S), torch.tensor(T)
    expected = sum(max(ti - si, 0.0) + 0.5 * (ti - si) ** 2 for si, ti in zip(S, T)) / 3
    assert adaptive_difference_loss(s, t, mse_weight=0.5).item() == pytest.approx(expected, abs=1e-6)
    module = AdaptiveDifferenceLoss(mse_weight=0.5, overshoot_width=0.0)
    both = sum(abs(ti - si) + 0.5 * (ti - si) ** 2 for si, ti in zip(S, T)) / 3  # ρ = 0: a two-sided |g − Δs|
    assert module(s, t).item() == pytest.approx(both, abs=1e-6)
    with pytest.raises(ValueError, match="overshoot_width"):
        adaptive_difference_loss(s, t, overshoot_width=-1.0)
    with pytest.raises(ValueError, match="mse_weight"):
        adaptive_difference_loss(s, t, mse_weight=-1.0)


def test_squared_hinge_by_hand():
    """φ = relu(x)²: zero past the target, the squared shortfall below it, gradient −2·shortfall / count."""
    s = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    loss = adaptive_difference_loss(s, torch.tensor(T, dtype=torch.float64), activation="squared_relu")
    assert loss.item() == pytest.approx((0.2**2 + 0.0 + 0.6**2) / 3, abs=1e-12)
    loss.backward()
    assert s.grad.tolist() == pytest.approx([-2 * 0.2 / 3, 0.0, -2 * 0.6 / 3], abs=1e-12)


def hand_kl(s_scores, t_scores, tau_t, tau_s) -> float:
    """KL(softmax(t/τt) ‖ softmax(s/τs)) · τs² over one list of raw scores [positive, negatives...]."""

    def softmax(xs):
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        return [v / sum(e) for v in e]

    p = softmax([x / tau_t for x in t_scores])
    q = softmax([x / tau_s for x in s_scores])
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) * tau_s**2


def test_listwise_kl_matches_hand_computation_on_raw_scores():
    """Guards the margin form: scores [s(q,p), s(q,n_i)] and margins Δ_i = s(q,p) − s(q,n_i) give the same softmax,
    so the loss from margins equals the KL computed by hand from the raw scores (teacher ‖ student, ×τs²)."""
    student_scores = [[0.8, 0.5, 0.6], [0.3, 0.4, -0.1]]  # [positive, n1, n2] per example
    teacher_scores = [[0.9, 0.2, 0.7], [0.6, 0.1, 0.5]]
    margins = lambda rows: torch.tensor([[r[0] - x for x in r[1:]] for r in rows], dtype=torch.float64)  # noqa: E731
    got = listwise_kl_loss(margins(student_scores), margins(teacher_scores), temperature=0.5, student_temperature=0.1)
    expected = sum(hand_kl(s, t, 0.5, 0.1) for s, t in zip(student_scores, teacher_scores)) / 2
    assert got.item() == pytest.approx(expected, abs=1e-12)
    same = listwise_kl_loss(margins(student_scores), margins(teacher_scores), temperature=0.5)
    assert same.item() == pytest.approx(
        sum(hand_kl(s, t, 0.5, 0.5) for s, t in zip(student_scores, teacher_scores)) / 2
    )
    assert ListwiseKLLoss(0.5, 0.1)(margins(student_scores), margins(teacher_scores)).item() == pytest.approx(
        got.item()
    )


def test_listwise_kl_is_zero_at_the_teachers_margins_and_masks_padded_negatives():
    """Zero (and zero gradient) when the student's list equals the teacher's; a masked negative takes part in
    neither softmax, so padding cannot change the loss of a ragged example."""
    t = torch.tensor([[0.3, 0.1], [0.2, 0.5]], dtype=torch.float64)
    s = t.clone().requires_grad_(True)
    loss = listwise_kl_loss(s, t)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert s.grad.abs().max().item() == pytest.approx(0.0, abs=1e-12)
    student = torch.tensor([[0.1, 99.0], [0.4, 0.2]], dtype=torch.float64)  # 99.0 sits where no negative exists
    mask = torch.tensor([[True, False], [True, True]])
    ragged = listwise_kl_loss(student, t, mask=mask)
    expected = hand_kl([0.0, -0.1], [0.0, -0.3], 1, 1) + 2 * hand_kl([0.0, -0.4, -0.2], [0.0, -0.2, -0.5], 1, 1)
    assert ragged.item() == pytest.approx(expected / 3, abs=1e-12)  # each real negative carries its example's KL
    one = listwise_kl_loss(torch.tensor([0.1, 0.4], dtype=torch.float64), torch.tensor([0.3, 0.2]))
    assert one.item() == pytest.approx((hand_kl([0, -0.1], [0, -0.3], 1, 1) + hand_kl([0, -0.4], [0, -0.2], 1, 1)) / 2)


def test_listwise_kl_pushes_the_student_towards_the_teachers_order():
    """The gradient raises the margin of a negative the teacher ranks far below the positive."""
    s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    listwise_kl_loss(s, torch.tensor([[2.0, 0.0]])).backward()
    assert s.grad[0, 0] < 0  # gradient descent increases Δs for the negative the teacher separates
    with pytest.raises(ValueError, match="temperature"):
        listwise_kl_loss(torch.zeros(2), torch.zeros(2), student_temperature=0.0)


def test_module_forms_take_their_options_from_the_registry():
    """Each nn.Module form is derived from its registry entry: it accepts exactly the options the entry lists (by
    name, or positionally in the entry's order) and names them when given another; one form per registry loss."""
    from hf_margin.training.losses import LOSS_REGISTRY, RegistryLoss

    forms = {cls.name: cls for cls in RegistryLoss.__subclasses__()}
    assert set(forms) == set(LOSS_REGISTRY)
    with pytest.raises(TypeError, match=r"no option margin; its options: \['activation', 'teacher_activation'"):
        AdaptiveDifferenceLoss(margin=0.1)
    with pytest.raises(TypeError, match="at most 1 positional"):
        LabelHingeLoss(0.1, 0.2)
    assert ListwiseKLLoss(0.5, 0.1).options == {"temperature": 0.5, "student_temperature": 0.1}
    assert "overshoot_width=0.25" in repr(AdaptiveDifferenceLoss(overshoot_width=0.25))
