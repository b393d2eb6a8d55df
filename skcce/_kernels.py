"""Numba kernels of the pseudo-label solvers (no input validation).

Everything here is a module-level ``@njit(cache=True)`` function working on
C-contiguous arrays. ``error_model="numpy"`` (a division by zero gives inf,
not an exception) lets LLVM vectorise the inner loops; callers guard the
cases that could divide by zero. The kernels accept float32 and float64 arrays (Numba
compiles one specialisation per dtype) but all scalar arithmetic (sums,
Newton iterations, gaps) is carried out in float64; results are stored in the
dtype of the output array. The public fronts live in :mod:`skcce.solvers`.

Conventions of the EM kernels (paper eqs. 14-17 and appendix C). The objective
is the *mean* over the M points,

    L(y) = (1/M) sum_i H2(y_i, sigma_i) + lam * KL(u || ybar),

so after multiplying by M the per-point M-step problem (eq. 15) reads

    -ln sum_k sigma_k y_k - sum_k a_k ln y_k,   a_k = lam * M * u_k * S_ik.

The paper's eq. 15 has no factor M: its lambda = 100 at batch size 250
corresponds to ``lam = 100 / 250 = 0.4`` here.
"""

import numpy as np
from numba import njit, prange

# reassoc/contract/arcp/nsz let LLVM vectorise reductions and divisions; no
# nnan/ninf, so infinities keep their meaning. Every kernel gets the same flags:
# LLVM does not inline across functions with different floating-point flags.
_FAST = {"reassoc", "contract", "arcp", "nsz"}
_JIT = {"cache": True, "error_model": "numpy", "fastmath": _FAST}
_NEWTON_MAX_ITER = 100
_EPS = 2.220446049250313e-16
_FLOOR = 1e-200
# dual_row: a Newton correction on t below this (relative) that no longer
# shrinks is rounding noise.
_ROOT_NOISE = 1e-9


@njit(**_JIT)
def _delta_sum_all(sigma, a, ref, big_a, delta, out):
    """Sum of y_k and its derivative in delta form, every a_k > 0.

    With ``ref`` the largest sigma_k among classes with a_k > 0 and
    ``delta = 1 + A - ref / x`` (x of eq. 16), the denominator of eq. 16 times
    ``ref`` is ``d_k = (ref - sigma_k)(1 + A) + sigma_k * delta``: a sum of two
    non-negative terms, so no cancellation occurs even when a_k is tiny.
    The unnormalised y_k are written into ``out``.
    """
    h = 0.0
    hp = 0.0
    one_a = 1.0 + big_a
    for k in range(sigma.shape[0]):
        s = float(sigma[k])
        r = 1.0 / ((ref - s) * one_a + s * delta)
        q = a[k] * ref * r
        out[k] = q
        h += q
        hp -= q * s * r
    return h, hp


@njit(**_JIT)
def _delta_sum_masked(sigma, a, ref, big_a, delta, out):
    """Twin of :func:`_delta_sum_all` that skips classes with a_k = 0."""
    h = 0.0
    hp = 0.0
    for k in range(sigma.shape[0]):
        if a[k] > 0.0:
            s = float(sigma[k])
            d = (ref - s) * (1.0 + big_a) + s * delta
            q = a[k] * ref / d
            out[k] = q
            h += q
            hp -= q * s / d
        else:
            out[k] = 0.0
    return h, hp


@njit(**_JIT)
def _lemma1_delta(sigma, a, big_a, ref):
    """Lemma 1's left end point in delta form: smallest delta with all y_k <= 1.

    Classes with ``a_k = 0`` are skipped, ``sigma_k = 0`` gives ``-inf``; the
    class holding ``ref`` gives ``a_ref > 0``, so the result is positive.
    """
    lo = 0.0
    one_a = 1.0 + big_a
    for k in range(sigma.shape[0]):
        s = float(sigma[k])
        if a[k] > 0.0:
            cand = (a[k] * ref - (ref - s) * one_a) / s
            lo = max(lo, cand)
    return min(lo, big_a)


