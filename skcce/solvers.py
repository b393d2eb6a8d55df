r"""Pseudo-label solvers: the y-step of self-labeled clustering.

For fixed predictions :math:`\sigma` (``proba``, M x K) and a prior
:math:`u`, the solvers minimise over pseudo-labels :math:`y` (rows on the
simplex)

.. math::

    L(y) = \frac1M \sum_i H_2(y_i, \sigma_i) + \lambda\, KL(u \| \bar y)
    \quad \text{('reverse', eq. 11)}, \qquad
    L(y) = \frac1M \sum_i H_2(y_i, \sigma_i) + \lambda\, KL(\bar y \| u)
    \quad \text{('forward', eq. 10)},

with :math:`\bar y = \frac1M \sum_i y_i`; ``loss='shannon'`` replaces
:math:`H_2` by the Shannon cross-entropy :math:`H(y_i, \sigma_i)` (MI-ADM's
pseudo-label problem). All problems are convex in :math:`y`; every result
carries the Frank-Wolfe gap :math:`\sum_i (g_i \cdot y_i - \min_k g_{ik})`,
:math:`g = \nabla L`, which bounds :math:`L(y) - L^*`.

As ``lam`` grows the problem tends to a balanced assignment and EM slows
down; the default EM then hands over, when its measured rate is too slow, to
the dual Newton method of :mod:`skcce._dual` (same gap).
:func:`_solve_batch` is the unvalidated per-batch core for training loops.

Scale convention: the objective uses the *mean* over points, so the EM's
per-point weights are :math:`a_k = \lambda M u_k S_{ik}`; the paper's
:math:`\lambda = 100` at batch size 250 (its eq. 15 has no factor M) is
``lam = 0.4`` here.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skcce import _dual, _kernels
from skcce._simplex import check_prior, kl_prior_forward_np, kl_prior_reverse_np, sum_tolerance

__all__ = [
    "PseudoLabelResult",
    "solve_pseudo_labels",
    "pseudo_label_objective",
    "frank_wolfe_gap",
]

logger = logging.getLogger(__name__)

_METHODS = ("em", "pgd", "sinkhorn")
_FAIRNESS = ("reverse", "forward")
_LOSSES = ("collision", "shannon")
# Mixing weight of the uniform distribution in the start (see solve_pseudo_labels).
_START_MIX = 1e-3
# log(sigma) is clipped here for the Shannon loss when sigma has exact zeros.
_LOG_FLOOR = np.log(1e-300)
# From this many entries on (and on an idle machine, see _use_parallel) EM runs threaded.
_PARALLEL_MIN_SIZE = 1_000_000
# EM's vanishing entries shrink by only about lam / (lam + gap) per step, so
# from lam ~ 1 on EM can need hundreds of steps. From step _EM_WARMUP on
# (_EM_WARMUP_LARGE_LAM from lam = _DUAL_MIN_LAM on, where EM is slow anyway;
# below, SQUAREM's jumpy gaps make early rate estimates unreliable) EM hands
# over to the dual Newton method of skcce._dual as soon as its measured rate
# predicts that it would not reach the tolerance by step _EM_BUDGET (see
# _solve_em). From _DUAL_MIN_LAM on, PGD's non-convergence message points at
# method='em'.
_DUAL_MIN_LAM = 10.0
_EM_WARMUP = 60
_EM_WARMUP_LARGE_LAM = 20
_EM_BUDGET = 120
# When the dual stalls at its rounding floor, EM polishes its iterate while
# predicted to reach the tolerance within this many steps (see _dual.solve_dual).
_POLISH_BUDGET = 40


@dataclass
class PseudoLabelResult:
    """Result of :func:`solve_pseudo_labels`.

    Parameters
    ----------
    y : ndarray of shape (M, K)
        Pseudo-labels, rows on the simplex, in the dtype of ``proba``.
    n_iter : int
        Iterations performed.
    converged : bool
        Whether the stopping test was met within ``max_iter``.
    objective : float
        :math:`L(y)` of the problem solved (see :func:`pseudo_label_objective`).
    gap : float
        Frank-Wolfe gap of ``y``, an upper bound on :math:`L(y) - L^*`.
    history : list of tuple or None
        ``(seconds, objective, gap)`` for the start and after every iteration
        when ``record_history=True``; seconds count solver work only.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.solvers import solve_pseudo_labels
    >>> res = solve_pseudo_labels(np.array([[0.9, 0.1], [0.2, 0.8]]), lam=0.4)
    >>> res.y.shape, res.converged
    ((2, 2), True)
    """

    y: np.ndarray
    n_iter: int
    converged: bool
    objective: float
    gap: float
    history: list | None = None


# --------------------------------------------------------------------------- validation


def _check_proba(proba, name="proba"):
    """Validated float32/float64 C-contiguous copy (or view) of ``proba``.

    Other floating dtypes (float16) are upcast to float32, other numbers to
    float64; rows must sum to one within the tolerance of the *input* dtype
    (:func:`skcce._simplex.sum_tolerance`).
    """
    arr = np.asarray(proba)
    tol = sum_tolerance(arr.dtype)
    if arr.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float32 if np.issubdtype(arr.dtype, np.floating) else np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_points, n_classes), got shape {arr.shape}")
    m, k = arr.shape
    if m < 1:
        raise ValueError(f"{name} must have at least one row, got shape {arr.shape}")
    if k < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns), got {k}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (arr < 0).any():
        raise ValueError(f"{name} contains negative values; rows must be probability vectors")
    rows = arr.sum(axis=1, dtype=np.float64)
    bad = np.abs(rows - 1.0) > tol
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"rows of {name} must sum to 1 (tolerance {tol:g}); row {i} sums to {rows[i]:.6g}"
        )
    return np.ascontiguousarray(arr)


def _check_prior(prior, n_classes, fairness):
    return check_prior(prior, n_classes, strictly_positive=fairness == "forward")


def _check_lam(lam):
    """``lam`` as a float: a real number or a 0-d numeric array, finite and >= 0."""
    if isinstance(lam, (str, bytes)) or np.ndim(lam) != 0:
        raise TypeError(f"lam must be a real number, got {type(lam).__name__} {lam!r}")
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__} {lam!r}") from None
    if np.iscomplexobj(lam) or not np.isfinite(value) or value < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return value


def _check_options(lam, fairness, method, loss):
    _check_lam(lam)
    if fairness not in _FAIRNESS:
        raise ValueError(f"fairness must be one of {_FAIRNESS}, got {fairness!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if method == "em" and (loss != "collision" or fairness != "reverse"):
        raise ValueError(
            "method='em' solves loss='collision' with fairness='reverse' only; "
            f"got loss={loss!r}, fairness={fairness!r}; use method='pgd'"
        )


def _check_iter(max_iter, tol, step_size, power):
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if step_size is not None and not (np.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be None or a positive number, got {step_size!r}")
    if not (np.isfinite(power) and power > 0):
        raise ValueError(f"power must be a positive number, got {power!r}")


def _start(sigma64, init):
    """Start of the iterations: ``(1 - eps) * y0 + eps / K``, ``eps = 1e-3``."""
    y0 = sigma64 if init is None else init
    k = y0.shape[1]
    return np.ascontiguousarray((1.0 - _START_MIX) * y0 + _START_MIX / k, dtype=np.float64)


# --------------------------------------------------------------------------- objective, gap


def _objective(sigma, y, lam, prior, fairness, loss):
    m = sigma.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        if loss == "collision":
            s = np.einsum("ik,ik->i", sigma, y)
            data = -np.log(s).sum() / m
        else:
            logs = np.log(sigma)
            data = -np.where(y > 0, y * logs, 0.0).sum() / m
        if lam == 0:  # an empty cluster must not turn 0 * inf into nan
            return float(data)
        ybar = y.mean(axis=0)
        if fairness == "reverse":  # exact: an empty cluster costs inf
            fair = kl_prior_reverse_np(ybar, prior, eps=0.0)
        else:
            fair = kl_prior_forward_np(ybar, prior)
    return float(data + lam * fair)


def _grad_scaled(sigma, y, lam, prior, fairness, loss):
    """``M * grad L`` (the per-point gradient), shape (M, K)."""
    m = sigma.shape[0]
    ybar = y.sum(axis=0) / m
    with np.errstate(divide="ignore", invalid="ignore"):
        if loss == "collision":
            s = np.einsum("ik,ik->i", sigma, y)
            g = -sigma / s[:, None]
        else:
            g = -np.maximum(np.log(sigma), _LOG_FLOOR)
        if lam == 0:
            pass
        elif fairness == "reverse":
            g -= lam * np.where(prior > 0, prior / ybar, 0.0)
        else:
            g += lam * (np.log(np.maximum(ybar, 1e-300)) - np.log(prior) + 1.0)
    return g


def _gap_from_grad(g, y):
    m = y.shape[0]
    with np.errstate(invalid="ignore"):
        inner = np.einsum("ik,ik->i", g, y) - g.min(axis=1)
    if not np.isfinite(inner).all():
        return float("inf")
    return float(max(inner.sum() / m, 0.0))


def pseudo_label_objective(proba, y, lam, prior=None, fairness="reverse", loss="collision"):
    r"""Value of the pseudo-label objective :math:`L(y)` (eqs. 10-11).

    Parameters
    ----------
    proba : array-like of shape (M, K)
        Predictions :math:`\sigma`, rows on the simplex.
    y : array-like of shape (M, K)
        Pseudo-labels, rows on the simplex.
    lam : float
        Weight of the fairness term (mean convention, see module docstring).
    prior : array-like of shape (K,), default=None
        Prior :math:`u`; uniform when None.
    fairness : {'reverse', 'forward'}, default='reverse'
        :math:`KL(u\|\bar y)` (eq. 11) or :math:`KL(\bar y\|u)` (eq. 10).
    loss : {'collision', 'shannon'}, default='collision'
        :math:`H_2(y_i, \sigma_i)` or :math:`H(y_i, \sigma_i)`.

    Returns
    -------
    value : float
        ``inf`` when a term is unbounded (e.g. an empty cluster with
        :math:`u_k > 0` under 'reverse').

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.solvers import pseudo_label_objective
    >>> p = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> round(pseudo_label_objective(p, p, lam=1.0), 6)
    0.693147
    """
    sigma = _check_proba(proba).astype(np.float64, copy=False)
    yy = _check_proba(y, "y").astype(np.float64, copy=False)
    if yy.shape != sigma.shape:
        raise ValueError(f"y must have the shape of proba {sigma.shape}, got {yy.shape}")
    _check_options(lam, fairness, "pgd", loss)
    u = _check_prior(prior, sigma.shape[1], fairness)
    return _objective(sigma, yy, float(lam), u, fairness, loss)


def frank_wolfe_gap(proba, y, lam, prior=None, fairness="reverse", loss="collision"):
    r"""Frank-Wolfe gap of the pseudo-label objective at ``y``.

    ``gap = sum_i (g_i . y_i - min_k g_ik)`` with ``g = grad L(y)``. As
    :math:`L` is convex on a product of simplices, ``L(y) - L* <= gap``, and
    the gap is zero exactly at a minimiser.

    Parameters
    ----------
    proba, y : array-like of shape (M, K)
        Predictions and pseudo-labels, rows on the simplex.
    lam : float
        Fairness weight.
    prior : array-like of shape (K,), default=None
        Prior; uniform when None.
    fairness : {'reverse', 'forward'}, default='reverse'
    loss : {'collision', 'shannon'}, default='collision'

    Returns
    -------
    gap : float
        Non-negative; ``inf`` where the gradient is unbounded.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.solvers import frank_wolfe_gap
    >>> p = np.array([[0.9, 0.1], [0.1, 0.9]])
    >>> frank_wolfe_gap(p, np.eye(2), lam=0.0)
    0.0
    """
    sigma = _check_proba(proba).astype(np.float64, copy=False)
    yy = _check_proba(y, "y").astype(np.float64, copy=False)
    if yy.shape != sigma.shape:
        raise ValueError(f"y must have the shape of proba {sigma.shape}, got {yy.shape}")
    _check_options(lam, fairness, "pgd", loss)
    u = _check_prior(prior, sigma.shape[1], fairness)
    return _gap_from_grad(_grad_scaled(sigma, yy, float(lam), u, fairness, loss), yy)


# --------------------------------------------------------------------------- EM


def _use_parallel(m, k):
    """Threads for large problems on a machine that is not already busy.

    With more runnable processes than cores, Numba's OpenMP workers spin
    while waiting for descheduled peers, and a threaded EM step was measured
    several times slower than the serial one; the 1-minute load average
    (where the platform has one) is the cheap signal for that case.
    """
    import numba

    n_threads = numba.get_num_threads()
    if m * k < _PARALLEL_MIN_SIZE or n_threads < 2:
        return False
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return True
    return load < n_threads - 0.5


def _solve_em(proba64, lam, prior, max_iter, tol, init=None, record_history=False,
              accelerate=True, dual=True):
    """EM for collision + reverse KL, without input validation.

    For internal callers (one call per mini-batch). ``proba64`` must be a
    C-contiguous float64 array with rows on the simplex, ``prior`` a float64
    distribution of length K, ``init`` None or an (M, K) array with rows on
    the simplex. Returns a :class:`PseudoLabelResult` with float64 ``y``.
    ``accelerate=False`` runs the paper's plain EM (no SQUAREM steps).

    With ``dual`` (the default), ``lam > 0``, a strictly positive prior and
    ``tol > 0``, EM stops early when, from step ``_EM_WARMUP`` on
    (``_EM_WARMUP_LARGE_LAM`` from ``lam = _DUAL_MIN_LAM`` on), the rate of
    its smallest gap over the last half of its steps predicts that it will
    not reach ``tol`` by step ``_EM_BUDGET`` (:func:`skcce._kernels.em_too_slow`);
    :func:`skcce._dual.solve_dual` then runs, from scratch, the remaining
    iterations. Where the dual's smoothing reaches the float64 resolution,
    EM polishes the dual's best iterate (at most once per smoothing, while its
    rate predicts ``tol`` within ``_POLISH_BUDGET`` steps). A prior with zeros
    keeps EM alone: it then goes on where it stopped. ``n_iter`` counts all
    stages, and the iterate with the smallest gap is returned.
    """
    watch = dual and lam > 0 and tol > 0
    y0 = _start(proba64, init)
    warmup = _EM_WARMUP_LARGE_LAM if lam >= _DUAL_MIN_LAM else _EM_WARMUP
    res = _run_em(proba64, y0, lam, prior, max_iter, tol, record_history, accelerate,
                  _EM_BUDGET if watch else 0, warmup)
    if res.converged or res.n_iter >= max_iter or not watch:
        return res
    if not np.all(prior > 0):  # no dual for a prior with zeros: EM goes on
        more = _run_em(proba64, res.y, lam, prior, max_iter - res.n_iter, tol, record_history,
                       accelerate, 0)
        if record_history:
            offset = res.history[-1][0]
            more.history = res.history + [(offset + s, obj, g) for s, obj, g in more.history[1:]]
        more.n_iter += res.n_iter
        return more

    def objective(y):
        return _objective(proba64, y, lam, prior, "reverse", "collision")

    def polish(y, max_steps):
        # EM from the dual's iterate, not mixed with the uniform (that would
        # undo the balance), only floored as EM floors its own iterates
        return _run_em(proba64, np.maximum(y, _kernels._FLOOR), lam, prior, max_steps, tol,
                       record_history, accelerate, _POLISH_BUDGET, _kernels.EM_RATE_WINDOW)

    y, n_iter, gap, history = _dual.solve_dual(proba64, lam, prior, max_iter - res.n_iter, tol,
                                               objective if record_history else None, polish)
    if record_history:
        offset = res.history[-1][0]
        res.history += [(offset + s, obj, g) for s, obj, g in history[1:]]
    if gap < res.gap:
        res.y, res.objective, res.gap = y, objective(y), gap
    res.n_iter += n_iter
    res.converged = res.gap <= tol
    return res


def _run_em(proba64, y, lam, prior, max_iter, tol, record_history, accelerate, budget,
            warmup=_EM_WARMUP):
    """The EM iterations of :func:`_solve_em` (eqs. 14-17, optional SQUAREM) from ``y``.

    ``y`` (float64, C-contiguous, strictly positive for the first EM step to
    reach every entry) is updated in place. ``budget > 0``: stop early as
    :func:`skcce._kernels.em_run` describes (not converged, ``n_iter < max_iter``).
    """
    import numba

    m, k = y.shape
    parallel = _use_parallel(m, k)
    n_chunks = max(1, numba.get_num_threads())
    lam, max_iter, tol = float(lam), int(max_iter), float(tol)
    if not record_history:
        n_iter, converged, gap = _kernels.em_run(
            proba64, y, prior, lam, max_iter, tol, parallel, n_chunks, accelerate, int(warmup),
            int(budget)
        )
        obj = _objective(proba64, y, lam, prior, "reverse", "collision")
        return PseudoLabelResult(y, int(n_iter), bool(converged), obj, float(gap))
    # One record per EM step, or per SQUAREM cycle (two EM steps and an
    # extrapolation) with acceleration; the iterates, and the early stop, are
    # those of the run above.
    gap = _kernels.em_gap(proba64, y, prior, lam)
    history = [(0.0, _objective(proba64, y, lam, prior, "reverse", "collision"), gap)]
    best = {}  # smallest gap at the records (the cycle starts), as em_run keeps it
    elapsed, n_iter, converged = 0.0, 0, False
    while n_iter < max_iter:
        if tol > 0 and gap <= tol:
            converged = True
            break
        if budget > 0 and tol > 0:
            best[n_iter] = min(gap, best.get(n_iter - (2 if accelerate else 1), np.inf))
            window = _kernels.em_rate_window(n_iter)
            if n_iter >= max(warmup, window) and _kernels.em_too_slow(
                    best[n_iter], best[n_iter - window], window, n_iter, tol, budget):
                break
        steps = min(2 if accelerate else 1, max_iter - n_iter)
        t0 = time.perf_counter()
        _kernels.em_run(proba64, y, prior, lam, steps, 0.0, parallel, n_chunks, accelerate, 0, 0)
        elapsed += time.perf_counter() - t0
        n_iter += steps
        gap = max(_kernels.em_gap(proba64, y, prior, lam), 0.0)
        history.append((elapsed, _objective(proba64, y, lam, prior, "reverse", "collision"), gap))
    converged = converged or (tol > 0 and gap <= tol)
    return PseudoLabelResult(y, n_iter, converged, history[-1][1], float(gap), history)


# --------------------------------------------------------------------------- PGD


def _pgd_step(y, g, eta, out):
    _kernels.project_simplex_rows(np.ascontiguousarray(y - eta * g), out)
    return out


def _backtrack(sigma, y, g, obj, eta, problem, buf):
    """Armijo backtracking for projected gradient (sufficient decrease test).

    Accepts the first ``eta`` (halving from ``2 * eta``) with
    ``L(y+) <= L(y) + grad.(y+ - y) + |y+ - y|^2 / (2 eta M)``; returns
    ``(eta, new objective)`` or ``(None, obj)`` when no step decreases L.
    """
    m = y.shape[0]
    slack = 8.0 * np.finfo(np.float64).eps * max(abs(obj), 1.0)
    eta = min(2.0 * eta, 1e12)
    for _ in range(80):
        _pgd_step(y, g, eta, buf)
        d = buf - y
        new = _objective(sigma, buf, *problem)
        bound = obj + (np.vdot(g, d) + np.vdot(d, d) / (2.0 * eta)) / m
        if new <= bound + slack:
            return eta, new
        eta *= 0.5
    return None, obj


def _solve_pgd(sigma, lam, prior, fairness, loss, max_iter, tol, init, step_size, record):
    """Projected gradient descent (sort-based simplex projection), no validation.

    A fixed ``step_size`` multiplies ``grad L`` of the mean objective (as in
    the paper's Table 1, so its effect scales with 1/M); it can leave the
    domain (an infinite objective), and then the last finite iterate is
    returned. ``step_size=None`` uses Armijo backtracking (monotone and
    convergent) with the step kept on the per-point scale ``M * grad L``.
    """
    problem = (lam, prior, fairness, loss)
    y = _start(sigma, init)
    buf = np.empty_like(y)
    obj = _objective(sigma, y, *problem)
    # eta multiplies the per-point gradient M * grad L
    eta = 1.0 if step_size is None else float(step_size) / sigma.shape[0]
    history = [] if record else None
    elapsed, n_iter, converged = 0.0, 0, False
    t0 = time.perf_counter()
    for _ in range(max_iter + 1):
        g = _grad_scaled(sigma, y, *problem)
        gap = _gap_from_grad(g, y)
        if record:
            elapsed += time.perf_counter() - t0
            history.append((elapsed, obj, gap))
            t0 = time.perf_counter()
        if (tol > 0 and gap <= tol) or n_iter == max_iter:
            converged = tol > 0 and gap <= tol
            break
        if step_size is None:
            eta, new = _backtrack(sigma, y, g, obj, eta, problem, buf)
            if eta is None:
                break
        else:
            _pgd_step(y, g, eta, buf)
            new = _objective(sigma, buf, *problem)
            if not np.isfinite(new):
                logger.debug("fixed-step PGD left the domain at iteration %d", n_iter)
                break
        y, buf = buf, y
        obj = new
        n_iter += 1
    return PseudoLabelResult(y, n_iter, converged, obj, gap, history)


# --------------------------------------------------------------------------- Sinkhorn


def _solve_sinkhorn(sigma, lam, prior, fairness, loss, max_iter, tol, power, record):
    """SeLa's balanced assignment: Sinkhorn-Knopp on ``sigma ** power``.

    Scales ``P = (sigma / max_k sigma)^power`` to row sums ``1/M`` and column
    sums ``prior``; stops when the column sums are within ``tol`` (max abs);
    returns the one-hot argmax of the scaled plan.
    """
    m, k = sigma.shape
    t0 = time.perf_counter()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        plan = (sigma / sigma.max(axis=1, keepdims=True)) ** power
        beta = np.ones(k)
        alpha = np.full(m, 1.0 / m)
        converged, n_iter, err = False, 0, np.inf
        while n_iter < max_iter:
            n_iter += 1
            alpha = (1.0 / m) / (plan @ beta)
            col = plan.T @ alpha
            err = float(np.max(np.abs(beta * col - prior)))
            if tol > 0 and err <= tol:
                converged = True
                break
            beta = np.where(col > 0, prior / col, 0.0)
    labels = np.argmax(plan * beta, axis=1)
    y = np.zeros_like(sigma)
    y[np.arange(m), labels] = 1.0
    elapsed = time.perf_counter() - t0
    obj = _objective(sigma, y, lam, prior, fairness, loss)
    gap = _gap_from_grad(_grad_scaled(sigma, y, lam, prior, fairness, loss), y)
    history = [(elapsed, obj, gap)] if record else None
    logger.debug("sinkhorn: %d iterations, marginal error %.3g", n_iter, err)
    return PseudoLabelResult(y, n_iter, converged, obj, gap, history)


# --------------------------------------------------------------------------- front


def _convergence_message(res, method, loss, fairness, lam, tol):
    msg = (f"solve_pseudo_labels(method={method!r}) did not converge in {res.n_iter} "
           f"iterations (gap {res.gap:.3g}, tol {tol:g}); increase max_iter or tol")
    if method == "pgd" and lam >= _DUAL_MIN_LAM:
        # the fairness term's curvature grows with lam, PGD's steps shrink with it
        msg += (f". Projected gradient slows down as lam grows (lam={lam:g})")
        if loss == "collision" and fairness == "reverse":
            msg += "; method='em' solves this problem for large lam"
    return msg


def _solve_batch(p, lam, prior, fairness="reverse", method="em", loss="collision",
                 max_iter=1000, tol=1e-6, out=None):
    """Per-batch core of :func:`solve_pseudo_labels` for the training loop; no input validation.

    Validate once per fit (with :func:`solve_pseudo_labels`'s checks, or
    :func:`skcce._simplex.check_prior` for the prior), then call this for every
    batch: it skips the front's checks and copies, never warns, and returns
    plain values.

    Parameters
    ----------
    p : ndarray of shape (M, K)
        C-contiguous float64 predictions, rows on the simplex (e.g.
        ``proba.detach().double().cpu().numpy()`` renormalised).
    lam : float
        Fairness weight, a Python float >= 0.
    prior : ndarray of shape (K,)
        Float64 prior summing to one (strictly positive for 'forward'), not
        None: ``skcce._simplex.check_prior(prior, K)`` gives it, uniform for None.
    fairness, method, loss : str
        A valid combination, as for :func:`solve_pseudo_labels`.
    max_iter : int, default=1000
    tol : float, default=1e-6
    out : ndarray of shape (M, K), default=None
        Buffer (any float dtype, e.g. float32 for a torch tensor made with
        ``torch.from_numpy``) that receives ``y``; a new float64 array when None.

    Returns
    -------
    y : ndarray of shape (M, K)
        ``out`` when given.
    converged : bool
    n_iter : int

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.solvers import _solve_batch
    >>> p = np.array([[0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    >>> buf = np.empty((3, 2), dtype=np.float32)
    >>> y, converged, n_iter = _solve_batch(p, 1.0, np.array([0.5, 0.5]), out=buf)
    >>> y is buf, converged, y.argmax(axis=1).tolist()
    (True, True, [0, 0, 1])
    """
    if method == "em":
        # The training loop's regime (lam of order 1, tol 1e-3, a cap of ~100 steps) keeps
        # EM alone below _DUAL_MIN_LAM, as skcce 0.1 did: EM reaches such a tolerance in a
        # few steps nearly always, and a hand-over in the rare slow batch would change seeded
        # fits without a measured gain. The rate-based hand-over serves the front's tight
        # tolerances (certified in the solver tests) and large lam.
        res = _solve_em(p, lam, prior, max_iter, tol, dual=lam >= _DUAL_MIN_LAM)
    elif method == "pgd":
        res = _solve_pgd(p, lam, prior, fairness, loss, max_iter, tol, None, None, False)
    else:
        res = _solve_sinkhorn(p, lam, prior, fairness, loss, max_iter, tol, 25.0, False)
    if out is None:
        return res.y, res.converged, res.n_iter
    out[...] = res.y
    return out, res.converged, res.n_iter


def solve_pseudo_labels(
    proba,
    lam,
    prior=None,
    fairness="reverse",
    method="em",
    loss="collision",
    *,
    max_iter=1000,
    tol=1e-6,
    init=None,
    step_size=None,
    power=25.0,
    record_history=False,
    accelerate=True,
    warn=True,
):
    r"""Solve the pseudo-label problem for fixed predictions (eqs. 10-11).

    Minimises, over :math:`y` with rows on the simplex,
    :math:`L(y) = \frac1M\sum_i H_2(y_i,\sigma_i) + \lambda KL(u\|\bar y)`
    (``fairness='reverse'``, eq. 11) or :math:`+\lambda KL(\bar y\|u)`
    (``'forward'``, eq. 10); ``loss='shannon'`` uses :math:`H(y_i,\sigma_i)`.
    The fairness term uses the mean over points, so the paper's
    :math:`\lambda = 100` at batch size 250 is ``lam = 0.4`` here.

    Parameters
    ----------
    proba : array-like of shape (M, K)
        Predictions :math:`\sigma`, rows on the simplex (zeros and ties
        allowed), K >= 2. Any float dtype: rows must sum to one within
        ``max(1e-4, eps)`` of that dtype (float16 rows are accepted), the
        solvers compute in float64, and ``y`` is returned in the input dtype.
    lam : float
        Fairness weight: a real number >= 0 (a 0-d array is accepted; a
        string raises a TypeError naming ``lam``). ``lam = 0`` leaves
        :math:`\frac1M\sum_i H_2(y_i, \sigma_i)`, minimised row by row by the
        one-hot argmax of :math:`\sigma_i` (paper Example 2: the loss is
        :math:`-\ln \sigma_i\cdot y_i` and a linear function of
        :math:`y_i` is maximised at a vertex; the same holds for Shannon's
        :math:`-\sum_k y_{ik}\ln\sigma_{ik}`); EM reaches it in one step, PGD
        converges to it, with a certified gap. Large ``lam`` tends to a
        balanced assignment; see ``method``.
    prior : array-like of shape (K,), default=None
        Prior cluster proportions :math:`u`; uniform when None. Zeros are
        allowed for 'reverse' only.
    fairness : {'reverse', 'forward'}, default='reverse'
        :math:`KL(u\|\bar y)` or :math:`KL(\bar y\|u)`.
    method : {'em', 'pgd', 'sinkhorn'}, default='em'
        'em': the paper's EM (E-step eq. 14, Newton M-step eqs. 16-17 from
        Lemma 1's end point, appendix C; see ``accelerate``), collision +
        reverse only. EM's steps shrink like ``1 / lam`` (its vanishing
        entries decrease by about ``lam / (lam + gap)`` per step), so from
        ``lam ~ 1`` on it can need several hundred iterations to a gap of
        1e-6. With ``tol > 0`` and a strictly positive prior, EM therefore
        measures the rate of its smallest gap (over the last half of its
        steps) from step 60 on (from step 20 for ``lam >= 10``) and, as soon
        as that rate predicts that it would not reach ``tol`` by step 120,
        hands over to a dual Newton method on the column constraint
        (entropic smoothing decreased to zero, see
        :func:`skcce._dual.solve_dual`; where the smoothing reaches the
        float64 resolution, as with many duplicated rows at large ``lam``,
        EM polishes the dual's iterate). Certified by the same gap, this
        reaches 1e-6 within 200 iterations for ``lam`` from 1 to 1e6 on the
        instances of the tests (softmax, Dirichlet and degenerate
        predictions, duplicated rows included, 256 x 10 and 1000 x 100) and
        of the benchmark. Where EM is fast enough (small ``lam``, or a loose
        ``tol`` such as the estimators' default ``solver_tol=1e-3``) it
        usually runs alone, as in the paper. A dual step costs several EM
        steps, more so as K grows, so the hand-over can take longer in wall
        time than EM alone would, for far fewer iterations (at a strict
        ``tol``, or for a rare slow batch at large K). Known slower
        cases: a prior with zeros keeps EM alone (hundreds of iterations from
        ``lam ~ 1`` on), and about as many clusters as points at
        ``lam = 1e6`` can stay above 1e-6 after 200 iterations.
        'pgd': projected gradient descent on any (loss, fairness); the
        solver for ``loss='shannon'``. 'sinkhorn': SeLa's balanced hard
        assignment (Sinkhorn-Knopp on ``proba ** power`` towards the
        prior); it does not minimise L, its ``objective`` and ``gap`` are
        those of the (loss, fairness, lam) problem at the one-hot result.
    loss : {'collision', 'shannon'}, default='collision'
    max_iter : int, default=1000
        Maximum number of iterations.
    tol : float, default=1e-6
        'em' and 'pgd' stop as soon as the Frank-Wolfe gap of the current
        iterate is ``<= tol``, which certifies ``L(y) - L* <= tol``.
        'sinkhorn' stops when the column sums match the prior within
        ``tol``. ``tol=0`` runs ``max_iter`` iterations.
    init : array-like of shape (M, K), default=None
        Warm start, rows on the simplex; ``proba`` when None. EM needs a
        strictly positive start (Property 1), so every method starts from
        ``(1 - 1e-3) * init + 1e-3 / K``.
    step_size : float, default=None
        PGD's fixed step on ``grad L`` (the paper's Table 1 uses 0.1 to 20);
        it may diverge. None uses Armijo backtracking, which converges.
    power : float, default=25.0
        Sinkhorn's sharpening exponent (SeLa's lambda).
    record_history : bool, default=False
        Record ``(seconds, objective, gap)`` at the start and after every
        iteration (after every two EM steps when accelerated); slower.
    accelerate : bool, default=True
        EM only: after every two EM steps, try a SQUAREM extrapolation
        (Varadhan and Roland, 2008) and keep it only if it does not increase
        L, so the objective still decreases monotonically; usually several
        times fewer iterations. False runs the paper's plain EM.
    warn : bool, default=True
        Emit a ConvergenceWarning when the stopping test is not met.

    Returns
    -------
    result : PseudoLabelResult
        ``y`` (float dtype of ``proba``), ``n_iter``, ``converged``,
        ``objective``, ``gap``, ``history``.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.solvers import solve_pseudo_labels
    >>> proba = np.array([[0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    >>> res = solve_pseudo_labels(proba, lam=1.0)
    >>> res.converged, res.gap <= 1e-6
    (True, True)
    >>> res.y.argmax(axis=1)
    array([0, 0, 1])
    """
    _check_options(lam, fairness, method, loss)
    _check_iter(max_iter, tol, step_size, power)
    in_dtype = np.asarray(proba).dtype
    arr = _check_proba(proba)
    sigma = arr.astype(np.float64, copy=False)
    u = _check_prior(prior, sigma.shape[1], fairness)
    y0 = None
    if init is not None:
        y0 = _check_proba(init, "init").astype(np.float64, copy=False)
        if y0.shape != sigma.shape:
            raise ValueError(f"init must have the shape of proba {sigma.shape}, got {y0.shape}")
    lam, max_iter, tol = float(lam), int(max_iter), float(tol)
    if method == "em":
        res = _solve_em(sigma, lam, u, max_iter, tol, y0, record_history, accelerate)
    elif method == "pgd":
        res = _solve_pgd(sigma, lam, u, fairness, loss, max_iter, tol, y0, step_size,
                         record_history)
    else:
        res = _solve_sinkhorn(sigma, lam, u, fairness, loss, max_iter, tol, power,
                              record_history)
    if warn and not res.converged and tol > 0:
        warnings.warn(_convergence_message(res, method, loss, fairness, lam, tol),
                      ConvergenceWarning, stacklevel=2)
    res.y = res.y.astype(in_dtype if in_dtype.kind == "f" else arr.dtype, copy=False)
    return res
