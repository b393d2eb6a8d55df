"""Numba kernels of the pseudo-label solvers (no input validation).

Everything here is a module-level ``@njit(cache=True)`` function working on
C-contiguous arrays. The kernels accept float32 and float64 arrays (Numba
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

_NEWTON_MAX_ITER = 100
_EPS = 2.220446049250313e-16


@njit(cache=True)
def _delta_sum(sigma, a, ref, big_a, delta):
    """Sum of y_k and its derivative for the interior M-step, in delta form.

    With ``ref`` the largest sigma_k among classes with a_k > 0 and
    ``delta = 1 + A - ref / x`` (x of eq. 16), the denominator of eq. 16 times
    ``ref`` is ``d_k = (ref - sigma_k)(1 + A) + sigma_k * delta``: a sum of two
    non-negative terms, so no cancellation occurs even when a_k is tiny.
    """
    h = 0.0
    hp = 0.0
    for k in range(sigma.shape[0]):
        if a[k] > 0.0:
            s = float(sigma[k])
            d = (ref - s) * (1.0 + big_a) + s * delta
            q = a[k] * ref / d
            h += q
            hp -= q * s / d
    return h, hp


@njit(cache=True)
def _interior_mstep(sigma, a, big_a, ref, out):
    """Solve eq. 17 on the classes with a_k > 0; y_k = 0 elsewhere.

    Newton's method on ``h(delta) = sum_k y_k`` (convex, decreasing) started
    at Lemma 1's left end point, where ``h >= 1``; from there the iterates
    increase monotonically. A bracket ``[lo, hi]`` with ``h(lo) >= 1 >= h(hi)``
    is kept and a step that leaves it is replaced by bisection.
    Returns the number of Newton iterations.
    """
    n = sigma.shape[0]
    # Lemma 1 in delta form: smallest delta with y_k <= 1 for every k.
    lo = 0.0
    for k in range(n):
        if a[k] > 0.0 and sigma[k] > 0.0:
            s = float(sigma[k])
            cand = (a[k] * ref - (ref - s) * (1.0 + big_a)) / s
            if cand > lo:
                lo = cand
    hi = big_a
    if lo > hi:
        lo = hi
    delta = lo
    it = 0
    for it in range(_NEWTON_MAX_ITER):
        h, hp = _delta_sum(sigma, a, ref, big_a, delta)
        h -= 1.0
        if h == 0.0:
            break
        if h > 0.0:
            lo = delta
        else:
            hi = delta
        if hp < 0.0:
            new = delta - h / hp
        else:
            new = 0.5 * (lo + hi)
        if not (new > lo and new < hi):
            new = 0.5 * (lo + hi)
        if abs(new - delta) <= 4.0 * _EPS * delta:
            delta = new
            break
        delta = new
    total = 0.0
    for k in range(n):
        if a[k] > 0.0:
            s = float(sigma[k])
            v = a[k] * ref / ((ref - s) * (1.0 + big_a) + s * delta)
            out[k] = v
            total += v
        else:
            out[k] = 0.0
    for k in range(n):
        out[k] = out[k] / total
    return it + 1


@njit(cache=True)
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
    n_newton : int
        Newton iterations used (0 for the closed-form cases).

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
        return 0
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
            return 0
    if ref <= 0.0:
        # sigma vanishes on every class with a_k > 0 (only reachable through
        # rounding): the fairness term alone decides, Example 1.
        for k in range(n):
            out[k] = a[k] / big_a
        return 0
    return _interior_mstep(sigma, a, big_a, ref, out)


@njit(cache=True)
def _em_row(sigma, y_old, coef, a, y_new):
    """Fused per-point work of one EM iteration.

    Builds ``a_k = coef_k * y_old_k`` (E-step folded in, ``coef_k = lam M u_k /
    colsum_k``), returns the point's Frank-Wolfe gap term of ``y_old`` times M,
    ``max_k(sigma_k / s + coef_k) - 1 - A`` with ``s = sigma . y_old``, and
    writes the M-step solution into ``y_new``.
    """
    n = sigma.shape[0]
    s = 0.0
    big_a = 0.0
    for k in range(n):
        yk = float(y_old[k])
        s += float(sigma[k]) * yk
        a[k] = coef[k] * yk
        big_a += a[k]
    gmax = -np.inf
    if s > 0.0:
        for k in range(n):
            g = float(sigma[k]) / s + coef[k]
            if g > gmax:
                gmax = g
        gap = gmax - 1.0 - big_a
    else:
        gap = np.inf
    mstep_point(sigma, a, y_new)
    return gap


@njit(cache=True)
def _em_chunk(sigma, y_old, coef, y_new, start, stop, col_part, c):
    a = np.empty(sigma.shape[1])
    gap = 0.0
    for i in range(start, stop):
        gap += _em_row(sigma[i], y_old[i], coef, a, y_new[i])
        for k in range(sigma.shape[1]):
            col_part[c, k] += y_new[i, k]
    return gap


@njit(cache=True, parallel=True)
def em_step_parallel(sigma, y_old, coef, y_new, col_part):
    """One EM iteration over all points, parallel over chunks of points.

    Parameters
    ----------
    sigma, y_old, y_new : 2-D arrays of shape (M, K)
    coef : 1-D float64 array of shape (K,)
        ``lam * M * u_k / sum_i y_old_ik``.
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
        gaps[c] = _em_chunk(sigma, y_old, coef, y_new, start, stop, col_part, c)
    return gaps.sum()