@njit(**_JIT)
def _interior_mstep(sigma, a, big_a, ref, all_pos, out, delta_init):
    """Solve eq. 17 by :func:`_newton`; normalises ``out``, returns ``delta``."""
    delta, total = _newton(sigma, a, big_a, ref, all_pos, out, delta_init)
    inv = 1.0 / total
    for k in range(sigma.shape[0]):
        out[k] = out[k] * inv
    return delta


@njit(**_JIT)
def _newton(sigma, a, big_a, ref, all_pos, out, delta_init):
    """Solve eq. 17 on the classes with a_k > 0; y_k = 0 elsewhere.

    ``h(delta) = sum_k y_k`` is convex and decreasing on ``[lo, A]`` with
    ``h(lo) >= 1 >= h(A)``, ``lo`` = Lemma 1's left end point. Newton's method
    is applied to ``1 / h``, which is concave (a harmonic sum of linear
    functions of delta) and exactly linear when one class dominates, so it
    needs fewer steps than Newton on ``h``; from the left end point the
    iterates still increase monotonically to the root.
    A positive warm start ``delta_init`` (EM passes the previous iteration's
    value), clipped to ``A``, replaces the cold start; a step that leaves the
    bracket is replaced by bisection. Returns the solution's ``delta`` and
    ``sum_k y_k`` there (1 up to 1e-12); ``out`` holds the unnormalised y.
    """
    if delta_init > 0.0:
        # h(0+) = +inf >= 1, so 0 is a valid left end of the bracket; a start
        # at or right of the root is fine too (one step lands left of it).
        lo, delta = 0.0, min(delta_init, big_a)
    else:
        lo = _lemma1_delta(sigma, a, big_a, ref)
        delta = lo
    if all_pos:
        return _newton_all(sigma, a, big_a, ref, out, lo, delta)
    return _newton_masked(sigma, a, big_a, ref, out, lo, delta)


@njit(**_JIT)
def _newton_update(h, hp, delta, lo, hi):
    """Safeguarded Newton step on 1/h; returns (new delta, lo, hi, stop)."""
    if h > 0.0:
        lo = delta
    else:
        hi = delta
    new = delta - h * (1.0 + h) / hp if hp < 0.0 else 0.5 * (lo + hi)
    if not (new > lo and new < hi):
        new = 0.5 * (lo + hi)
    return new, lo, hi, abs(new - delta) <= 4.0 * _EPS * delta


@njit(**_JIT)
def _newton_all(sigma, a, big_a, ref, out, lo, delta):
    """:func:`_newton` when every a_k > 0 (kept apart: it is the hot loop)."""
    hi = big_a
    h = 0.0
    for _ in range(_NEWTON_MAX_ITER):
        h, hp = _delta_sum_all(sigma, a, ref, big_a, delta, out)
        h -= 1.0
        if abs(h) <= 1e-12:
            break
        delta, lo, hi, stop = _newton_update(h, hp, delta, lo, hi)
        if stop:
            break
    return delta, 1.0 + h


@njit(**_JIT)
def _newton_masked(sigma, a, big_a, ref, out, lo, delta):
    """:func:`_newton` skipping classes with a_k = 0."""
    hi = big_a
    h = 0.0
    for _ in range(_NEWTON_MAX_ITER):
        h, hp = _delta_sum_masked(sigma, a, ref, big_a, delta, out)
        h -= 1.0
        if abs(h) <= 1e-12:
            break
        delta, lo, hi, stop = _newton_update(h, hp, delta, lo, hi)
        if stop:
            break
    return delta, 1.0 + h


