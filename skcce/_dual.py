r"""Dual Newton method for the pseudo-label problem when EM is slow (no input validation).

Collision cross-entropy with the reverse fairness term (eq. 11). As ``lam``
grows the problem tends to a balanced assignment: EM's vanishing entries
then shrink by only about :math:`\lambda/(\lambda + \Delta)` per step, which
slows EM from ``lam ~ 1`` on. This module solves that regime through the
column constraint's multipliers; :func:`skcce.solvers.solve_pseudo_labels`
(``method='em'``) hands over to it when EM's measured rate is too slow. The
row kernels are in :mod:`skcce._kernels`.
"""

from __future__ import annotations

import time

import numpy as np

from skcce import _kernels

__all__ = ["solve_dual"]

# First smoothing, and the smallest one tried (see solve_dual).
_EPS0 = 1.0
_EPS_MIN = 1e-12
# After this many Newton steps in a row at the rounding floor, polish and
# decrease eps (see solve_dual); a predicted ascent below _RESOLUTION times
# the dual value is below its float64 resolution.
_FLAT_STEPS = 3
_RESOLUTION = 1e-15
# The line search starts at this many times the last accepted step (at most a
# full step): after damped steps, the full step is rarely accepted at once.
_STEP_GROWTH = 4.0


def _shift(b, lam, prior):
    r"""Common shift of the prices making the column targets sum to one.

    The row solutions depend on ``b`` only up to a common shift; the shift
    ``c`` is fixed by ``F(c) = sum_k u_k / (1 + (b_k + c) / lam) = 1`` (the
    targets :math:`\bar y_k = \lambda u_k / \beta_k`, :math:`\beta = \lambda + b`,
    sum to one). ``F`` is convex and decreasing right of its pole, so Newton's
    method from ``c = 0`` converges; a step past the pole is replaced by half
    the way to it. Only the small correction ``c`` is added to ``b``, which
    keeps ``b`` to full precision when ``lam`` is large.
    """
    pole = -lam - float(b.min())
    c = 0.0
    for _ in range(200):
        x = 1.0 + (b + c) / lam
        step = (float(np.sum(prior / x)) - 1.0) / float(np.sum(prior / (lam * x * x)))
        new = c + step
        if new <= pole:
            new = 0.5 * (c + pole)
        if abs(new - c) <= 4.0 * np.finfo(float).eps * (abs(c) + abs(pole) + lam):
            c = new
            break
        c = new
    return b + c


def _evaluate(sigma, b, lam, prior, eps, t):
    """Row solutions for prices ``b``, and the dual value (per point)."""
    m, k = sigma.shape
    y, t = np.empty((m, k)), t.copy()
    f, v, ent = np.empty(m), np.empty(m), np.empty(m)
    _kernels.dual_rows(sigma, b, eps, t, y, f, v, ent)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = lam * float(np.sum(prior * np.log1p(b / lam)))
        value += float(np.mean(-np.log(f) - y @ b + eps * ent))
    return value, (y, t, f, v)


def _direction(sigma, rows, b, lam, prior, eps, resid):
    """Newton direction on the prices (their common shift removed).

    The negative Hessian of the dual per point is ``J + diag(h) - h h^T / sum(h)``
    with ``h = lam u / beta^2`` (the shift eliminated by :func:`_shift`)
    and ``J = mean_i dy_i / db``: for ``y = softmax(z)``, ``C = diag(y) - y y^T``
    and ``w = C sigma``, ``eps dy/db = C - t w w^T / (eps s + t Var_y(sigma))``.
    """
    y, t, f, v = rows
    m, k = y.shape
    w = y * (sigma - f[:, None])
    coef = t / (eps * f + t * v)
    jac = (np.diag(y.sum(axis=0)) - y.T @ y - (w * coef[:, None]).T @ w) / (eps * m)
    h = lam * prior / (lam + b) ** 2
    hess = jac + np.diag(h) - np.outer(h, h) / h.sum()
    hess += np.trace(hess) / (k * k)  # J 1 = 0: fix the shift direction
    d = np.linalg.solve(hess, resid)
    return d - d.mean()


