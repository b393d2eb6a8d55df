"""Tests of the ``skcce`` command line, run in-process through ``main(argv)``."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from skcce import cli
from skcce.cli import load_features, main

REPO = Path(__file__).resolve().parents[1]


def _blobs(n=90, k=3, d=4, seed=0):
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n, centers=k, n_features=d, cluster_std=0.5, random_state=seed)
    return X.astype(np.float32), y


def _assert_one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# ----------------------------------------------------------------- parsing and errors
def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("skcce ")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["frobnicate"], "invalid choice"),
    (["fit", "x.npy", "--n-clusters", "3", "--bogus"], "unrecognized arguments: --bogus"),
    (["fit", "x.npy"], "--n-clusters"),
    (["fit", "x.npy", "--n-clusters", "three"], "invalid int value"),
    (["bench", "nope"], "invalid choice"),
])
def test_usage_errors_are_one_line(capsys, argv, needle):
    assert main(argv) == 2
    _assert_one_line_error(capsys, needle)


def test_missing_features_file(capsys, tmp_path):
    assert main(["fit", str(tmp_path / "missing.npy"), "--n-clusters", "3"]) == 1
    _assert_one_line_error(capsys, "not found", "missing.npy")


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_wrong_shape(capsys, tmp_path, shape):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape))
    assert main(["fit", str(path), "--n-clusters", "3"]) == 1
    _assert_one_line_error(capsys, "expected a 2-D array", str(shape))


def test_unsupported_extension_and_bad_csv(capsys, tmp_path):
    txt = tmp_path / "f.txt"
    txt.write_text("1 2\n")
    assert main(["fit", str(txt), "--n-clusters", "2"]) == 1
    _assert_one_line_error(capsys, "unsupported format")
    csv = tmp_path / "f.csv"
    csv.write_text("a,b\n1,x\n")
    assert main(["fit", str(csv), "--n-clusters", "2"]) == 1
    _assert_one_line_error(capsys, "not a numeric CSV")


def test_labels_of_wrong_length(capsys, tmp_path):
    X, y = _blobs()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y[:-1])
    argv = ["fit", str(tmp_path / "X.npy"), "--n-clusters", "3", "--labels",
            str(tmp_path / "y.npy")]
    assert main(argv) == 1
    _assert_one_line_error(capsys, "labels have shape (89,)", "expected (90,)")


def test_too_many_clusters(capsys, tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((5, 2)))
    assert main(["fit", str(tmp_path / "X.npy"), "--n-clusters", "9"]) == 1
    _assert_one_line_error(capsys, "--n-clusters must be between 2 and")


def test_estimator_value_error_is_one_line(capsys, tmp_path):
    X, _ = _blobs()
    X[0, 0] = np.nan
    np.save(tmp_path / "X.npy", X)
    argv = ["fit", str(tmp_path / "X.npy"), "--n-clusters", "3", "--no-standardize", "--quiet"]
    assert main(argv) == 1
    _assert_one_line_error(capsys, "1 row(s) contain NaN or infinite values", "row 0")


def test_traceback_flag_reraises(tmp_path):
    with pytest.raises(Exception, match="not found"):
        main(["--traceback", "fit", str(tmp_path / "missing.npy"), "--n-clusters", "3"])


def test_console_script_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "skcce.cli", "fit", str(tmp_path / "no.npy"),
                           "--n-clusters", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("skcce fit: error: features file not found")


# ----------------------------------------------------------------- loading
def test_load_features_formats(tmp_path):
    X, y = _blobs(n=12)
    np.save(tmp_path / "a.npy", X)
    np.savez(tmp_path / "b.npz", X=X, y=y)
    np.savez(tmp_path / "c.npz", only=X)
    np.savetxt(tmp_path / "d.csv", X, delimiter=",", header="f0,f1,f2,f3", comments="")
    np.savetxt(tmp_path / "e.csv", X)
    for name in ("a.npy", "b.npz", "c.npz", "d.csv", "e.csv"):
        loaded, labels = load_features(tmp_path / name)
        assert np.allclose(loaded, X, atol=1e-5), name
        assert (labels is not None) == (name == "b.npz")
    assert np.array_equal(load_features(tmp_path / "b.npz")[1], y)


def test_load_features_npz_without_X(tmp_path):
    np.savez(tmp_path / "f.npz", a=np.zeros((2, 2)), b=np.zeros(2))
    with pytest.raises(cli.CLIError, match="no array named 'X'"):
        load_features(tmp_path / "f.npz")


# ----------------------------------------------------------------- fit
def test_fit_reports_scores_and_saves(capsys, tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    out, proba = tmp_path / "labels.npy", tmp_path / "proba.npy"
    argv = ["fit", str(tmp_path / "blobs.npz"), "--n-clusters", "3", "--max-epochs", "10",
            "--out", str(out), "--proba-out", str(proba), "--seed", "1"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "ACC" in stdout and "NMI" in stdout and "ARI" in stdout
    labels = np.load(out)
    assert labels.shape == (90,) and set(np.unique(labels)) <= {0, 1, 2}
    P = np.load(proba)
    assert P.shape == (90, 3) and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    acc = float(stdout.split("ACC ")[1].split()[0])
    from skcce.metrics import clustering_accuracy

    assert acc == pytest.approx(clustering_accuracy(y, labels), abs=1e-4)


def test_fit_csv_with_separate_labels(capsys, tmp_path):
    X, y = _blobs()
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    np.save(tmp_path / "y.npy", y)
    argv = ["fit", str(tmp_path / "X.csv"), "--n-clusters", "3", "--max-epochs", "5",
            "--labels", str(tmp_path / "y.npy"), "--quiet"]
    assert main(argv) == 0
    assert "ACC" in capsys.readouterr().out


# ----------------------------------------------------------------- demo
def test_demo_quick(capsys, tmp_path):
    png = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    for method in ("K-means", "CCE (ours, defaults)", "CCE (ours, no augmentation)", "MI-GD",
                   "SeLa", "MI-ADM"):
        assert method in out
    assert "accuracy" in out and "NMI" in out and "time (s)" in out
    assert str(png.resolve()) in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------- extract
def test_extract_random_weights(capsys, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "img.npy", images)
    out = tmp_path / "feats.npy"
    argv = ["extract", str(tmp_path / "img.npy"), "--model", "resnet18", "--weights", "none",
            "--size", "32", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    feats = np.load(out)
    assert feats.shape == (3, 512) and feats.dtype == np.float32


def test_extract_missing_weights_file(capsys, tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((2, 8, 8), dtype=np.uint8))
    argv = ["extract", str(tmp_path / "img.npy"), "--weights", str(tmp_path / "w.pt"),
            "--out", str(tmp_path / "f.npy")]
    assert main(argv) == 1
    _assert_one_line_error(capsys, "weights file not found")


def test_extract_missing_images(capsys, tmp_path):
    assert main(["extract", str(tmp_path / "nothing"), "--out", str(tmp_path / "f.npy")]) == 1
    _assert_one_line_error(capsys, "images not found")


# ----------------------------------------------------------------- bench
def test_bench_runs_script_main_with_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "_helper.py").write_text("VALUE = 'from-helper'\n")
    (tmp_path / "bench_solvers.py").write_text(textwrap.dedent("""
        import sys
        from _helper import VALUE

        def main(argv=None):
            print("ran", VALUE, argv)
            return 3 if argv == ["--fail"] else 0
    """))
    monkeypatch.setenv("SKCCE_BENCHMARKS_DIR", str(tmp_path))
    assert main(["bench", "solvers", "--quick", "--seeds", "2"]) == 0
    assert "ran from-helper ['--quick', '--seeds', '2']" in capsys.readouterr().out
    assert main(["bench", "solvers", "--fail"]) == 3
    assert str(tmp_path) not in sys.path


def test_bench_without_benchmarks_folder(capsys, monkeypatch):
    monkeypatch.setattr(cli, "find_benchmarks_dir", lambda: None)
    assert main(["bench", "fixed"]) == 1
    _assert_one_line_error(capsys, "benchmarks folder not found", "SKCCE_BENCHMARKS_DIR")


def test_bench_fig1_quick(tmp_path, capsys):
    if not (REPO / "benchmarks" / "fig1_collision_vs_shannon.py").is_file():
        pytest.skip("no benchmarks/ folder (installed copy)")
    assert main(["bench", "fig1", "--quick", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "fig1_collision_vs_shannon.png").stat().st_size > 0
    report = (tmp_path / "fig1.md").read_text()
    assert "| (0.5, 0.5) |" in report and "date:" in report


def test_bench_script_usage_error_passes_status(tmp_path, capsys):
    if not (REPO / "benchmarks" / "fig1_collision_vs_shannon.py").is_file():
        pytest.skip("no benchmarks/ folder (installed copy)")
    assert main(["bench", "fig1", "--no-such-option"]) == 2


def test_long_messages_are_cut_to_the_first_sentences():
    text = cli._one_line(ValueError("First sentence. " + "More advice here. " * 40))
    assert text.startswith("First sentence.") and len(text) <= 300


def test_extract_from_an_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "f.npy"
    argv = ["extract", str(folder), "--model", "resnet18", "--weights", "none", "--size", "32",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert np.load(out).shape == (3, 512)