@njit(cache=True)
def em_step_serial(sigma, y_old, coef, y_new, col_part):
    """Serial twin of :func:`em_step_parallel` (no threading overhead)."""
    col_part[:] = 0.0
    return _em_chunk(sigma, y_old, coef, y_new, 0, sigma.shape[0], col_part, 0)


@njit(cache=True)
def _coef(colsum, prior, lam, m, out):
    for k in range(colsum.shape[0]):
        if prior[k] > 0.0 and colsum[k] > 0.0:
            out[k] = lam * m * prior[k] / colsum[k]
        else:
            out[k] = 0.0


@njit(cache=True)
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
        if prior[k] > 0.0 and colsum[k] <= 0.0:
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


@njit(cache=True)
def em_run(sigma, y, prior, lam, max_iter, tol, parallel, n_chunks):
    """EM iterations for the collision + reverse-KL problem, in place on ``y``.

    Each iteration is one fused pass: E-step weights from the column sums of
    the current iterate, the point's Frank-Wolfe gap of the current iterate,
    and the M-step. Stops before updating when ``tol > 0`` and the gap of the
    current iterate is ``<= tol``.

    Returns
    -------
    n_iter : int
        M-steps applied to produce the final ``y``.
    converged : bool
    gap : float
        Frank-Wolfe gap of the final ``y``.
    """
    m, n = sigma.shape
    col_part = np.zeros((n_chunks if parallel else 1, n))
    colsum = np.zeros(n)
    for i in range(m):
        for k in range(n):
            colsum[k] += y[i, k]
    coef = np.empty(n)
    cur = y
    nxt = np.empty_like(y)
    n_iter = 0
    odd = False
    converged = False
    gap = np.inf
    for _ in range(max_iter):
        _coef(colsum, prior, lam, m, coef)
        if parallel:
            gsum = em_step_parallel(sigma, cur, coef, nxt, col_part)
        else:
            gsum = em_step_serial(sigma, cur, coef, nxt, col_part)
        gap = max(gsum / m, 0.0)
        if tol > 0.0 and gap <= tol:
            converged = True
            break
        cur, nxt = nxt, cur
        odd = not odd
        n_iter += 1
        colsum[:] = 0.0
        for c in range(col_part.shape[0]):
            for k in range(n):
                colsum[k] += col_part[c, k]
    if not converged:
        gap = max(em_gap(sigma, cur, prior, lam), 0.0)
    if odd:
        y[:] = cur
    return n_iter, converged, gap


@njit(cache=True)
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


@njit(cache=True, parallel=True)
def project_simplex_rows(v, out):
    """Euclidean projection of each row of ``v`` onto the simplex (sort based).

    For a row v the projection is ``max(v - theta, 0)`` with
    ``theta = (sum_{j <= rho} v_(j) - 1) / rho`` over the sorted values and
    ``rho`` the largest j with ``v_(j) > theta_j``.
    """
    for i in prange(v.shape[0]):
        _project_row(v[i], out[i])
