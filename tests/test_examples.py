"""Every example runs as shipped, in its quick mode, and prints what it promises."""

import ast
import os
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# Tests that need the data set SKCCE_DATA; CI and developers keep it in ../shared/data.
SHARED_DATA = REPO.parent / "shared" / "data"

# Quick mode trains for a few epochs on purpose; the estimators rightly warn about it.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# example -> strings its quick run must print
EXPECTED = {
    "fixed_features_pipeline.py": ["CollisionClustering: accuracy", "KMeans: accuracy"],
    "grid_search_lam.py": ["best lam:", "held-out accuracy"],
    "weak_supervision.py": ["only seeds", "+ CCE"],
    "noisy_labels.py": ["collision", "Shannon", "0.5"],
    "resnet50_features.py": ["features: (60, 2048)", "RANDOM weights", "accuracy"],
    "deep_mnist.py": ["VGG-4 on 64 MNIST images: accuracy"],
    "solver_convergence.py": ["EM:", "PGD, Armijo steps:", "plot saved to"],
}
NEEDS_DATA = {"deep_mnist.py": "mnist70k.npz"}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_has_a_docstring_header(name):
    doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
    assert doc and "--quick" in doc and "Run::" in doc


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_quick(name, monkeypatch, capsys, tmp_path):
    if not os.environ.get("SKCCE_DATA") and SHARED_DATA.is_dir():
        monkeypatch.setenv("SKCCE_DATA", str(SHARED_DATA))
    if name in NEEDS_DATA:
        from skcce.datasets import find_data_file

        if find_data_file(NEEDS_DATA[name]) is None:
            pytest.skip(f"{NEEDS_DATA[name]} not found (set SKCCE_DATA to its folder)")
    monkeypatch.setenv("SKCCE_QUICK", "1")
    monkeypatch.delenv("SKCCE_RESNET50_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)  # anything an example saves lands here
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), "--quick"])
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (0, None), f"{name} exited with {exc.code}"
    out = capsys.readouterr().out
    for needle in EXPECTED[name]:
        assert needle in out, f"{name}: {needle!r} not in output:\n{out}"


def test_noisy_example_states_what_was_measured():
    doc = ast.get_docstring(ast.parse((EXAMPLES / "noisy_labels.py").read_text()))
    assert "hurt less" not in doc  # its own full run does not support that
    assert "docs/benchmarks/noisy_labels.md" in doc and "standard deviation" in doc