def solve_dual(sigma, lam, prior, max_iter, tol, objective=None, polish=None):
    r"""Entropic dual Newton method for collision + reverse KL, no input validation.

    For large ``lam`` the problem approaches a balanced assignment, where
    EM's vanishing entries shrink only by about :math:`\lambda/(\lambda + \Delta)`
    per step. Here the column constraint is handled by its multipliers
    :math:`\beta_k = \lambda u_k / \bar y_k` (the linearised fairness term of
    eq. 11): with an entropy ``eps * sum y ln y`` added, every row is an explicit
    softmax (see :func:`skcce._kernels.dual_row`) and the K-dimensional concave
    dual is maximised by damped Newton steps (Armijo backtracking from at most
    ``_STEP_GROWTH`` times the last accepted step), while ``eps`` decreases tenfold
    whenever the multipliers are consistent (``max |beta~ - beta| <= eps/10``).
    Every row then minimises the linearised problem up to ``eps`` times its
    entropy, so the Frank-Wolfe gap of the *unsmoothed* problem, computed at
    every iteration, decides the stop.

    The rows are computed to float64 rounding, which the Newton system
    amplifies by about ``1 / eps``: at a small enough ``eps`` (large ``lam``,
    many duplicated rows) the column residual stops decreasing before the
    multipliers are consistent. After ``_FLAT_STEPS`` such steps in a row
    (full steps, predicted ascent below the float64 resolution of the dual
    value, residual not halved), ``polish`` (if given) runs once per ``eps``
    from the best iterate so far, and ``eps`` then decreases tenfold.

    Parameters
    ----------
    sigma : ndarray of shape (M, K)
        C-contiguous predictions, rows on the simplex.
    lam : float
        Fairness weight, > 0.
    prior : ndarray of shape (K,)
        Float64 prior, strictly positive, summing to one.
    max_iter : int
        Newton steps allowed.
    tol : float
        Stop when the Frank-Wolfe gap is ``<= tol``.
    objective : callable, default=None
        ``objective(y) -> float``; when given, ``history`` records
        ``(seconds, objective(y), gap)`` at the start and after every step.
    polish : callable, default=None
        ``polish(y, max_steps) -> PseudoLabelResult``, a primal method (EM)
        run from ``y`` for at most ``max_steps`` iterations, which count in
        ``n_iter``; its result has a ``history`` when ``objective`` is given.

    Returns
    -------
    y : ndarray of shape (M, K)
        The iterate with the smallest gap (float64).
    n_iter : int
        Newton steps plus polishing iterations.
    gap : float
    history : list of tuple
    """
    m, k = sigma.shape
    # Equal prices to start: the multipliers of a not yet converged EM iterate
    # (lam times its imbalance) are far too sharp for the first smoothing.
    b = _shift(np.zeros(k), lam, prior)
    eps, t0 = _EPS0, time.perf_counter()
    value, rows = _evaluate(sigma, b, lam, prior, eps, np.zeros(m))
    best_gap, best_y = np.inf, rows[0]
    history = []
    n_iter = n_flat = 0
    last_resid, last_step = np.inf, 1.0
    polished = set()
    while True:
        y = rows[0]
        gap = max(float(_kernels.em_gap(sigma, y, prior, lam)), 0.0)
        if gap < best_gap:
            best_gap, best_y = gap, y
        if objective is not None:
            history.append((time.perf_counter() - t0, objective(y), gap))
        ybar = y.mean(axis=0)
        if gap <= tol or n_iter >= max_iter or not np.all(ybar > 0):
            break
        if np.ptp(lam * (prior - ybar) / ybar - b) <= 0.1 * eps:
            eps /= 10.0
            value, rows = _evaluate(sigma, b, lam, prior, eps, rows[1])
            n_flat, last_resid, last_step = 0, np.inf, 1.0
            continue
        resid = prior / (1.0 + b / lam) - ybar
        d = _direction(sigma, rows, b, lam, prior, eps, resid)
        step, slope = min(1.0, _STEP_GROWTH * last_step), float(resid @ d)
        # Newton steps whose predicted ascent is below the float64 resolution
        # of the dual value and that no longer halve the residual: it is at
        # its rounding floor (the rows' rounding, amplified by 1 / eps)
        size = float(np.abs(resid).max())
        flat = slope <= _RESOLUTION * (abs(value) + 1.0) and size > 0.5 * last_resid
        n_flat = n_flat + 1 if flat else 0
        if n_flat >= _FLAT_STEPS:
            if polish is not None and eps not in polished:
                polished.add(eps)
                res = polish(best_y, max_iter - n_iter)
                if objective is not None:
                    offset = time.perf_counter() - t0 - res.history[-1][0]
                    history += [(offset + s, obj, g) for s, obj, g in res.history[1:]]
                n_iter += res.n_iter
                if res.gap < best_gap:
                    best_gap, best_y = res.gap, res.y
                if best_gap <= tol or n_iter >= max_iter:
                    break
            if eps < _EPS_MIN:
                break
            eps /= 10.0
            value, rows = _evaluate(sigma, b, lam, prior, eps, rows[1])
            n_flat, last_resid, last_step = 0, np.inf, 1.0
            continue
        last_resid = size
        for _ in range(40):
            b_new = _shift(b + step * d, lam, prior)
            new, rows_new = _evaluate(sigma, b_new, lam, prior, eps, rows[1])
            if new >= value + 1e-4 * step * slope - 1e-15 * abs(value):
                break
            step *= 0.5
        else:  # no ascent: this smoothing is solved to the float64 resolution
            if eps < _EPS_MIN:
                break
            eps /= 10.0
            value, rows = _evaluate(sigma, b, lam, prior, eps, rows[1])
            n_flat, last_resid, last_step = 0, np.inf, 1.0
            continue
        if step < 1.0:
            n_flat, last_resid = 0, np.inf
        last_step = step
        b, value, rows = b_new, new, rows_new
        n_iter += 1
    return np.ascontiguousarray(best_y), n_iter, best_gap, history
