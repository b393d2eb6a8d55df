"""Collision cross-entropy and its peers: the paper's properties, stability, gradients."""

import numpy as np
import pytest
import torch

from skcce.losses import (
    CollisionCrossEntropyLoss,
    ShannonCrossEntropyLoss,
    collision_cross_entropy,
    collision_cross_entropy_np,
    kl_prior_forward,
    kl_prior_forward_np,
    kl_prior_reverse,
    kl_prior_reverse_np,
    mutual_information_loss,
    shannon_cross_entropy,
    shannon_cross_entropy_np,
)


def _random_simplex(gen, n, k, dtype=torch.float64):
    return torch.softmax(torch.randn(n, k, generator=gen, dtype=dtype) * 2, dim=1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_equals_shannon_for_one_hot_targets(gen):
    logits = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (7,), generator=gen)
    onehot = torch.nn.functional.one_hot(labels, 5).to(torch.float64)
    h2 = collision_cross_entropy(logits, onehot, reduction="none")
    h = shannon_cross_entropy(logits, onehot, reduction="none")
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(h2, ce)
    torch.testing.assert_close(h, ce)


def test_symmetric_in_its_two_distributions(gen):
    p = _random_simplex(gen, 6, 4)
    q = _random_simplex(gen, 6, 4)
    a = collision_cross_entropy(torch.log(p), q, reduction="none")
    b = collision_cross_entropy(torch.log(q), p, reduction="none")
    torch.testing.assert_close(a, b)


def test_cosine_decomposition(gen):
    p = _random_simplex(gen, 6, 4)
    q = _random_simplex(gen, 6, 4)
    h2 = collision_cross_entropy(torch.log(p), q, reduction="none")
    cos = (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1))
    renyi_p = -torch.log((p * p).sum(1))
    renyi_q = -torch.log((q * q).sum(1))
    torch.testing.assert_close(h2, -torch.log(cos) + (renyi_p + renyi_q) / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_target_gives_exactly_zero_gradient(gen, dtype):
    logits = (torch.randn(5, 7, generator=gen) * 10).to(dtype).requires_grad_(True)
    target = torch.full((5, 7), 1 / 7, dtype=dtype)
    collision_cross_entropy(logits, target).backward()
    assert (logits.grad == 0).all()
    # sanity: a non-uniform target does move the logits
    logits.grad = None
    collision_cross_entropy(logits, torch.softmax(logits.detach(), 1)).backward()
    assert (logits.grad != 0).any()


def test_bounded_for_non_one_hot_targets(gen):
    # H2(y, sigma) = -ln sum_k y_k sigma_k <= -ln min_k y_k for any sigma.
    target = _random_simplex(gen, 50, 6)
    bound = -torch.log(target.min(dim=1).values)
    for scale in (1.0, 100.0, 1e4):
        logits = torch.randn(50, 6, generator=gen, dtype=torch.float64) * scale
        h2 = collision_cross_entropy(logits, target, reduction="none")
        assert (h2 <= bound + 1e-12).all()
        assert torch.isfinite(h2).all()
    # Shannon's cross-entropy has no such bound: it grows with the logits.
    logits = torch.tensor([[1e4, -1e4]], dtype=torch.float64)
    soft = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert shannon_cross_entropy(logits, soft) > 1e3
    assert collision_cross_entropy(logits, soft) <= np.log(2) + 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_finite_for_extreme_logits_and_zero_targets(dtype):
    logits = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]], dtype=dtype, requires_grad=True
    )
    target = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    loss = collision_cross_entropy(logits, target)
    assert loss.dtype == dtype
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # the exact gradient: softmax(logits) - onehot(target), here (1, -1, 0) in row 0
    assert float(logits.grad[0, 0]) == pytest.approx(1 / 3, abs=1e-2)
    assert float(logits.grad[0, 1]) == pytest.approx(-1 / 3, abs=1e-2)
    # soft targets with zeros: gradients w.r.t. both arguments stay finite
    logits = torch.tensor([[8.0, -8.0, 0.0]], dtype=dtype, requires_grad=True)
    soft = torch.tensor([[0.0, 0.5, 0.5]], dtype=dtype, requires_grad=True)
    collision_cross_entropy(logits, soft).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.isfinite(soft.grad).all()


def test_gradcheck_logits_and_target(gen):
    logits = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = _random_simplex(gen, 4, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z, y: collision_cross_entropy(z, y, reduction="sum"), (logits, target)
    )
    assert torch.autograd.gradcheck(
        lambda z, y: shannon_cross_entropy(z, y, reduction="sum"), (logits, target)
    )


