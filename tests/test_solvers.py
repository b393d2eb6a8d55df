"""Pseudo-label solvers, certified by the Frank-Wolfe gap; kernels against numpy references."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from sklearn.exceptions import ConvergenceWarning

from skcce import _kernels, solvers
from skcce.solvers import (
    PseudoLabelResult,
    _solve_em,
    frank_wolfe_gap,
    pseudo_label_objective,
    solve_pseudo_labels,
)


def _proba(rng, m, k, scale=3.0, dtype=np.float64):
    z = rng.normal(size=(m, k)) * scale
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def _prior(rng, k, kind):
    if kind == "uniform":
        return None
    u = rng.uniform(0.5, 2.0, size=k)
    return u / u.sum()


# ----------------------------------------------------------------------------- certified optimality


@pytest.mark.parametrize(
    "m, k, lam, prior_kind",
    [
        (5000, 2, 1.0, "uniform"),
        (1000, 10, 0.1, "skewed"),
        (250, 200, 0.4, "uniform"),
        (200, 200, 10.0, "skewed"),
        (2000, 20, 10.0, "uniform"),
        (500, 50, 1.0, "skewed"),
    ],
)
def test_em_reaches_gap_1e_6(m, k, lam, prior_kind):
    rng = np.random.default_rng(m + k)
    proba = _proba(rng, m, k)
    prior = _prior(rng, k, prior_kind)
    res = solve_pseudo_labels(proba, lam, prior, max_iter=20000, tol=1e-6)
    assert res.converged
    assert res.gap <= 1e-6
    # the reported gap is the gap of the returned y, recomputed independently
    assert frank_wolfe_gap(proba, res.y, lam, prior) == pytest.approx(res.gap, rel=1e-6, abs=1e-12)
    assert res.objective == pytest.approx(pseudo_label_objective(proba, res.y, lam, prior))
    np.testing.assert_allclose(res.y.sum(axis=1), 1.0, atol=1e-12)
    assert (res.y >= 0).all()


@pytest.mark.parametrize("loss", ["collision", "shannon"])
@pytest.mark.parametrize("fairness", ["reverse", "forward"])
@pytest.mark.parametrize(
    "m, k, lam, prior_kind", [(400, 5, 0.5, "skewed"), (150, 40, 2.0, "uniform")]
)
def test_pgd_reaches_gap_1e_6(loss, fairness, m, k, lam, prior_kind):
    rng = np.random.default_rng(k)
    proba = _proba(rng, m, k)
    prior = _prior(rng, k, prior_kind)
    res = solve_pseudo_labels(proba, lam, prior, fairness, "pgd", loss, max_iter=5000, tol=1e-6)
    assert res.converged
    assert res.gap <= 1e-6
    assert frank_wolfe_gap(proba, res.y, lam, prior, fairness, loss) == pytest.approx(
        res.gap, rel=1e-6, abs=1e-12
    )


def test_pgd_agrees_with_em_on_reverse_problem():
    rng = np.random.default_rng(3)
    proba = _proba(rng, 300, 8)
    prior = _prior(rng, 8, "skewed")
    em = solve_pseudo_labels(proba, 0.7, prior, method="em", tol=1e-8, max_iter=50000)
    pgd = solve_pseudo_labels(proba, 0.7, prior, method="pgd", tol=1e-8, max_iter=50000)
    assert em.converged and pgd.converged
    # both within 1e-8 of the optimum, so within 2e-8 of each other
    assert abs(em.objective - pgd.objective) <= 2e-8
    np.testing.assert_allclose(em.y.mean(axis=0), pgd.y.mean(axis=0), atol=1e-3)


def test_paper_em_without_acceleration_also_converges():
    rng = np.random.default_rng(4)
    proba = _proba(rng, 250, 10)
    # EM alone: with the dual allowed, both hand over once their rate is too slow
    plain = _solve_em(proba, 0.4, np.full(10, 0.1), 20000, 1e-6, accelerate=False, dual=False)
    fast = _solve_em(proba, 0.4, np.full(10, 0.1), 20000, 1e-6, dual=False)
    assert plain.converged and fast.converged
    assert fast.n_iter <= plain.n_iter
    assert abs(plain.objective - fast.objective) <= 2e-6


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("method", ["em", "pgd"])
def test_lam_zero_gives_one_hot_argmax(method):
    rng = np.random.default_rng(5)
    proba = _proba(rng, 60, 7)
    res = solve_pseudo_labels(proba, 0.0, method=method, max_iter=2000)
    assert res.converged
    np.testing.assert_array_equal(res.y.argmax(axis=1), proba.argmax(axis=1))
    np.testing.assert_allclose(res.y.max(axis=1), 1.0, atol=1e-6)


def test_example_3_one_hot_sigma_closed_form():
    # sigma = 1_c: y_k = (1[k = c] + a_k) / (1 + A), a_k = lam M u_k S_k (paper Example 3)
    rng = np.random.default_rng(6)
    for k in (2, 5, 30):
        for c in (0, k - 1):
            sigma = np.zeros(k)
            sigma[c] = 1.0
            a = rng.uniform(0.01, 3.0, size=k)
            out = np.empty(k)
            _kernels.mstep_point(sigma, a, out)
            expected = (sigma + a) / (1.0 + a.sum())
            np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-14)


def _mstep_reference(sigma, a):
    """Eq. 17 solved by Brent's method on x (all a_k > 0)."""
    big_a = a.sum()
    smax = sigma.max()

    def excess(x):
        return np.sum(a / (big_a + 1.0 - sigma / x)) - 1.0

    left = smax / (1.0 + big_a)
    x = brentq(excess, left * (1 + 1e-15) + 1e-300, smax, xtol=1e-300, rtol=1e-15, maxiter=500)
    y = a / (big_a + 1.0 - sigma / x)
    return y / y.sum()


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-5)])
def test_mstep_kernel_matches_reference(dtype, rtol):
    rng = np.random.default_rng(7)
    for k in (2, 3, 10, 100):
        for scale in (0.1, 3.0, 10.0):
            sigma = _proba(rng, 1, k, scale)[0]
            a = rng.exponential(size=k) * rng.choice([0.01, 1.0, 100.0])
            expected = _mstep_reference(sigma, a)
            out = np.empty(k, dtype=dtype)
            _kernels.mstep_point(sigma.astype(dtype), a, out)
            assert out.dtype == dtype
            ref = expected if dtype == np.float64 else _mstep_reference(
                sigma.astype(np.float32).astype(np.float64), a
            )
            np.testing.assert_allclose(out, ref, rtol=rtol, atol=1e-7 if dtype == np.float32 else 0)


