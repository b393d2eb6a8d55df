"""Re-measure the paper's Table 1: EM against projected gradient descent (PGD).

For K = 2, 20, 200 classes and M = 250 and 10,000 points, the pseudo-label
problem (collision cross-entropy + lam * KL(u || ybar), lam = 0.4, uniform
prior) is solved from the same start by

* EM: the solver's default (EM with SQUAREM extrapolation) and the paper's
  plain EM (Algorithm 1);
* PGD with the paper's three fixed step sizes (K = 2: 1, 10, 20; K = 20 and
  200: 0.1, 1, 5) and with the Armijo backtracking rule.

Each run stops at a Frank-Wolfe gap of 1e-4. The table gives seconds per
iteration, iterations and seconds to the gap, and the final gap (medians
over repeats). The cost of one plain EM iteration is reported as a ratio to
a numpy copy of the same M x K array, measured in the same run.

Predictions: ``sigma = softmax(3 * Z)`` with ``Z`` standard normal from
``numpy.random.default_rng(seed + 1000 * K + M)`` (seed 0 by default).

Two more sections: ``lam`` from 1 to 1e6 (1, 2, 4, 7, 10, 1e2, 1e4, 1e6,
uniform prior), where the default EM hands over to its dual Newton method
when its measured rate is too slow, against EM alone and PGD, each capped at
200 iterations (target: a gap of 1e-6), on softmax and Dirichlet(0.5)
predictions; and the per-call overhead of the public front
``solve_pseudo_labels`` against the unvalidated per-batch core
``_solve_batch`` on one 256 x 10 batch (medians over repeated calls).

Usage: ``python benchmarks/bench_solvers.py [--quick] [--output PATH]``; the
full run writes ``docs/benchmarks/solvers.md``, ``--quick`` a smoke run to the
temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine_description, write_markdown  # noqa: E402

from skcce import _kernels  # noqa: E402
from skcce.solvers import (  # noqa: E402
    _PARALLEL_MIN_SIZE,
    _solve_batch,
    _solve_em,
    _solve_pgd,
    _use_parallel,
    solve_pseudo_labels,
)

LAM = 0.4
TARGET_GAP = 1e-4
STEPS = {2: (1.0, 10.0, 20.0), 20: (0.1, 1.0, 5.0), 200: (0.1, 1.0, 5.0)}
PAPER_TABLE_1 = """\
| method | s/iter K2 | s/iter K20 | s/iter K200 | iters K2 | iters K20 | iters K200 \
| s K2 | s K20 | s K200 |
|---|---|---|---|---|---|---|---|---|---|
| PGD (eta_1) | 7.8e-4 | 2.9e-3 | 6.7e-2 | 326 | 742 | 540 | 0.25 | 2.20 | 36.25 |
| PGD (eta_2) | 9.3e-4 | 3.3e-3 | 6.8e-2 | 101 | 468 | 344 | 0.09 | 1.55 | 23.35 |
| PGD (eta_3) | 9.9e-4 | 3.2e-3 | 7.0e-2 | 24 | 202 | 180 | 0.02 | 0.65 | 12.60 |
| EM | 1.8e-3 | 1.6e-3 | 5.1e-3 | 25 | 53 | 71 | 0.04 | 0.09 | 0.36 |
"""


def make_proba(m, k, seed=0):
    """Seeded predictions ``softmax(3 Z)``, Z standard normal, shape (m, k)."""
    rng = np.random.default_rng(seed + 1000 * k + m)
    z = 3.0 * rng.standard_normal((m, k))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _median_time(fn, repeats, inner=1, clock=time.perf_counter):
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        times.append((clock() - t0) / inner)
    return float(np.median(times))


def em_iteration_cost(proba, repeats, parallel, clock=time.perf_counter):
    """Seconds of one plain EM iteration (difference of 21- and 1-iteration runs).

    None when the difference is not positive (timing noise swamps it)."""
    m, k = proba.shape
    prior = np.full(k, 1.0 / k)
    y0 = 0.999 * proba + 0.001 / k
    n_chunks = max(1, numba.get_num_threads())

    def run(n):
        y = y0.copy()
        _kernels.em_run(proba, y, prior, LAM, n, 0.0, parallel, n_chunks, False, 0, 0)

    run(2)
    t1 = _median_time(lambda: run(1), repeats, clock=clock)
    t21 = _median_time(lambda: run(21), repeats, clock=clock)
    return (t21 - t1) / 20.0 if t21 > t1 else None


def copy_cost(proba, repeats, clock=time.perf_counter):
    inner = max(1, int(2e7 // proba.size))
    proba.copy()
    return _median_time(proba.copy, repeats, inner, clock)


def _ratio(num, den):
    if num is None or not den > 0:
        return "n/a (noise)"
    x = num / den
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _runs(proba, repeats, max_iter, budget_s):
    """(label, step, function) for every solver of the table."""
    k = proba.shape[1]
    prior = np.full(k, 1.0 / k)
    out = [
        ("EM (default, SQUAREM)", "-", lambda n: _solve_em(proba, LAM, prior, n, TARGET_GAP)),
        (
            "EM (paper, plain)",
            "-",
            lambda n: _solve_em(proba, LAM, prior, n, TARGET_GAP, accelerate=False),
        ),
    ]
    for step in (*STEPS[k], None):
        label = "PGD (Armijo)" if step is None else "PGD (fixed)"
        out.append(
            (
                label,
                "adaptive" if step is None else f"{step:g}",
                lambda n, s=step: _solve_pgd(
                    proba, LAM, prior, "reverse", "collision", n, TARGET_GAP, None, s, False
                ),
            )
        )
    return out


def measure(proba, repeats, max_iter, budget_s):
    m, k = proba.shape
    rows = []
    for label, step, solve in _runs(proba, repeats, max_iter, budget_s):
        solve(2)  # warm-up: Numba compilation, caches
        t0 = time.perf_counter()
        probe = solve(3)
        per_iter = (time.perf_counter() - t0) / max(probe.n_iter, 1)
        cap = int(min(max_iter, max(10, budget_s / max(per_iter, 1e-9))))
        times, iters, gaps, reached = [], [], [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            res = solve(cap)
            times.append(time.perf_counter() - t0)
            iters.append(res.n_iter)
            gaps.append(res.gap)
            reached.append(bool(res.converged))
            if not res.converged and r == 0 and times[0] > budget_s / 2:
                break  # a capped slow run is not repeated
        sec = float(np.median(times))
        n_it = int(np.median(iters))
        rows.append(
            {
                "M": m,
                "K": k,
                "method": label,
                "step": step,
                "s/iter": sec / max(n_it, 1),
                "iters to 1e-4": n_it if all(reached) else f"> {n_it} (cap)",
                "s to 1e-4": sec if all(reached) else f"> {sec:.3g}",
                "final gap": float(np.median(gaps)),
                "_reached": all(reached),
                "_sec": sec,
            }
        )
        print(f"  {label:24s} step {step:>8s}: {rows[-1]['iters to 1e-4']} it, "
              f"{sec:.4g} s, gap {rows[-1]['final gap']:.2e}", flush=True)
    return rows


def make_dirichlet(m, k, seed=0):
    """Seeded Dirichlet(0.5) predictions, shape (m, k)."""
    return np.random.default_rng(seed + 7 + 1000 * k + m).dirichlet(np.full(k, 0.5), size=m)


def _large_lam_solvers(proba, lam, prior, cap):
    """(label, function) of the solvers compared for lam from 1 to 1e6."""

    def default():
        return _solve_em(proba, lam, prior, cap, 1e-6)

    def em_alone():
        return _solve_em(proba, lam, prior, cap, 1e-6, dual=False)

    def pgd():
        return _solve_pgd(proba, lam, prior, "reverse", "collision", cap, 1e-6, None, None, False)

    return (("EM (default: EM, dual Newton when EM is slow)", default),
            ("EM alone (paper's EM + SQUAREM)", em_alone),
            ("PGD (Armijo)", pgd))


def large_lam_rows(sizes, lams, seed, cap=200):
    """Gap after at most ``cap`` iterations for lam from 1 to 1e6 (issue 10 #11)."""
    rows = []
    for m, k in sizes:
        prior = np.full(k, 1.0 / k)
        for kind, make in (("softmax", make_proba), ("Dirichlet(0.5)", make_dirichlet)):
            proba = make(m, k, seed)
            for lam in lams:
                for label, solve in _large_lam_solvers(proba, lam, prior, cap):
                    t0 = time.perf_counter()
                    res = solve()
                    sec = time.perf_counter() - t0
                    rows.append({"M": m, "K": k, "predictions": kind, "lam": f"{lam:g}",
                                 "solver": label, "iterations": res.n_iter, "seconds": sec,
                                 "gap": res.gap, "gap <= 1e-6": "yes" if res.converged else "no"})
                    print(f"  lam={lam:g} {kind:15s} {label:45s} {res.n_iter:4d} it "
                          f"{sec:.3g} s gap {res.gap:.2e}", flush=True)
    return rows


def batch_overhead_rows(n_calls, seed):
    """Per-call seconds of the front and of the per-batch core, 256 x 10, same run.

    Two settings: one EM step (``max_iter=1, tol=0``), which isolates the
    fixed cost of a call, and a solve to a gap of 1e-6 (lam 0.4). Calls are
    interleaved, alternating which goes first, so both see the same load, and
    timed by this thread's CPU time: on a shared machine a call of a few
    milliseconds is often descheduled, which wall time would count.
    """
    proba = make_proba(256, 10, seed)
    prior = np.full(10, 0.1)
    out = np.empty((256, 10), dtype=np.float32)
    rows = []
    for setting, max_iter, tol in (("one EM step", 1, 0.0), ("solve to gap 1e-6", 1000, 1e-6)):
        calls = (
            ("solve_pseudo_labels (validated front)",
             lambda mi=max_iter, tl=tol: solve_pseudo_labels(proba, 0.4, prior, max_iter=mi,
                                                             tol=tl, warn=False)),
            ("_solve_batch (no validation, out= buffer)",
             lambda mi=max_iter, tl=tol: _solve_batch(proba, 0.4, prior, max_iter=mi, tol=tl,
                                                      out=out)),
        )
        for _, fn in calls:  # warm-up: compilation, caches
            fn()
        times = {label: [] for label, _ in calls}
        for i in range(n_calls):
            for label, fn in calls[::1 if i % 2 else -1]:
                t0 = time.thread_time()
                fn()
                times[label].append(time.thread_time() - t0)
        base = float(np.median(times[calls[1][0]]))
        for label, _ in calls:
            med = float(np.median(times[label]))
            rows.append({"setting (256 x 10, lam 0.4, EM)": setting, "call": label,
                         "median CPU s/call": med,
                         "microseconds above _solve_batch": (med - base) * 1e6,
                         "ratio to _solve_batch": f"{med / base:.3g}"})
    return rows


def _table(rows):
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _speedups(rows):
    out = []
    for m in sorted({r["M"] for r in rows}):
        sub = [r for r in rows if r["M"] == m and r["K"] == 200]
        if not sub:
            continue
        fixed = [r for r in sub if r["method"] == "PGD (fixed)"]
        best_fixed = min(fixed, key=lambda r: (not r["_reached"], r["_sec"]))
        armijo = next(r for r in sub if r["method"] == "PGD (Armijo)")
        for em in (r for r in sub if r["method"].startswith("EM")):
            ratio = best_fixed["_sec"] / em["_sec"]
            armijo_ratio = armijo["_sec"] / em["_sec"]
            out.append(
                {
                    "M": m,
                    "EM variant": em["method"],
                    "EM s to 1e-4": em["_sec"],
                    "best fixed-step PGD": f"step {best_fixed['step']}"
                    if best_fixed["_reached"]
                    else "none reached the gap",
                    "speedup vs best fixed PGD": f"{_ratio(ratio, 1.0)}x"
                    if best_fixed["_reached"]
                    else f"> {_ratio(ratio, 1.0)}x (lower bound: every fixed step capped)",
                    "speedup vs PGD (Armijo)": f"{_ratio(armijo_ratio, 1.0)}x"
                    if armijo["_reached"]
                    else f"> {_ratio(armijo_ratio, 1.0)}x (lower bound: PGD capped)",
                }
            )
    return out


def main(argv=None):
    """Run the benchmark and write its markdown report; returns the report text."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--output", default=None, help="markdown file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = (250,) if args.quick else (250, 10_000)
    classes = (2, 20) if args.quick else (2, 20, 200)
    max_iter = 300 if args.quick else 20_000
    budget_s = 2.0 if args.quick else 20.0
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.output:
        output = args.output
    elif args.quick:  # a smoke run does not overwrite the documented table
        output = os.path.join(tempfile.gettempdir(), "skcce_bench_solvers_quick.md")
    else:
        output = os.path.join(root, "docs", "benchmarks", "solvers.md")

    lam_sizes = ((256, 10),) if args.quick else ((256, 10), (1000, 100))
    lam_values = (2.0, 1e2, 1e6) if args.quick else (1.0, 2.0, 4.0, 7.0, 10.0, 1e2, 1e4, 1e6)
    n_calls = 50 if args.quick else 200
    load_start = os.getloadavg()[0]
    rows, cost_rows = [], []
    for m in sizes:
        for k in classes:
            print(f"M={m} K={k}", flush=True)
            proba = make_proba(m, k, args.seed)
            reps = max(repeats, 3)
            serial_s = em_iteration_cost(proba, reps, False)
            parallel_s = em_iteration_cost(proba, reps, True)
            copy_s = copy_cost(proba, reps)
            # CPU time of this thread: what the serial code costs when it is
            # not descheduled by other work on the machine
            serial_cpu = em_iteration_cost(proba, reps, False, time.thread_time)
            copy_cpu = copy_cost(proba, reps, time.thread_time)
            cost_rows.append(
                {
                    "M": m,
                    "K": k,
                    "numpy copy (s)": copy_s,
                    "EM iteration, serial (s)": serial_s if serial_s else "n/a",
                    "serial / copy": _ratio(serial_s, copy_s),
                    "serial / copy, CPU time": _ratio(serial_cpu, copy_cpu),
                    f"EM iteration, {numba.get_num_threads()} threads (s)": parallel_s
                    if parallel_s
                    else "n/a",
                    "threads / copy": _ratio(parallel_s, copy_s),
                    "solver default": "threads" if _use_parallel(m, k) else "serial",
                }
            )
            rows.extend(measure(proba, repeats, max_iter, budget_s))

    header = [
        __doc__.split("Usage:")[0].strip().split("\n", 1)[1].strip(),
        "",
        f"Machine: {machine_description()}",
        "",
        f"Command: `python benchmarks/bench_solvers.py{' --quick' if args.quick else ''}`; "
        f"repeats: {repeats}; a run is capped at {max_iter} iterations or about "
        f"{budget_s:g} s (a capped run shows '>').",
        "",
        "## Time to a Frank-Wolfe gap of 1e-4 (measured)",
    ]
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    text = write_markdown(output, "Pseudo-label solvers: EM vs PGD", "\n".join(header), public)
    extra = ["", "## Speedup at K = 200 (ratios from this run)", ""]
    speed = _speedups(rows)
    extra.append(_table(speed) if speed else "(K = 200 not run)")
    extra += ["", "## Cost of one plain EM iteration vs a numpy copy of the M x K array", ""]
    extra += [
        _table(cost_rows),
        "",
        "Seconds are wall-clock medians; on a machine shared with other work, wall time "
        "includes time the process waits for a core, so the CPU-time ratio (this "
        "thread's CPU time, serial EM) is given as well. "
        "Target: one EM iteration <= 10 copies. The EM rows of the first table use the "
        f"solver's default: threads from {_PARALLEL_MIN_SIZE} entries on, when the 1-minute "
        f"load average is below the thread count minus 0.5 (in this run: {load_start:.2f} "
        f"at the start, {os.getloadavg()[0]:.2f} at the end).",
        "",
    ]
    print("lam from 1 to 1e6", flush=True)
    lam_rows = large_lam_rows(lam_sizes, lam_values, args.seed)
    extra += [
        "## lam from 1 to 1e6: gap after at most 200 iterations (issue 10 #11)",
        "",
        "Uniform prior; every run starts from the predictions and stops at a gap of "
        "1e-6 or after 200 iterations (EM steps plus dual Newton steps for the default). "
        "As lam grows the problem tends to a balanced assignment; EM's vanishing entries "
        "then shrink by about lam / (lam + gap) per step, which slows EM from lam ~ 1 on, "
        "and the fairness term's curvature (about lam) stalls PGD. The default runs EM "
        "and, from step 60 on (20 from lam = 10 on), hands over to the dual Newton method "
        "as soon as the rate of EM's smallest gap over the last half of its steps predicts "
        "that it would not reach the gap by step 120; "
        "where the dual's smoothing reaches the float64 resolution, EM polishes the "
        "dual's iterate. Seconds are wall-clock: a dual Newton step costs several EM "
        "steps, more so as K grows.",
        "",
        _table(lam_rows),
        "",
    ]
    print("per-batch core overhead", flush=True)
    extra += [
        f"## Per-call overhead of the front vs the per-batch core (median of {n_calls} calls)",
        "",
        "The same 256 x 10 float64 batch and prior, calls interleaved in one run. The "
        "difference is the front's input validation, copies and result handling, paid "
        "once per batch by a training loop that calls `solve_pseudo_labels`.",
        "",
        _table(batch_overhead_rows(n_calls, args.seed)),
        "",
    ]
    extra += [
        "## Quoted from the paper (Table 1; not measured here)",
        "",
        "Zhang and Boykov, Table 1: their EM and PGD (step sizes eta_1..eta_3 as above), "
        "their machine and convergence criterion, M not stated there.",
        "",
        PAPER_TABLE_1,
    ]
    with open(output, "a", encoding="utf-8") as fh:
        fh.write("\n".join(extra))
    print(f"wrote {output}")
    return text + "\n".join(extra)


if __name__ == "__main__":
    main()
