"""Tests of the ``skcce`` command line, run in-process through ``main(argv)``."""

import subprocess
import sys
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


def test_python_dash_m_skcce(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "skcce", "fit", str(tmp_path / "no.npy"),
                           "--n-clusters", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().startswith("skcce fit: error: features file not found")


def _estimator_default(name):
    import inspect

    from skcce import CollisionClustering

    return inspect.signature(CollisionClustering).parameters[name].default


@pytest.mark.parametrize("command, needles", [
    ("fit", [f"fairness weight (default: {_estimator_default('lam')})",
             f"learning rate (default: {_estimator_default('lr')})",
             f"training epochs (default: {_estimator_default('max_epochs')})",
             "random seed (default: 0)"]),
    ("extract", ["(default: resnet50)", "(default: 64)", "(default: 224)", "--image-shape"]),
])
def test_help_shows_defaults(capsys, command, needles):
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for needle in needles:
        assert needle in out, needle
    assert "(default: None)" not in out and "(default: False)" not in out


# ----------------------------------------------------------------- unreadable input files
@pytest.mark.parametrize("name, content, needle", [
    ("empty.npy", b"", "the file is empty"),
    ("empty.npz", b"", "the file is empty"),
    ("broken.npz", b"PK\x03\x04 not really a zip", "not a valid .npz archive"),
    ("text.npz", b"just some text\n", "not a NumPy .npy/.npz file"),
    ("short.npy", None, "cannot read (Failed to read all data"),
    ("empty.csv", b"", "no data rows"),
    ("blank.csv", b"\n\n", "no data rows"),
    ("header.csv", b"a,b,c\n", "no data rows"),
])
def test_unreadable_features_file_named(capsys, tmp_path, name, content, needle):
    path = tmp_path / name
    if content is None:  # a valid .npy header whose data is cut off
        np.save(path, np.zeros((50, 4)))
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    assert main(["fit", str(path), "--n-clusters", "3"]) == 1
    line = _assert_one_line_error(capsys, needle, str(path))
    assert "--n-clusters" not in line


def test_empty_array_is_named(capsys, tmp_path):
    np.save(tmp_path / "none.npy", np.zeros((0, 4)))
    assert main(["fit", str(tmp_path / "none.npy"), "--n-clusters", "3"]) == 1
    line = _assert_one_line_error(capsys, "the array is empty", "none.npy")
    assert "--n-clusters" not in line


def test_unreadable_labels_file_named(capsys, tmp_path):
    X, _ = _blobs()
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "y.npy").write_bytes(b"")
    argv = ["fit", str(tmp_path / "X.npy"), "--n-clusters", "3", "--labels",
            str(tmp_path / "y.npy")]
    assert main(argv) == 1
    _assert_one_line_error(capsys, "the file is empty", "y.npy")


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


def test_fit_without_out_says_nothing_was_saved(capsys, tmp_path):
    X, _ = _blobs()
    np.save(tmp_path / "X.npy", X)
    argv = ["fit", str(tmp_path / "X.npy"), "--n-clusters", "3", "--max-epochs", "2", "--quiet"]
    assert main(argv) == 0
    assert "not saved (pass --out" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy"]