@njit(**_JIT)
def mstep_point(sigma, a, out):
    """M-step of the EM for one point (paper eqs. 15-17 and appendix C).

    Minimises ``-ln(sigma . y) - sum_k a_k ln y_k`` over the simplex.

    Parameters
    ----------
    sigma : 1-D array of shape (K,)
        Prediction of the point, on the simplex (zeros and ties allowed).
    a : 1-D float64 array of shape (K,)
        Non-negative weights ``a_k = lam * M * u_k * S_ik``.
    out : 1-D array of shape (K,)
        Receives the minimiser y.

    Returns
    -------
    delta : float
        ``1 + A - ref / x`` at the solution (x of eq. 16, ``ref`` the largest
        sigma_k with a_k > 0), or -1 for the closed-form cases.

    Notes
    -----
    * ``A = sum a = 0`` (lam = 0): the one-hot argmax of sigma (first index on
      ties), paper Example 2.
    * Some ``a_k = 0`` (appendix C): with ``c = argmax_{a_k = 0} sigma_k``, the
      closed form ``y_k = a_k / ((1 + A)(1 - sigma_k / sigma_c))``,
      ``y_c = 1 - sum_k y_k`` holds when ``sigma_c`` exceeds every sigma_k
      with a_k > 0 and ``y_c > 0``; otherwise the KKT conditions give
      ``y_c = 0`` and the interior problem on ``{k : a_k > 0}`` is solved.
    * All ``a_k > 0``: the interior solution of eq. 17 by safeguarded Newton.
    """
    return _mstep(sigma, a, out, -1.0)


@njit(**_JIT)
def _mstep(sigma, a, out, delta_init):
    """Body of :func:`mstep_point`; returns the interior ``delta`` or -1."""
    big_a, smax, n_zero = _scan(sigma, a)
    if n_zero == 0 and smax > 0.0:
        return _interior_mstep(sigma, a, big_a, smax, True, out, delta_init)
    return _mstep_general(sigma, a, out, delta_init)


@njit(**_JIT)
def _scan(sigma, a):
    big_a = 0.0
    smax = 0.0
    n_zero = 0
    for k in range(sigma.shape[0]):
        big_a += a[k]
        smax = max(smax, float(sigma[k]))
        n_zero += a[k] <= 0.0
    return big_a, smax, n_zero


@njit(**_JIT)
def _mstep_general(sigma, a, out, delta_init):
    """M-step with some ``a_k = 0`` (appendix C) or ``A = 0`` (Example 2)."""
    n = sigma.shape[0]
    big_a = 0.0
    ref = -1.0
    c = -1
    sig_c = -1.0
    best = 0
    for k in range(n):
        s = float(sigma[k])
        if s > sigma[best]:
            best = k
        if a[k] > 0.0:
            big_a += a[k]
            if s > ref:
                ref = s
        elif s > sig_c:
            sig_c = s
            c = k
    if big_a <= 0.0:
        for k in range(n):
            out[k] = 0.0
        out[best] = 1.0
        return -1.0
    if c >= 0 and sig_c > ref:
        # Appendix C closed form: the remaining mass goes to class c.
        s0 = 0.0
        for k in range(n):
            if a[k] > 0.0:
                s0 += a[k] * sig_c / ((sig_c - float(sigma[k])) * (1.0 + big_a))
        if s0 < 1.0:
            for k in range(n):
                if a[k] > 0.0:
                    out[k] = a[k] * sig_c / ((sig_c - float(sigma[k])) * (1.0 + big_a))
                else:
                    out[k] = 0.0
            out[c] = 1.0 - s0
            return -1.0
    if ref <= 0.0:
        # sigma vanishes on every class with a_k > 0 (only reachable through
        # rounding): the fairness term alone decides, Example 1.
        for k in range(n):
            out[k] = a[k] / big_a
        return -1.0
    return _interior_mstep(sigma, a, big_a, ref, c < 0, out, delta_init)


@njit(**_JIT)
def _estep_row(sigma, y_old, inv_s, coef, a):
    """E-step weights ``a_k = coef_k y_k``, their sum, and ``max_k(sigma_k/s + coef_k)``."""
    big_a = 0.0
    gmax = -np.inf
    for k in range(sigma.shape[0]):
        a[k] = coef[k] * float(y_old[k])
        big_a += a[k]
        gmax = max(gmax, float(sigma[k]) * inv_s + coef[k])
    return big_a, gmax