def _point_gap(sigma, a, y):
    """FW gap of -ln(sigma.y) - sum a_k ln y_k at y (a_k = 0 terms vanish)."""
    s = sigma @ y
    with np.errstate(divide="ignore", invalid="ignore"):
        g = -sigma / s - np.where(a > 0, a / y, 0.0)
    return float(g @ y - g.min())


def test_appendix_c_closed_form_case():
    # a_c = 0 for the class with the largest prediction: closed form, y_c > 0
    sigma = np.array([0.6, 0.3, 0.1])
    a = np.array([0.0, 0.2, 0.1])
    out = np.empty(3)
    _kernels.mstep_point(sigma, a, out)
    big_a = a.sum()
    y1 = a[1] / ((1 + big_a) * (1 - sigma[1] / sigma[0]))
    y2 = a[2] / ((1 + big_a) * (1 - sigma[2] / sigma[0]))
    np.testing.assert_allclose(out, [1 - y1 - y2, y1, y2], rtol=1e-12)
    assert out[0] > 0
    assert _point_gap(sigma, a, out) <= 1e-12


def test_appendix_c_kkt_fallback_case():
    # sigma_c is not above the other classes, or y_c would be negative: y_c = 0 and the
    # interior problem on the classes with a_k > 0 is solved.
    cases = [
        (np.array([0.2, 0.5, 0.3]), np.array([0.0, 0.4, 0.3])),  # sigma_c < sigma_max
        (np.array([0.5, 0.45, 0.05]), np.array([0.0, 5.0, 3.0])),  # large a: y_c <= 0
        (np.array([0.4, 0.4, 0.2]), np.array([0.0, 0.3, 0.2])),  # tie with sigma_c
    ]
    for sigma, a in cases:
        out = np.empty(3)
        _kernels.mstep_point(sigma, a, out)
        assert out[0] == 0.0
        np.testing.assert_allclose(out[1:], _mstep_reference(sigma[1:], a[1:]), rtol=1e-9)
        assert _point_gap(sigma, a, out) <= 1e-10


