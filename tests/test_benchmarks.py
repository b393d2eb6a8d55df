"""Every benchmark script runs end to end in its ``--quick`` mode and writes a report.

The full runs take minutes to an hour and live outside the suite; these smoke
runs check that each script still works with the library as it is, that it
writes its markdown table (with the command that made it and the machine it
ran on), and that nothing lands in ``docs/`` while testing.
"""

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="no benchmarks/ folder (installed copy)"),
]

# Tests that need the data set SKCCE_DATA; CI and developers keep it in ../shared/data.
SHARED_DATA = REPO.parent / "shared" / "data"

# script -> (extra arguments, data file it needs or None, option naming the output when the
# script writes a figure before its report: those figures do not go through _common yet)
SCRIPTS = {
    "bench_solvers": (["--repeats", "1"], None, None),
    "bench_fixed_features": (["--seeds", "1"], None, None),
    "sweep_defaults": ([], None, None),
    "bench_weak": ([], None, None),
    "bench_deep": ([], "mnist70k.npz", None),
    "bench_deep_ablation": ([], "mnist70k.npz", None),
    "bench_noisy_labels": ([], "mnist70k.npz", "--out"),
    "fig1_collision_vs_shannon": ([], None, "--out-dir"),
    "bench_neighbors": ([], None, "--output"),
    "bench_scale": ([], None, "--output"),
    "bench_model_selection": ([], None, "--output"),
    "bench_merge": ([], None, "--output"),
    "profile_step": ([], None, "--output"),
    "bench_throughput": ([], None, "--output"),
    "bench_distributed": ([], None, "--output"),
}


@pytest.fixture(autouse=True)
def _data_env(monkeypatch):
    if not os.environ.get("SKCCE_DATA") and SHARED_DATA.is_dir():
        monkeypatch.setenv("SKCCE_DATA", str(SHARED_DATA))


def _load(name):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their shared helpers
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def _docs_state():
    return {p: p.stat().st_mtime_ns for p in (REPO / "docs" / "benchmarks").glob("*")}


def test_every_benchmark_is_smoke_tested():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_")}
    # update_readme only splices existing reports (tested in test_docs.py); make_fashion_features
    # builds a data set from Debian's dataset-fashion-mnist package, which CI does not install.
    assert scripts - {"update_readme", "make_fashion_features"} == set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_benchmark_quick_run_writes_its_report(name, tmp_path, capsys, monkeypatch):
    extra, data, option = SCRIPTS[name]
    if data is not None:
        from skcce.datasets import find_data_file

        if find_data_file(data) is None:
            pytest.skip(f"{data} not found (set SKCCE_DATA to its folder)")
    # the quick run's default output must land in a temporary folder, never in docs/
    monkeypatch.setenv("SKCCE_QUICK_OUTPUT", str(tmp_path / "quick"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    if option is not None:
        target = tmp_path / "explicit"
        target.mkdir()
        extra = [*extra, option, str(target if option == "--out-dir" else target / "r.md")]
    docs_before = _docs_state()
    module = _load(name)
    try:
        module.main(["--quick", *extra])
    except SystemExit as exc:
        assert exc.code in (0, None), f"{name} exited with {exc.code}"
    assert _docs_state() == docs_before  # the committed reports are untouched
    reports = sorted(tmp_path.rglob("*.md"))
    assert len(reports) == 1, reports
    text = reports[0].read_text()
    assert text.startswith("# "), text[:200]
    assert "Command:" in text and "Machine:" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) >= 3, f"{name}: no table rows in\n{text}"  # header, rule, >= 1 row
    assert table[1].startswith("|---") or table[1].startswith("| ---"), table[:2]


def test_quick_reports_never_land_in_docs(tmp_path, monkeypatch, capsys):
    common = _load("_common")
    monkeypatch.setenv("SKCCE_QUICK_OUTPUT", str(tmp_path))
    in_docs = REPO / "docs" / "benchmarks" / "no_such_report.md"
    rows = [{"a": 1.0}]

    def main(quick):  # a script's main: an argparse Namespace named args
        args = argparse.Namespace(quick=quick)
        return common.write_markdown(in_docs if args.quick else tmp_path / "full.md", "T",
                                     "Command: `python x.py`", rows)

    try:
        main(True)
        assert not in_docs.exists() and (tmp_path / "no_such_report.md").is_file()
        assert "report written to" in capsys.readouterr().out
        common.write_markdown(in_docs, "T", "Command: `python x.py --quick`", rows)  # stated
        assert not in_docs.exists()
        main(False)
        assert (tmp_path / "full.md").is_file()
    finally:
        in_docs.unlink(missing_ok=True)
    assert common.output_path(in_docs, quick=False) == str(in_docs)
    assert common.output_path(in_docs, quick=True) == str(tmp_path / in_docs.name)
    assert common.output_path(tmp_path / "x.png", quick=True) == str(tmp_path / "x.png")