@njit(**_JIT)
def _em_row(sigma, y_old, s_old, coef, a, y_new, delta_init, smax, all_pos, acc):
    """Fused per-point work of one EM iteration.

    Builds ``a_k = coef_k * y_old_k`` (E-step folded in, ``coef_k = lam M u_k /
    colsum_k``) and the point's Frank-Wolfe gap term of ``y_old`` times M,
    ``max_k(sigma_k / s + coef_k) - 1 - A`` with ``s = sigma . y_old``
    (``s_old``, kept from the step that produced ``y_old``); writes the M-step
    solution into ``y_new`` (floored, see :func:`_floor_accumulate`) and adds
    it to ``acc``. Returns the gap term, the M-step's ``delta`` (next warm
    start) and ``sigma . y_new``. ``all_pos`` says that every ``coef_k > 0``,
    so (iterates being positive) every a_k > 0 and the interior Newton solve
    applies directly with ``ref = smax``.
    """
    inv_s = 1.0 / s_old if s_old > 0.0 else 0.0
    big_a, gmax = _estep_row(sigma, y_old, inv_s, coef, a)
    gap = gmax - 1.0 - big_a if s_old > 0.0 else np.inf
    if all_pos and smax > 0.0 and big_a > 0.0:
        delta, total = _newton(sigma, a, big_a, smax, True, y_new, delta_init)
        s_new = _floor_accumulate(y_new, 1.0 / total, acc, sigma)
    else:
        delta = _mstep(sigma, a, y_new, delta_init)
        s_new = _floor_accumulate(y_new, 1.0, acc, sigma)
    return gap, delta, s_new


@njit(**_JIT)
def _em_chunk(sigma, y_old, s_old, coef, y_new, s_new, delta, smax, start, stop, col_part, c):
    a = np.empty(sigma.shape[1])
    all_pos = True
    for k in range(coef.shape[0]):
        if not coef[k] > 0.0:
            all_pos = False
    gap = 0.0
    for i in range(start, stop):
        g, delta[i], s_new[i] = _em_row(
            sigma[i], y_old[i], s_old[i], coef, a, y_new[i], delta[i], smax[i], all_pos,
            col_part[c],
        )
        gap += g
    return gap


@njit(**_JIT)
def _floor_accumulate(y_row, scale, acc, sigma):
    """Scale a row, floor it at ``_FLOOR``, add it to the column sums; returns ``sigma . y``.

    EM shrinks vanishing entries geometrically; flooring keeps them out of
    the subnormal range (slow arithmetic) and keeps every a_k > 0 (Property
    1's positive iterates). The floor's effect on the objective is far below
    the float64 resolution.
    """
    s = 0.0
    for k in range(y_row.shape[0]):
        v = max(y_row[k] * scale, _FLOOR)
        y_row[k] = v
        acc[k] += v
        s += float(sigma[k]) * v
    return s


@njit(**_JIT)
def row_dots(sigma, y, out):
    """``out_i = sigma_i . y_i``."""
    for i in range(sigma.shape[0]):
        s = 0.0
        for k in range(sigma.shape[1]):
            s += float(sigma[i, k]) * float(y[i, k])
        out[i] = s


@njit(parallel=True, **_JIT)
def em_step_parallel(sigma, y_old, s_old, coef, y_new, s_new, delta, smax, col_part):
    """One EM iteration over all points, parallel over chunks of points.

    Parameters
    ----------
    sigma, y_old, y_new : 2-D arrays of shape (M, K)
    s_old, s_new : 1-D float64 arrays of shape (M,)
        ``sigma_i . y_old_i`` (input) and ``sigma_i . y_new_i`` (output).
    coef : 1-D float64 array of shape (K,)
        ``lam * M * u_k / sum_i y_old_ik``.
    delta : 1-D float64 array of shape (M,)
        Per-point Newton warm starts (negative: none); updated in place.
    smax : 1-D float64 array of shape (M,)
        Row maxima of ``sigma``.
    col_part : 2-D float64 array of shape (n_chunks, K)
        Zeroed here, receives per-chunk column sums of ``y_new``.

    Returns
    -------
    gap_sum : float
        ``M`` times the Frank-Wolfe gap of ``y_old``.
    """
    m = sigma.shape[0]
    n_chunks = col_part.shape[0]
    col_part[:] = 0.0
    gaps = np.zeros(n_chunks)
    for c in prange(n_chunks):
        start = (m * c) // n_chunks
        stop = (m * (c + 1)) // n_chunks
        gaps[c] = _em_chunk(
            sigma, y_old, s_old, coef, y_new, s_new, delta, smax, start, stop, col_part, c
        )
    return gaps.sum()