def test_mstep_degenerate_inputs():
    out = np.empty(4)
    # A = 0: one-hot argmax (first index on ties)
    _kernels.mstep_point(np.array([0.4, 0.4, 0.2, 0.0]), np.zeros(4), out)
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0, 0.0])
    # zeros and ties in sigma with every a_k > 0
    sigma = np.array([0.5, 0.5, 0.0, 0.0])
    a = np.array([0.3, 0.1, 0.2, 1e-9])
    _kernels.mstep_point(sigma, a, out)
    np.testing.assert_allclose(out, _mstep_reference(sigma, a), rtol=1e-9)
    assert _point_gap(sigma, a, out) <= 1e-10
    # tiny weights: no cancellation in the delta form
    a = np.array([1e-30, 1e-30, 1e-30, 1e-30])
    _kernels.mstep_point(np.array([0.7, 0.2, 0.1, 0.0]), a, out)
    assert out[0] == pytest.approx(1.0) and np.isfinite(out).all() and (out >= 0).all()


def _project_reference(v):
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, v.size + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_projection_kernel_matches_reference(dtype):
    rng = np.random.default_rng(8)
    v = (rng.normal(size=(50, 9)) * 3).astype(dtype)
    v[0] = 0.2  # ties
    out = np.empty_like(v)
    _kernels.project_simplex_rows(v, out)
    expected = np.array([_project_reference(row.astype(np.float64)) for row in v])
    np.testing.assert_allclose(out, expected, atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_em_kernels_float32_match_float64():
    rng = np.random.default_rng(9)
    proba = _proba(rng, 40, 6)
    coef = np.full(6, 2.0)
    y0 = 0.5 * proba + 0.5 / 6
    results = []
    for dtype in (np.float64, np.float32):
        y_new = np.empty((40, 6), dtype=dtype)
        col = np.zeros((1, 6))
        s_new = np.empty(40)
        gap = _kernels.em_step_serial(
            proba.astype(dtype), y0.astype(dtype), np.einsum("ik,ik->i", proba, y0), coef,
            y_new, s_new, np.full(40, -1.0), proba.max(axis=1), col,
        )
        results.append((gap, y_new.astype(np.float64), col[0]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-4)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-5)


def test_parallel_em_step_matches_serial():
    rng = np.random.default_rng(10)
    proba = _proba(rng, 37, 5)
    y0 = 0.9 * proba + 0.02
    coef = rng.uniform(0.5, 2.0, size=5)
    out = []
    for step, chunks in ((_kernels.em_step_serial, 1), (_kernels.em_step_parallel, 3)):
        y_new = np.empty_like(proba)
        col = np.zeros((chunks, 5))
        s_old = np.einsum("ik,ik->i", proba, y0)
        s_new = np.empty(37)
        gap = step(
            proba, y0, s_old, coef, y_new, s_new, np.full(37, -1.0), proba.max(axis=1), col
        )
        np.testing.assert_allclose(s_new, np.einsum("ik,ik->i", proba, y_new), rtol=1e-12)
        out.append((gap, y_new, col.sum(axis=0)))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-12)
    np.testing.assert_allclose(out[0][2], out[1][2], rtol=1e-12)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 12),
    k=st.integers(2, 6),
    lam=st.floats(0.0, 20.0),
    seed=st.integers(0, 2**31 - 1),
    zeros=st.booleans(),
    method=st.sampled_from(["em", "pgd"]),
)
def test_invariants(m, k, lam, seed, zeros, method):
    rng = np.random.default_rng(seed)
    proba = _proba(rng, m, k, scale=rng.uniform(0.1, 8.0))
    if zeros:
        proba[rng.random((m, k)) < 0.3] = 0.0
        proba[np.arange(m), rng.integers(0, k, m)] += 1e-3
        proba /= proba.sum(axis=1, keepdims=True)
    res = solve_pseudo_labels(proba, lam, method=method, max_iter=300, warn=False)
    assert isinstance(res, PseudoLabelResult)
    assert res.y.shape == (m, k)
    assert np.isfinite(res.y).all() and (res.y >= 0).all()
    np.testing.assert_allclose(res.y.sum(axis=1), 1.0, atol=1e-9)
    assert np.isfinite(res.objective) and res.gap >= 0
    start = (1 - 1e-3) * proba + 1e-3 / k
    assert res.objective <= pseudo_label_objective(proba, start, lam) + 1e-12