def test_numpy_twins_agree_with_torch(gen):
    logits = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    proba = torch.softmax(logits, 1)
    target = _random_simplex(gen, 8, 5)
    target[0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(
        collision_cross_entropy_np(proba.numpy(), target.numpy()),
        collision_cross_entropy(logits, target, reduction="none").numpy(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        shannon_cross_entropy_np(proba.numpy(), target.numpy()),
        shannon_cross_entropy(logits, target, reduction="none").numpy(),
        rtol=1e-12,
    )


def test_kl_terms(gen):
    ybar = _random_simplex(gen, 1, 4)[0]
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    reverse = float((prior * torch.log(prior / ybar)).sum())
    forward = float((ybar * torch.log(ybar / prior)).sum())
    assert float(kl_prior_reverse(ybar, prior)) == pytest.approx(reverse, rel=1e-12)
    assert float(kl_prior_forward(ybar, prior)) == pytest.approx(forward, rel=1e-12)
    assert kl_prior_reverse_np(ybar.numpy(), prior.numpy()) == pytest.approx(reverse, rel=1e-12)
    assert kl_prior_forward_np(ybar.numpy(), prior.numpy()) == pytest.approx(forward, rel=1e-12)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert float(kl_prior_reverse(uniform)) == pytest.approx(0.0, abs=1e-15)
    assert float(kl_prior_forward(uniform)) == pytest.approx(0.0, abs=1e-15)
    # An empty cluster: the reverse form is large (floored at 1e-12 in both backends),
    # the forward form stays finite (0 ln 0 = 0).
    empty = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert float(kl_prior_reverse(empty)) > 5.0
    assert np.isfinite(float(kl_prior_forward(empty)))
    assert float(kl_prior_forward(empty)) == pytest.approx(np.log(2.0))


def test_mutual_information_loss(gen):
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    sigma = torch.softmax(logits, 1)
    cond = float(-(sigma * torch.log(sigma)).sum(1).mean())
    ybar = sigma.mean(0)
    fair = float((ybar * torch.log(ybar * 3)).sum())
    value = float(mutual_information_loss(logits, lam=2.0))
    assert value == pytest.approx(cond + 2.0 * fair, rel=1e-12)


def test_reductions_and_modules(gen):
    logits = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    target = _random_simplex(gen, 5, 3)
    for fn, module in (
        (collision_cross_entropy, CollisionCrossEntropyLoss),
        (shannon_cross_entropy, ShannonCrossEntropyLoss),
    ):
        per_row = fn(logits, target, reduction="none")
        assert per_row.shape == (5,)
        torch.testing.assert_close(fn(logits, target, reduction="sum"), per_row.sum())
        torch.testing.assert_close(fn(logits, target, reduction="mean"), per_row.mean())
        torch.testing.assert_close(module(reduction="sum")(logits, target), per_row.sum())
    with pytest.raises(ValueError, match="reduction"):
        collision_cross_entropy(logits, target, reduction="max")


def test_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        collision_cross_entropy(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        collision_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape"):
        shannon_cross_entropy(torch.zeros(2, 3), torch.zeros(3, 3))


# ------------------------------------------------------------------------ issue 10 (#1, #3, #14)


def test_reverse_kl_finite_for_empty_cluster_and_same_in_both_backends():
    # Sinkhorn's one-hot labels on 5 rows for 10 clusters leave clusters empty
    y = np.eye(10)[[0, 1, 2, 3, 4]]
    ybar = y.mean(axis=0)
    value = kl_prior_reverse_np(ybar)
    expected = 0.5 * np.log(0.1 / 0.2) + 0.5 * np.log(0.1 / 1e-12)  # floor 1e-12
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-12)
    assert float(kl_prior_reverse(torch.as_tensor(ybar))) == pytest.approx(value, rel=1e-12)
    assert kl_prior_reverse_np(ybar, eps=0) == np.inf  # the exact value, as the solver uses


def test_collision_double_backward_gradgradcheck(gen):
    logits = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = _random_simplex(gen, 4, 3).requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda z, y: collision_cross_entropy(z, y, reduction="sum"), (logits, target)
    )


def test_collision_hessian_matches_plain_autograd(gen):
    logits = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    target = _random_simplex(gen, 3, 4)
    target[0] = torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64)  # zeros in y
    target[2] = 0.25  # a uniform row: zero gradient in z, not a zero mixed derivative

    def plain(z, y):
        return -torch.log((torch.softmax(z, dim=1) * y).sum(dim=1)).sum()

    def fn(z, y):
        return collision_cross_entropy(z, y, reduction="sum")

    got = torch.autograd.functional.hessian(fn, (logits, target))
    ref = torch.autograd.functional.hessian(plain, (logits, target))
    for a in range(2):
        for b in range(2):
            torch.testing.assert_close(got[a][b], ref[a][b])
    assert got[0][0].abs().sum() > 0
    # create_graph=True gives a gradient with a graph
    z = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(z, target), z, create_graph=True)
    assert g.requires_grad


def test_torch_losses_require_tensors():
    z = np.zeros((2, 3))
    y = np.full((2, 3), 1 / 3)
    for call in (
        lambda: collision_cross_entropy(z, y),
        lambda: collision_cross_entropy(torch.as_tensor(z), y),
        lambda: shannon_cross_entropy(z, y),
        lambda: CollisionCrossEntropyLoss()(z, y),
        lambda: mutual_information_loss(z),
        lambda: kl_prior_reverse(y[0]),
        lambda: kl_prior_forward(y[0]),
    ):
        with pytest.raises(TypeError, match="torch.Tensor.*_np"):
            call()