@njit(**_JIT)
def em_step_serial(sigma, y_old, s_old, coef, y_new, s_new, delta, smax, col_part):
    """Serial twin of :func:`em_step_parallel` (no threading overhead)."""
    col_part[:] = 0.0
    m = sigma.shape[0]
    return _em_chunk(sigma, y_old, s_old, coef, y_new, s_new, delta, smax, 0, m, col_part, 0)


@njit(**_JIT)
def _coef(colsum, prior, lam, m, out):
    for k in range(colsum.shape[0]):
        if prior[k] > 0.0 and colsum[k] > 0.0:
            out[k] = lam * m * prior[k] / colsum[k]
        else:
            out[k] = 0.0


@njit(**_JIT)
def em_gap(sigma, y, prior, lam):
    """Frank-Wolfe gap of the collision + reverse-KL objective at ``y``."""
    m, n = sigma.shape
    colsum = np.zeros(n)
    for i in range(m):
        for k in range(n):
            colsum[k] += y[i, k]
    coef = np.empty(n)
    _coef(colsum, prior, lam, m, coef)
    for k in range(n):
        if lam > 0.0 and prior[k] > 0.0 and colsum[k] <= 0.0:
            return np.inf
    total = 0.0
    for i in range(m):
        s = 0.0
        big_a = 0.0
        for k in range(n):
            s += float(sigma[i, k]) * float(y[i, k])
            big_a += coef[k] * float(y[i, k])
        if s <= 0.0:
            return np.inf
        gmax = -np.inf
        for k in range(n):
            g = float(sigma[i, k]) / s + coef[k]
            if g > gmax:
                gmax = g
        total += gmax - 1.0 - big_a
    return total / m


@njit(**_JIT)
def _em_apply(sigma, src, dst, colsum, s_src, s_dst, prior, lam, work, parallel):
    """One EM step ``src -> dst``; ``colsum`` holds the column sums of ``src``
    on entry and of ``dst`` on exit, ``s_src``/``s_dst`` the row products with
    sigma. Returns the Frank-Wolfe gap of ``src``."""
    coef, delta, smax, col_part = work
    m = sigma.shape[0]
    _coef(colsum, prior, lam, m, coef)
    if parallel:
        gsum = em_step_parallel(sigma, src, s_src, coef, dst, s_dst, delta, smax, col_part)
    else:
        gsum = em_step_serial(sigma, src, s_src, coef, dst, s_dst, delta, smax, col_part)
    colsum[:] = 0.0
    for c in range(col_part.shape[0]):
        colsum += col_part[c]
    return max(gsum / m, 0.0)


@njit(**_JIT)
def _objective_reverse(dots, colsum, prior, lam):
    """``L(y)`` for collision + reverse KL from ``dots_i = sigma_i . y_i`` and
    the column sums of y."""
    m = dots.shape[0]
    data = 0.0
    for i in range(m):
        data -= np.log(dots[i])
    fair = 0.0
    for k in range(colsum.shape[0]):
        if prior[k] > 0.0:
            fair += prior[k] * np.log(prior[k] * m / colsum[k])
    return data / m + lam * fair


@njit(**_JIT)
def _squarem_norms(y0, y1, y2):
    sr = 0.0
    sv = 0.0
    for i in range(y0.shape[0]):
        for k in range(y0.shape[1]):
            r = y1[i, k] - y0[i, k]
            v = y2[i, k] - 2.0 * y1[i, k] + y0[i, k]
            sr += r * r
            sv += v * v
    return sr, sv