def test_record_history_is_monotone_for_em():
    rng = np.random.default_rng(11)
    proba = _proba(rng, 100, 6)
    res = solve_pseudo_labels(
        proba, 0.4, max_iter=50, tol=0, record_history=True, accelerate=False
    )
    assert res.n_iter == 50 and len(res.history) == 51
    seconds, objective, gap = map(np.array, zip(*res.history, strict=True))
    assert (np.diff(seconds) >= 0).all()
    assert (np.diff(objective) <= 1e-12).all()
    assert gap[-1] == pytest.approx(res.gap) and gap[-1] < gap[0]
    # accelerated: one record per two EM steps, same iterates as without history
    fast = solve_pseudo_labels(proba, 0.4, max_iter=41, tol=0, record_history=True)
    assert fast.n_iter == 41 and len(fast.history) == 22
    assert (np.diff([h[1] for h in fast.history]) <= 1e-12).all()
    plain = solve_pseudo_labels(proba, 0.4, max_iter=40, tol=0)
    timed = solve_pseudo_labels(proba, 0.4, max_iter=40, tol=0, record_history=True)
    np.testing.assert_allclose(plain.y, timed.y, rtol=1e-10, atol=1e-14)
    pgd = solve_pseudo_labels(proba, 0.4, method="pgd", max_iter=20, tol=0, record_history=True)
    assert len(pgd.history) == pgd.n_iter + 1 == 21


def test_degenerate_but_legal_inputs():
    # M = 1, exact zeros, ties, and a one-hot row
    one = solve_pseudo_labels(np.array([[0.5, 0.5, 0.0]]), 0.4)
    assert one.converged and one.y.shape == (1, 3)
    proba = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    for method in ("em", "pgd"):
        res = solve_pseudo_labels(proba, 1.0, method=method, max_iter=20000)
        assert res.converged and res.gap <= 1e-6


def test_float32_in_float32_out_and_warm_start():
    rng = np.random.default_rng(12)
    proba = _proba(rng, 200, 10, dtype=np.float32)
    res = solve_pseudo_labels(proba, 0.4)
    assert res.y.dtype == np.float32 and res.converged
    again = solve_pseudo_labels(proba, 0.4, init=res.y)
    assert again.converged and again.n_iter <= res.n_iter


def test_tol_zero_runs_max_iter():
    rng = np.random.default_rng(13)
    proba = _proba(rng, 30, 4)
    for method in ("em", "pgd"):
        res = solve_pseudo_labels(proba, 0.4, method=method, max_iter=7, tol=0)
        assert res.n_iter == 7 and not res.converged


