"""Every benchmark script runs end to end in its ``--quick`` mode and writes a report.

The full runs take minutes to an hour and live outside the suite; these smoke
runs check that each script still works with the library as it is, that it
writes its markdown table (with the command that made it and the machine it
ran on), and that nothing lands in ``docs/`` while testing.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="no benchmarks/ folder (installed copy)"),
]

# script -> (option naming the report file, extra arguments, data file it needs or None)
SCRIPTS = {
    "bench_solvers": ("--output", ["--repeats", "1"], None),
    "bench_fixed_features": ("--output", ["--seeds", "1"], None),
    "sweep_defaults": ("--output", [], None),
    "bench_weak": ("--out", [], None),
    "bench_deep": ("--out", [], "mnist70k.npz"),
    "bench_deep_ablation": ("--out", [], "mnist70k.npz"),
    "bench_noisy_labels": ("--out", [], "mnist70k.npz"),
}


def _load(name):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their shared helpers
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_every_benchmark_is_smoke_tested():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_")}
    # fig1 is run by the CLI tests; update_readme only splices existing reports.
    assert scripts - {"fig1_collision_vs_shannon", "update_readme"} == set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_benchmark_quick_run_writes_its_report(name, tmp_path, capsys):
    option, extra, data = SCRIPTS[name]
    if data is not None:
        from skcce.datasets import find_data_file

        if find_data_file(data) is None:
            pytest.skip(f"{data} not found (set SKCCE_DATA to its folder)")
    docs_before = {p: p.stat().st_mtime for p in (REPO / "docs" / "benchmarks").glob("*")}
    report = tmp_path / f"{name}.md"
    module = _load(name)
    try:
        module.main(["--quick", option, str(report), *extra])
    except SystemExit as exc:
        assert exc.code in (0, None), f"{name} exited with {exc.code}"
    text = report.read_text()
    assert text.startswith("# "), text[:200]
    assert "Command:" in text and "Machine:" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) >= 3, f"{name}: no table rows in\n{text}"  # header, rule, >= 1 row
    assert table[1].startswith("|---") or table[1].startswith("| ---"), table[:2]
    # the quick run must not overwrite the committed reports
    docs_after = {p: p.stat().st_mtime for p in (REPO / "docs" / "benchmarks").glob("*")}
    assert docs_after == docs_before