@njit(**_JIT)
def _squarem_point(y0, y1, y2, alpha, out, colsum, sigma, dots):
    """``y0 - 2 alpha r + alpha^2 v`` kept above ``y2 / 100``, rows renormalised."""
    colsum[:] = 0.0
    for i in range(y0.shape[0]):
        tot = 0.0
        for k in range(y0.shape[1]):
            r = y1[i, k] - y0[i, k]
            v = y2[i, k] - 2.0 * y1[i, k] + y0[i, k]
            x = max(y0[i, k] - 2.0 * alpha * r + alpha * alpha * v, 0.01 * y2[i, k])
            out[i, k] = x
            tot += x
        inv = 1.0 / tot
        s = 0.0
        for k in range(y0.shape[1]):
            out[i, k] *= inv
            colsum[k] += out[i, k]
            s += float(sigma[i, k]) * out[i, k]
        dots[i] = s


@njit(**_JIT)
def _squarem_cycle(sigma, bufs, sums, dots, idx, prior, lam):
    """Extrapolate from the last three EM iterates (SQUAREM, scheme S3).

    ``idx = (i0, i1, i2, ip)`` index ``bufs``/``sums``/``dots``. The step length
    ``alpha = -|r| / |v|`` (at most -1) is halved towards -1 until the
    extrapolated point's objective is not above that of ``y2``; returns the
    index of the accepted point (``i2`` when extrapolation does not help).
    """
    i0, i1, i2, ip = idx
    sr, sv = _squarem_norms(bufs[i0], bufs[i1], bufs[i2])
    if not sv > 0.0:
        return i2
    alpha = min(-np.sqrt(sr / sv), -1.0)
    l2 = _objective_reverse(dots[i2], sums[i2], prior, lam)
    for _ in range(6):
        if alpha >= -1.0:
            break
        _squarem_point(bufs[i0], bufs[i1], bufs[i2], alpha, bufs[ip], sums[ip], sigma, dots[ip])
        if _objective_reverse(dots[ip], sums[ip], prior, lam) <= l2:
            return ip
        alpha = 0.5 * (alpha - 1.0)
    return i2


# EM's rate is measured over the last half of its steps, at least this many
# (even: whole SQUAREM cycles).
EM_RATE_WINDOW = 10