def test_sinkhorn_gives_balanced_one_hot_labels():
    rng = np.random.default_rng(14)
    proba = _proba(rng, 400, 4, scale=1.0)
    proba[:, 0] += 1.0  # predictions favour class 0
    proba /= proba.sum(axis=1, keepdims=True)
    res = solve_pseudo_labels(proba, 0.4, method="sinkhorn", max_iter=5000, tol=1e-8)
    assert res.converged
    assert set(np.unique(res.y)) == {0.0, 1.0}
    np.testing.assert_array_equal(res.y.sum(axis=1), 1.0)
    counts = res.y.sum(axis=0)
    assert np.abs(counts - 100).max() <= 10
    assert proba.argmax(axis=1).tolist().count(0) > 200  # argmax alone is unbalanced
    assert res.gap >= 0 and np.isfinite(res.objective)


# ----------------------------------------------------------------------------- warnings, errors


def test_convergence_warning_and_warn_false():
    rng = np.random.default_rng(15)
    proba = _proba(rng, 100, 20)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = solve_pseudo_labels(proba, 0.4, max_iter=2, tol=1e-12)
    assert not res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_pseudo_labels(proba, 0.4, max_iter=2, tol=1e-12, warn=False)
    with pytest.warns(ConvergenceWarning):
        solve_pseudo_labels(proba, 0.4, method="pgd", step_size=0.1, max_iter=2, tol=1e-12)


_GOOD = np.array([[0.7, 0.3], [0.4, 0.6]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"proba": np.array([[np.nan, 1.0], [0.5, 0.5]])}, "NaN"),
        ({"proba": np.array([[np.inf, 1.0], [0.5, 0.5]])}, "infinite"),
        ({"proba": np.array([[1.2, -0.2], [0.5, 0.5]])}, "negative"),
        ({"proba": np.array([[0.7, 0.4], [0.5, 0.5]])}, "sum to 1"),
        ({"proba": np.ones((3, 1))}, "at least 2 classes"),
        ({"proba": np.ones(4) / 4}, "2-D"),
        ({"proba": np.empty((0, 3))}, "at least one row"),
        ({"proba": np.array([["a", "b"]])}, "numeric"),
        ({"prior": [0.5, 0.6]}, "sum to 1"),
        ({"prior": [1.0]}, "shape"),
        ({"prior": [1.5, -0.5]}, "non-negative"),
        ({"prior": [1.0, 0.0], "fairness": "forward", "method": "pgd"}, "strictly positive"),
        ({"lam": -1.0}, "lam"),
        ({"lam": np.nan}, "lam"),
        ({"method": "newton"}, "method"),
        ({"fairness": "both"}, "fairness"),
        ({"loss": "hinge"}, "loss"),
        ({"fairness": "forward"}, "method='em'"),
        ({"loss": "shannon"}, "method='em'"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"step_size": 0.0, "method": "pgd"}, "step_size"),
        ({"power": -2.0, "method": "sinkhorn"}, "power"),
        ({"init": np.ones((3, 2)) / 2}, "init"),
        ({"init": np.array([[1.0, 0.5], [0.5, 0.5]])}, "sum to 1"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"proba": _GOOD, "lam": 0.4, **kwargs}
    with pytest.raises(ValueError, match=match):
        solve_pseudo_labels(**args)


def test_objective_and_gap_validate_and_compute():
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    value = pseudo_label_objective(proba, y, 1.0)
    assert value == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)
    assert frank_wolfe_gap(proba, y, 0.0) == 0.0
    # lam = 0 with an empty cluster: finite (the fairness term is absent, not 0 * inf)
    both_first = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert pseudo_label_objective(proba, both_first, 0.0) == pytest.approx(
        -(np.log(0.9) + np.log(0.2)) / 2
    )
    assert np.isfinite(frank_wolfe_gap(proba, both_first, 0.0))
    # an empty cluster under the reverse KL: infinite objective
    assert pseudo_label_objective(proba, np.array([[1.0, 0.0], [1.0, 0.0]]), 1.0) == np.inf
    with pytest.raises(ValueError, match="shape"):
        frank_wolfe_gap(proba, np.ones((3, 2)) / 2, 1.0)
    with pytest.raises(ValueError, match="shape"):
        pseudo_label_objective(proba, np.ones((3, 2)) / 2, 1.0)


# ------------------------------------------------------------- lam from 1 to 1e6 (issue 10 #11)