def test_out_without_suffix_reports_the_written_path(capsys, tmp_path):
    X, _ = _blobs()
    np.save(tmp_path / "X.npy", X)
    argv = ["fit", str(tmp_path / "X.npy"), "--n-clusters", "3", "--max-epochs", "2", "--quiet",
            "--out", str(tmp_path / "labels"), "--proba-out", str(tmp_path / "proba.txt")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for written in (tmp_path / "labels.npy", tmp_path / "proba.txt.npy"):
        assert written.is_file()
        assert f"saved to {written.resolve()}\n" in out
    assert np.load(tmp_path / "labels.npy").shape == (90,)


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


def test_extract_weights_file_that_is_not_weights(capsys, tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((2, 32, 32), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("my notes\n")
    argv = ["extract", str(tmp_path / "img.npy"), "--model", "resnet18", "--weights",
            str(tmp_path / "notes.txt"), "--size", "32", "--out", str(tmp_path / "f.npy")]
    assert main(argv) == 1
    line = _assert_one_line_error(capsys, "notes.txt",
                                  "is not a weights file saved with torch.save")
    assert "KeyError:" not in line.split("(")[0]


def test_extract_offline_hint_is_for_the_command_line(capsys, tmp_path, monkeypatch):
    import urllib.error

    import torchvision

    def offline(*, weights=None, **kwargs):
        if weights is not None:
            raise urllib.error.URLError("no network")
        return real(weights=None, **kwargs)

    real = torchvision.models.resnet18
    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    np.save(tmp_path / "img.npy", np.zeros((2, 32, 32), dtype=np.uint8))
    argv = ["extract", str(tmp_path / "img.npy"), "--model", "resnet18", "--size", "32",
            "--out", str(tmp_path / "f.npy")]
    assert main(argv) == 1
    line = _assert_one_line_error(capsys, "could not download the resnet18 weights",
                                  "no network", "--weights FILE")
    assert "weights=" not in line and "torch.save(" not in line  # no Python syntax


def test_extract_random_weights_warns_once_in_plain_words(capsys, tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((2, 32, 32), dtype=np.uint8))
    argv = ["extract", str(tmp_path / "img.npy"), "--model", "resnet18", "--weights", "none",
            "--size", "32", "--device", "cpu", "--out", str(tmp_path / "f.npy")]
    assert main(argv) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "UserWarning" in line]
    assert len(warned) == 1
    assert "random weights" in warned[0] and "not of a pretrained network" in warned[0]


def test_extract_flat_rows_need_and_take_image_shape(capsys, tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (3, 28 * 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", X=rows, y=np.arange(3))
    base = ["extract", str(tmp_path / "mnist.npz"), "--model", "resnet18", "--weights", "none",
            "--size", "32", "--device", "cpu", "--out", str(tmp_path / "f")]
    assert main(base) == 1
    _assert_one_line_error(capsys, "rows of 784 values", "--image-shape C,H,W")
    assert main([*base, "--image-shape", "1,28,28"]) == 0
    assert f"saved to {(tmp_path / 'f.npy').resolve()}" in capsys.readouterr().out
    assert np.load(tmp_path / "f.npy").shape == (3, 512)
    assert main([*base, "--image-shape", "28,28"]) == 2
    _assert_one_line_error(capsys, "expected C,H,W")


def test_error_does_not_print_on_the_progress_bar_line(capsys, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "0.png")
    (folder / "1.png").write_bytes(b"not a png")  # fails in the second batch
    argv = ["extract", str(folder), "--model", "resnet18", "--weights", "none", "--size", "32",
            "--batch-size", "1", "--device", "cpu", "--out", str(tmp_path / "f.npy")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "features:" in err  # the bar was drawn
    errors = [line for line in err.split("\n") if "skcce extract: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("skcce extract: error:"), err


def test_warning_does_not_print_on_the_progress_bar_line(capsys, monkeypatch):
    import warnings

    def noisy(args):
        sys.stderr.write("\rprogress  50%|#####     |")
        warnings.warn("something to know", UserWarning, stacklevel=2)
        return 0

    monkeypatch.setattr(cli, "_cmd_demo", noisy)  # the parser binds it when built
    assert main(["demo"]) == 0
    err = capsys.readouterr().err
    assert "|\nskcce: UserWarning: something to know\n" in err


def test_extract_missing_images(capsys, tmp_path):
    assert main(["extract", str(tmp_path / "nothing"), "--out", str(tmp_path / "f.npy")]) == 1
    _assert_one_line_error(capsys, "images not found")


# ----------------------------------------------------------------- bench (removed)
def test_bench_is_not_a_command(capsys):
    # the benchmark scripts ship with the repository, not the package: python benchmarks/...
    assert main(["bench", "solvers", "--quick"]) == 2
    _assert_one_line_error(capsys, "invalid choice: 'bench'")
    main(["--help"])
    assert "python benchmarks/" in capsys.readouterr().out


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