@njit(**_JIT)
def em_rate_window(n_iter):
    """Steps over which EM's rate is measured at step ``n_iter`` (even)."""
    return max(EM_RATE_WINDOW, 2 * (n_iter // 4))


@njit(**_JIT)
def em_too_slow(best, best_before, window, n_iter, tol, budget):
    """Whether EM is predicted to miss ``tol`` by step ``budget``.

    ``best`` is the smallest gap of the iterates (at the starts of SQUAREM
    cycles) up to step ``n_iter``, ``best_before`` the same ``window`` steps
    earlier; the prediction extrapolates their geometric rate (the smallest
    gap, as SQUAREM's gaps jump up and down). A gap that did not decrease
    over the window predicts never.
    """
    if best <= tol:
        return False
    if not best < best_before:
        return True
    per_step = np.log(best_before / best) / window
    return n_iter + np.log(best / tol) / per_step > budget


@njit(**_JIT)
def em_run(sigma, y, prior, lam, max_iter, tol, parallel, n_chunks, accelerate, warmup, budget):
    """EM iterations for the collision + reverse-KL problem, in place on ``y``.

    Each EM step is one fused pass: E-step weights from the column sums of
    the current iterate, the Frank-Wolfe gap of the current iterate, and the
    M-step. Stops before updating when ``tol > 0`` and the gap of the current
    iterate is ``<= tol``. With ``accelerate``, every two EM steps are
    followed by a SQUAREM extrapolation (Varadhan and Roland, 2008) that is
    kept only when it does not increase the objective, so the objective
    still decreases monotonically. With ``budget > 0`` (and ``tol > 0``), EM
    also stops, from step ``warmup`` on and at the start of a SQUAREM cycle,
    as soon as :func:`em_too_slow` predicts that it will not reach ``tol``
    by step ``budget``.

    Returns
    -------
    n_iter : int
        EM (M-)steps applied.
    converged : bool
    gap : float
        Frank-Wolfe gap of the final ``y``.
    """
    m, n = sigma.shape
    smax = np.empty(m)
    for i in range(m):
        smax[i] = float(sigma[i].max())
    work = (np.empty(n), np.full(m, -1.0), smax, np.zeros((n_chunks if parallel else 1, n)))
    n_buf = 4 if accelerate else 2
    bufs = np.empty((n_buf, m, n))
    sums = np.zeros((n_buf, n))
    dots = np.empty((n_buf, m))
    watch = budget > 0 and tol > 0.0
    best = np.empty(max_iter + 1 if watch else 0)  # smallest gap at cycle starts
    bufs[0] = y
    for i in range(m):
        sums[0] += y[i]
    row_dots(sigma, y, dots[0])
    a0, a1, a2, ap = 0, 1, 2, 3
    n_iter, converged, stopped, gap = 0, False, False, np.inf
    while n_iter < max_iter:
        gap = _em_from(sigma, bufs, sums, dots, a0, a1, prior, lam, work, parallel)
        if tol > 0.0 and gap <= tol:
            converged = True
            break
        if watch:
            best[n_iter] = gap if n_iter == 0 else min(gap, best[n_iter - (2 if accelerate else 1)])
            window = em_rate_window(n_iter)
            if n_iter >= max(warmup, window) and em_too_slow(
                best[n_iter], best[n_iter - window], window, n_iter, tol, budget
            ):
                stopped = True
                break
        n_iter += 1
        if not accelerate or n_iter >= max_iter:
            a0, a1 = a1, a0
            continue
        gap = _em_from(sigma, bufs, sums, dots, a1, a2, prior, lam, work, parallel)
        if tol > 0.0 and gap <= tol:
            a0, a1 = a1, a0
            converged = True
            break
        n_iter += 1
        best_point = _squarem_cycle(sigma, bufs, sums, dots, (a0, a1, a2, ap), prior, lam)
        if best_point == ap:
            a0, ap = ap, a0
        else:
            a0, a2 = a2, a0
    if not (converged or stopped):
        gap = max(em_gap(sigma, bufs[a0], prior, lam), 0.0)
    y[:] = bufs[a0]
    return n_iter, converged, gap


@njit(**_JIT)
def _em_from(sigma, bufs, sums, dots, src, dst, prior, lam, work, parallel):
    sums[dst] = sums[src]
    return _em_apply(
        sigma, bufs[src], bufs[dst], sums[dst], dots[src], dots[dst], prior, lam, work, parallel
    )


@njit(**_JIT)
def _project_row(v, out):
    n = v.shape[0]
    srt = np.sort(v.astype(np.float64))[::-1]
    csum = 0.0
    theta = 0.0
    for j in range(n):
        csum += srt[j]
        t = (csum - 1.0) / (j + 1)
        if srt[j] - t > 0.0:
            theta = t
    for k in range(n):
        x = float(v[k]) - theta
        out[k] = x if x > 0.0 else 0.0


@njit(**_JIT)
def project_simplex_rows(v, out):
    """Euclidean projection of each row of ``v`` onto the simplex (sort based).

    For a row v the projection is ``max(v - theta, 0)`` with
    ``theta = (sum_{j <= rho} v_(j) - 1) / rho`` over the sorted values and
    ``rho`` the largest j with ``v_(j) > theta_j``. Serial: PGD is the
    baseline, and at mini-batch sizes threading costs more than it saves.
    """
    for i in range(v.shape[0]):
        _project_row(v[i], out[i])


# --------------------------------------------------------------------------- dual (large lam)
#
# Row problem of the entropic dual (see skcce.solvers._solve_dual): for prices b
# (the column multipliers, up to a common shift) and a smoothing eps > 0,
#
#     min_{y in simplex} -ln(sigma . y) - b . y + eps * sum_k y_k ln y_k,
#
# whose solution is y = softmax((b + t sigma) / eps) with t = 1 / (sigma . y), the
# root of F(t) = t * f(t) - 1, f(t) = sigma . softmax((b + t sigma) / eps).
# f increases with t (f' = Var_y(sigma) / eps), so F has a single root in
# [1 / max(sigma), 1 / f(1 / max(sigma))].


@njit(**_JIT)
def _softmax_moments(sigma, b, eps, t, y):
    """``y = softmax((b + t sigma) / eps)``; returns ``(sigma . y, Var_y(sigma), sum y ln y)``."""
    n = sigma.shape[0]
    zmax = -np.inf
    for k in range(n):
        z = (b[k] + t * float(sigma[k])) / eps
        y[k] = z
        zmax = max(zmax, z)
    tot = 0.0
    ez = 0.0
    for k in range(n):
        z = y[k] - zmax
        e = np.exp(z)
        y[k] = e
        tot += e
        ez += e * z
    inv = 1.0 / tot
    f = 0.0
    for k in range(n):
        y[k] *= inv
        f += y[k] * float(sigma[k])
    v = 0.0
    for k in range(n):
        d = float(sigma[k]) - f
        v += y[k] * d * d
    return f, v, ez * inv - np.log(tot)


@njit(**_JIT)
def dual_row(sigma, b, eps, t0, y):
    """Solve the entropic row problem for one point by safeguarded Newton on ``t``.

    ``t0`` is a warm start (used when above the bracket's lower end; the
    upper end, ``1 / f(lo)``, is then computed only when a Newton step is
    rejected). Writes ``y`` and returns
    ``(t, sigma . y, Var_y(sigma), sum_k y_k ln y_k)``.
    """
    smax = 0.0
    for k in range(sigma.shape[0]):
        smax = max(smax, float(sigma[k]))
    lo = 1.0 / smax
    if t0 > lo:
        t, hi = t0, np.inf
    else:
        f, v, ent = _softmax_moments(sigma, b, eps, lo, y)
        t, hi = lo, (1.0 / f if f > 0.0 else np.inf)
    last = np.inf
    last_step = np.inf
    for _ in range(200):
        f, v, ent = _softmax_moments(sigma, b, eps, t, y)
        excess = t * f - 1.0
        # t f = 1 to rounding: t is then within |excess| (relative) of the
        # root, as d(t f)/dt >= f; a further step would only chase rounding.
        if abs(excess) <= 8.0 * _EPS:
            break
        if excess < 0.0:
            lo = t
        else:
            hi = t
        slope = f + t * v / eps
        new = t - excess / slope if slope > 0.0 else np.nan
        step = abs(new - t)
        # t is the root to rounding: the Newton correction is below the
        # resolution of t, or tiny and no longer shrinking (F's rounding,
        # amplified by about t / eps, keeps |F| above 8 eps; bisecting on it
        # would only shrink the bracket, about 50 more passes).
        if step <= 4.0 * _EPS * t or (step <= _ROOT_NOISE * t and step >= 0.5 * last_step):
            break
        # F is sigmoid-like for small eps, where Newton can cycle inside the
        # bracket: bisect unless |F| at least halves.
        if not (new > lo and new < hi) or abs(excess) > 0.5 * last:
            if hi == np.inf:  # the bracket's upper end, t* <= 1 / f(lo), on demand
                f_lo = _softmax_moments(sigma, b, eps, lo, y)[0]
                hi = 1.0 / f_lo if f_lo > 0.0 else np.inf
            new = 0.5 * (lo + hi) if hi < np.inf else 2.0 * t
            last_step = np.inf
        else:
            last_step = step
        last = abs(excess)
        if abs(new - t) <= 4.0 * _EPS * t:
            t = new
            f, v, ent = _softmax_moments(sigma, b, eps, t, y)
            break
        t = new
    return t, f, v, ent


@njit(**_JIT)
def dual_rows(sigma, b, eps, t, y, f, v, ent):
    """:func:`dual_row` for every point; ``t`` (warm starts) is updated in place."""
    for i in range(sigma.shape[0]):
        t[i], f[i], v[i], ent[i] = dual_row(sigma[i], b, eps, t[i], y[i])