def _dirichlet(rng, m, k):
    return rng.dirichlet(np.full(k, 0.5), size=m)


# Certified within 200 iterations: EM alone needs several hundred from lam ~ 1
# to 10 (its rate predicts it, and it hands over to the dual), the dual alone
# stalls above 1e-6 on duplicated rows at lam = 1e6 (EM then polishes).
_CERTIFIED_LAMS = [1.0, 2.0, 4.0, 7.0, 10.0, 1e2, 1e4, 1e6]


def _certify(proba, lam, prior=None, max_iter=200):
    res = solve_pseudo_labels(proba, lam, prior, max_iter=max_iter, tol=1e-6)
    assert res.converged and res.n_iter <= max_iter
    assert res.gap <= 1e-6
    # the reported gap is that of the returned y, recomputed by the front
    # (abs: at lam = 1e6 the gap's terms are ~1e6, so rounding is ~1e-10)
    assert frank_wolfe_gap(proba, res.y, lam, prior) == pytest.approx(res.gap, abs=1e-9)
    assert res.objective == pytest.approx(pseudo_label_objective(proba, res.y, lam, prior))
    np.testing.assert_allclose(res.y.sum(axis=1), 1.0, atol=1e-12)
    assert (res.y >= 0).all()
    return res


@pytest.mark.parametrize("lam", _CERTIFIED_LAMS)
@pytest.mark.parametrize("kind", ["softmax", "dirichlet"])
def test_em_certified_256x10(lam, kind):
    rng = np.random.default_rng(20)
    proba = _proba(rng, 256, 10) if kind == "softmax" else _dirichlet(rng, 256, 10)
    _certify(proba, lam)
    _certify(proba, lam, _prior(rng, 10, "skewed"))


@pytest.mark.parametrize("lam", _CERTIFIED_LAMS)
def test_em_certified_1000x100(lam):
    rng = np.random.default_rng(21)
    res = _certify(_proba(rng, 1000, 100), lam)
    # large lam tends to a balanced assignment
    assert np.abs(res.y.mean(axis=0) - 0.01).max() <= 10.0 / lam


def _degenerate(name, rng, m=256, k=10):
    if name == "uniform rows":
        return np.full((m, k), 1.0 / k)
    if name == "identical rows":
        return np.tile(rng.dirichlet(np.ones(k)), (m, 1))
    if name == "ties and zeros":
        return np.tile(np.r_[0.5, 0.5, np.zeros(k - 2)], (m, 1))
    if name == "one row":
        return rng.dirichlet(np.ones(k), size=1)
    if name == "exact zeros":
        p = rng.dirichlet(np.full(k, 0.3), size=m)
        p[rng.random((m, k)) < 0.3] = 0.0
        p[np.arange(m), rng.integers(0, k, m)] += 1e-3
        return p / p.sum(axis=1, keepdims=True)
    return np.repeat(rng.dirichlet(np.ones(k), size=8), m // 8, axis=0)  # duplicated rows


@pytest.mark.parametrize("lam", _CERTIFIED_LAMS)
@pytest.mark.parametrize(
    "name", ["uniform rows", "identical rows", "ties and zeros", "one row", "exact zeros",
             "duplicated rows"]
)
def test_em_certified_degenerate(name, lam):
    _certify(_degenerate(name, np.random.default_rng(22)), lam)


def test_em_hand_over_rule():
    # the rate of EM's smallest gap over the last half of its steps, extrapolated
    # to tol, against the budget
    assert _kernels.em_rate_window(20) == _kernels.EM_RATE_WINDOW == 10
    assert _kernels.em_rate_window(60) == 30 and _kernels.em_rate_window(62) == 30
    # two decades from step 30 to 60: two more, to 1e-6, by step 90
    assert not _kernels.em_too_slow(1e-4, 1e-2, 30, 60, 1e-6, 120)
    assert _kernels.em_too_slow(1e-4, 1e-2, 30, 60, 1e-6, 80)
    assert _kernels.em_too_slow(1e-2 * 0.99, 1e-2, 30, 60, 1e-6, 120)  # thousands to go
    assert _kernels.em_too_slow(1e-2, 1e-2, 30, 60, 1e-6, 120)  # no decrease: never
    assert not _kernels.em_too_slow(1e-7, 1.0, 30, 60, 1e-6, 120)  # converged


@pytest.mark.parametrize("lam", [0.4, 1.0, 4.0])
def test_fast_em_runs_alone_at_training_tolerance(lam):
    # the training loop's regime (256 x 10, tol 1e-3): EM converges before it is
    # judged slow, so the result is EM's own, bit for bit
    rng = np.random.default_rng(30)
    proba = _proba(rng, 256, 10)
    prior = np.full(10, 0.1)
    res = _solve_em(proba, lam, prior, 1000, 1e-3)
    alone = _solve_em(proba, lam, prior, 1000, 1e-3, dual=False)
    assert res.converged and res.n_iter == alone.n_iter
    np.testing.assert_array_equal(res.y, alone.y)


def test_hand_over_records_the_same_run():
    rng = np.random.default_rng(20)
    proba = _proba(rng, 256, 10)
    res = solve_pseudo_labels(proba, 4.0, max_iter=200)
    rec = solve_pseudo_labels(proba, 4.0, max_iter=200, record_history=True)
    assert res.n_iter == rec.n_iter and res.gap == pytest.approx(rec.gap, rel=1e-9)
    np.testing.assert_allclose(res.y, rec.y, atol=1e-12)
    seconds, _, gaps = map(np.array, zip(*rec.history, strict=True))
    assert (np.diff(seconds) >= 0).all() and gaps[-1] == pytest.approx(rec.gap)


def test_prior_with_zeros_keeps_em_alone():
    # the dual needs a positive prior: when EM is judged slow, EM goes on
    rng = np.random.default_rng(31)
    proba = _proba(rng, 256, 10)
    prior = np.r_[0.0, np.full(9, 1.0 / 9)]
    res = solve_pseudo_labels(proba, 4.0, prior, max_iter=2000)
    alone = _solve_em(proba, 4.0, prior, 2000, 1e-6, dual=False)
    assert res.converged and res.n_iter > solvers._EM_BUDGET
    assert frank_wolfe_gap(proba, res.y, 4.0, prior) == pytest.approx(res.gap, abs=1e-9)
    assert res.objective == pytest.approx(alone.objective, abs=2e-6)


def test_pgd_warns_clearly_for_large_lam():
    rng = np.random.default_rng(23)
    proba = _proba(rng, 100, 5)
    with pytest.warns(ConvergenceWarning, match="lam grows.*method='em'"):
        res = solve_pseudo_labels(proba, 1e4, method="pgd", max_iter=50)
    assert not res.converged


def test_dual_row_kernel_matches_reference():
    # the row problem of the dual, min -ln(sigma.y) - b.y + eps sum y ln y, by Brent on t
    rng = np.random.default_rng(24)
    for dtype in (np.float64, np.float32):
        for eps in (1.0, 1e-2, 1e-5):
            sigma = _proba(rng, 1, 7)[0]
            b = rng.normal(size=7)
            y = np.empty(7)
            t, f, _, _ = _kernels.dual_row(sigma.astype(dtype), b, eps, 0.0, y)
            s64 = sigma.astype(dtype).astype(np.float64)

            def soft(tt, s64=s64, b=b, eps=eps):
                z = (b + tt * s64) / eps
                e = np.exp(z - z.max())
                return e / e.sum()

            root = brentq(lambda tt, s64=s64: tt * (s64 @ soft(tt)) - 1.0, 1 / s64.max(),
                          1 / (s64 @ soft(1 / s64.max())), xtol=1e-14, rtol=1e-15)
            assert t == pytest.approx(root, rel=1e-9)
            np.testing.assert_allclose(y, soft(root), atol=1e-9)
            assert f == pytest.approx(s64 @ y, rel=1e-12)


# ------------------------------------------------------------------------ lam, dtypes, batch core


@pytest.mark.parametrize("bad", ["0.4", b"1", [0.4], np.array([0.4]), None])
def test_lam_must_be_a_number(bad):
    with pytest.raises(TypeError, match="lam"):
        solve_pseudo_labels(_GOOD, bad)


def test_zero_d_array_lam_is_a_number():
    a = solve_pseudo_labels(_GOOD, np.array(0.4))
    b = solve_pseudo_labels(_GOOD, 0.4)
    np.testing.assert_array_equal(a.y, b.y)
    assert frank_wolfe_gap(_GOOD, a.y, np.float32(0.4)) == pytest.approx(a.gap, abs=1e-12)


@pytest.mark.parametrize("fairness, loss", [("reverse", "collision"), ("forward", "shannon")])
def test_lam_zero_closed_form_for_every_problem(fairness, loss):
    # lam = 0: -ln(sigma_i . y_i) (or -sum y ln sigma) is minimised at the one-hot argmax
    rng = np.random.default_rng(25)
    proba = _proba(rng, 40, 5)
    res = solve_pseudo_labels(proba, 0, None, fairness, "pgd", loss, max_iter=5000)
    assert res.converged and res.gap <= 1e-6
    onehot = np.eye(5)[proba.argmax(axis=1)]
    assert frank_wolfe_gap(proba, onehot, 0, None, fairness, loss) == 0.0
    assert res.objective == pytest.approx(
        pseudo_label_objective(proba, onehot, 0, None, fairness, loss), abs=1e-6
    )


def test_float16_probabilities_accepted_and_returned():
    rng = np.random.default_rng(26)
    proba = _proba(rng, 64, 10).astype(np.float16)
    assert np.abs(proba.astype(np.float64).sum(axis=1) - 1).max() > 1e-4  # as in the issue
    res = solve_pseudo_labels(proba, 0.4)
    assert res.y.dtype == np.float16 and res.converged
    ref = solve_pseudo_labels(proba.astype(np.float64) / proba.astype(np.float64).sum(1)[:, None],
                              0.4)
    np.testing.assert_allclose(res.y.astype(np.float64), ref.y, atol=2e-3)
    with pytest.raises(ValueError, match="tolerance 0.000976"):
        solve_pseudo_labels(np.array([[0.6, 0.41]], dtype=np.float16), 0.4)


def test_solve_batch_matches_the_front():
    rng = np.random.default_rng(27)
    proba = _proba(rng, 256, 10)
    prior = np.full(10, 0.1)
    buf = np.empty((256, 10), dtype=np.float32)
    for lam, method in ((0.4, "em"), (100.0, "em"), (0.4, "pgd")):
        y, converged, n_iter = solvers._solve_batch(proba, lam, prior, method=method, out=buf)
        ref = solve_pseudo_labels(proba, lam, prior, method=method)
        assert y is buf and converged == ref.converged and n_iter == ref.n_iter
        np.testing.assert_allclose(y, ref.y, rtol=0, atol=1e-6)
    y, converged, _ = solvers._solve_batch(proba, 0.4, prior)
    assert y.dtype == np.float64 and converged


def test_training_core_keeps_em_alone_below_the_dual_threshold():
    # the per-batch core of the training loop runs EM alone for lam < 10 (seeded fits
    # reproduce skcce 0.1's), even where the front would hand over to the dual
    from skcce.solvers import _solve_batch, _solve_em

    rng = np.random.default_rng(20)
    proba = _dirichlet(rng, 256, 10)
    u = np.full(10, 0.1)
    y, _, n_iter = _solve_batch(proba, 4.0, u, max_iter=1000, tol=1e-6)
    alone = _solve_em(proba, 4.0, u, 1000, 1e-6, dual=False)
    np.testing.assert_array_equal(y, alone.y)
    assert n_iter == alone.n_iter
    front = solve_pseudo_labels(proba, 4.0, max_iter=1000, tol=1e-6)
    assert front.n_iter < alone.n_iter  # the front hands over and finishes sooner
