"""Checkpoints: when a fit resumes, what a damaged file or directory gives, stable signatures.

The tests that drive :func:`estimator_checkpoint` directly call it as the
estimators do: once per run, with the validated training data and the run's
tag, then ``checkpoint.restore(trainer)`` before ``trainer.fit``.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.model_selection import KFold, cross_validate

from skcce import CollisionClustering
from skcce._checkpoint import (
    Checkpoint,
    CheckpointError,
    _stable,
    data_fingerprint,
    estimator_checkpoint,
)
from skcce._objectives import MutualInformationObjective
from skcce._training import ArraySource, Callback, Trainer, TrainResult

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
START_OVER = "delete it or pass another checkpoint_dir"
KW = {"lr": 0.05, "max_epochs": 4, "tol": None, "batch_size": 32, "augment": None}


@pytest.fixture(scope="module")
def data():
    X, _ = make_blobs(n_samples=120, centers=3, random_state=0)
    return X.astype(np.float32)


class _Crash(Callback):
    """Ctrl-C right after epoch ``after`` was checkpointed."""

    def __init__(self, after):
        self.after = after

    def on_epoch_end(self, trainer, record):
        if len(trainer.history) == self.after:
            raise KeyboardInterrupt


def _trainer(seed=0):
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():  # the same start in every trainer, without reseeding torch
        model.weight.copy_(torch.randn(3, 2, generator=generator))
        model.bias.zero_()
    return Trainer(model, MutualInformationObjective(),
                   optimizer=lambda p: torch.optim.Adam(p, lr=0.01), batch_size=32,
                   generator=generator, tol=None)


def _run(est, X, *, tag="0", epochs=4, crash_after=None):
    """One run as the estimators do it: checkpoint, restore, train the remaining epochs."""
    trainer = _trainer()
    checkpoint = estimator_checkpoint(est, X, tag=tag)
    trainer.callbacks.append(checkpoint)
    done = checkpoint.restore(trainer)
    if crash_after is not None:
        trainer.callbacks.append(_Crash(crash_after))
        with pytest.warns(UserWarning, match="interrupted"):
            trainer.fit(ArraySource(X), epochs=epochs - done)
    else:
        trainer.fit(ArraySource(X), epochs=epochs - done)
    return trainer, checkpoint, done


def _before_each_epoch(monkeypatch, hook):
    """Call ``hook(trainer)`` before every epoch of every Trainer (estimator-level tests)."""
    original = Trainer.run_single_epoch

    def patched(self, source, epoch):
        hook(self)
        return original(self, source, epoch)

    monkeypatch.setattr(Trainer, "run_single_epoch", patched)


def _interrupt_in_epoch_three(trainer):
    if len(trainer.history) == 2:
        raise KeyboardInterrupt


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- when a fit resumes
def test_cross_validate_folds_are_not_resumed_from_each_other(data, tmp_path):
    y = np.arange(len(data)) % 3
    est = CollisionClustering(3, checkpoint_dir=tmp_path, random_state=0, **KW)
    cv = cross_validate(est, data, y, cv=KFold(2), scoring="adjusted_rand_score",
                        return_estimator=True)
    first, second = (e.model_.state_dict() for e in cv["estimator"])
    assert all(e.n_iter_ == KW["max_epochs"] for e in cv["estimator"])
    assert not all(torch.equal(first[k], second[k]) for k in first)
    assert _files(tmp_path) == []  # finished runs leave nothing behind


def test_other_data_of_the_same_shape_does_not_resume(data, tmp_path):
    est = CollisionClustering(3, checkpoint_dir=tmp_path, random_state=0)
    _run(est, data, crash_after=2)
    other = data[::-1].copy()
    _, _, done = _run(est, other, epochs=1)
    assert done == 0
    with_labels = estimator_checkpoint(est, data, tag="0", y=np.arange(len(data)) % 3)
    assert with_labels.restore(_trainer()) == 0
    assert estimator_checkpoint(est, data, tag="1").restore(_trainer()) == 0
    assert estimator_checkpoint(est, data, tag="0").restore(_trainer()) == 2


def test_estimator_does_not_resume_on_other_data_of_the_same_shape(data, tmp_path,
                                                                   monkeypatch):
    est = CollisionClustering(3, checkpoint_dir=tmp_path, random_state=0, **KW)
    _before_each_epoch(monkeypatch, _interrupt_in_epoch_three)
    with pytest.warns(UserWarning, match="interrupted"):
        est.fit(data)
    monkeypatch.undo()
    other = data[::-1] + 1
    fresh = CollisionClustering(3, random_state=0, **KW).fit(other)
    np.testing.assert_allclose(est.fit(other).loss_curve_, fresh.loss_curve_, rtol=1e-6)


def test_resume_matches_the_uninterrupted_run(data, tmp_path):
    est = CollisionClustering(3, checkpoint_dir=tmp_path, random_state=0)
    full = _trainer()
    full.fit(ArraySource(data), epochs=4)
    _run(est, data, crash_after=2)
    resumed, checkpoint, done = _run(est, data)
    assert done == 2 and len(resumed.history) == 4
    np.testing.assert_allclose([r.loss for r in resumed.history],
                               [r.loss for r in full.history], rtol=1e-6)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    assert not checkpoint.path.exists()


def test_finished_interrupted_and_diverged_runs(data, tmp_path):
    est = CollisionClustering(3, checkpoint_dir=tmp_path, random_state=0)
    _run(est, data, epochs=2)
    assert _files(tmp_path) == []
    _, interrupted, _ = _run(est, data, crash_after=1)
    assert _files(tmp_path) == [interrupted.filename]
    interrupted.on_train_end(None, TrainResult(diverged=True))
    assert _files(tmp_path) == [interrupted.filename + ".diverged"]
    assert estimator_checkpoint(est, data, tag="0").restore(_trainer()) == 0


def test_unseeded_fit_resumes_the_latest_matching_run(data, tmp_path, monkeypatch):
    _before_each_epoch(monkeypatch, _interrupt_in_epoch_three)
    with pytest.warns(UserWarning, match="interrupted"):
        crashed = CollisionClustering(3, checkpoint_dir=tmp_path, **KW).fit(data)
    assert len(_files(tmp_path)) == 1
    monkeypatch.undo()
    resumed = CollisionClustering(3, checkpoint_dir=tmp_path, **KW).fit(data)
    assert resumed.n_iter_ == 4
    np.testing.assert_allclose(resumed.loss_curve_[:2], crashed.loss_curve_, rtol=1e-6)
    assert _files(tmp_path) == []


def test_unseeded_checkpoint_picks_the_latest_file_with_its_key(data, tmp_path):
    est = CollisionClustering(3, checkpoint_dir=tmp_path)  # random_state=None
    _, first, _ = _run(est, data, tag="111", crash_after=1)
    _, latest, _ = _run(est, data[::-1].copy(), tag="222", crash_after=1)
    os.utime(first.path, ns=(1, 1))
    os.utime(latest.path, ns=(2, 2))  # newer, but of other data
    found = estimator_checkpoint(est, data, tag="333")
    assert found.filename == first.filename and found.restore(_trainer()) == 1
    fresh = estimator_checkpoint(est, data[:60], tag="444")
    assert fresh.filename.endswith("_444.pt") and fresh.restore(_trainer()) == 0


def test_killed_fit_loses_at_most_the_epoch_in_progress(data, tmp_path):
    np.save(tmp_path / "X.npy", data)
    ckpt = tmp_path / "ckpt"
    script = textwrap.dedent(f"""
        import os, signal, sys, numpy as np
        from skcce import CollisionClustering
        from skcce._training import Trainer
        original = Trainer.run_single_epoch
        def killed_in_epoch_three(self, source, epoch):
            if len(self.history) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, source, epoch)
        Trainer.run_single_epoch = killed_in_epoch_three
        CollisionClustering(3, checkpoint_dir=sys.argv[2], random_state=0,
                            **{KW!r}).fit(np.load(sys.argv[1]))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "X.npy"), str(ckpt)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len([p for p in _files(ckpt) if p.endswith(".pt")]) == 1
    full = CollisionClustering(3, random_state=0, **KW).fit(data)
    resumed = CollisionClustering(3, checkpoint_dir=ckpt, random_state=0, **KW).fit(data)
    np.testing.assert_allclose(resumed.loss_curve_, full.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(resumed.predict_proba(data), full.predict_proba(data), atol=1e-6)
    assert _files(ckpt) == []


# --------------------------------------------------------------------------- data fingerprint
class _RowRecorder:
    """An array-like that records which rows are read (a large memmap stand-in)."""

    def __init__(self, n, d):
        self.shape, self.dtype, self.read = (n, d), np.dtype(np.float32), []

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        self.read.extend(np.asarray(idx).tolist())
        return np.zeros((len(idx), self.shape[1]), self.dtype)


def test_fingerprint_of_large_data_reads_a_sample_of_rows():
    big = _RowRecorder(10**6, 8)  # 32 MB
    fp = data_fingerprint(big)
    assert fp["rows_hashed"] == len(big.read) == 1000
    assert big.read == sorted(set(big.read)) and big.read[0] == 0 and big.read[-1] == 10**6 - 1
    assert np.ptp(np.diff(big.read)) <= 1  # evenly spaced


def test_fingerprint_of_memmap_images_and_datasets(data, tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32,
                                   shape=data.shape)
    mm[:] = data
    assert data_fingerprint(mm) == data_fingerprint(data)
    changed = data.copy()
    changed[57, 1] += 1  # small data: every row counts
    assert data_fingerprint(changed) != data_fingerprint(data)
    assert data_fingerprint(data.astype(np.float64)) != data_fingerprint(data)
    images = np.random.default_rng(0).integers(0, 255, (20, 1, 8, 8), dtype=np.uint8)
    assert data_fingerprint(images)["shape"] == [20, 1, 8, 8]
    assert data_fingerprint(images) != data_fingerprint(images[::-1])
    ds = torch.utils.data.TensorDataset(torch.from_numpy(images))
    same = torch.utils.data.TensorDataset(torch.from_numpy(images.copy()))
    other = torch.utils.data.TensorDataset(torch.from_numpy(images[::-1].copy()))
    assert data_fingerprint(ds) == data_fingerprint(same) != data_fingerprint(other)
    assert data_fingerprint(ds)["len"] == 20


class _RandomItems(torch.utils.data.Dataset):
    def __init__(self, data=None):
        self.generator = torch.Generator().manual_seed(0)
        if data is not None:
            self.data = data

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.rand(3, generator=self.generator)


def test_fingerprint_of_a_dataset_with_random_items():
    images = np.arange(30, dtype=np.float32).reshape(10, 3)
    with_data = data_fingerprint(_RandomItems(images))
    assert with_data["data"] == data_fingerprint(images)
    with pytest.warns(UserWarning, match="only by its length"):
        assert data_fingerprint(_RandomItems())["items"] == "random"


# --------------------------------------------------------------------------- damaged files
def _valid_checkpoint(data, directory):
    est = CollisionClustering(3, checkpoint_dir=directory, random_state=0)
    _, checkpoint, _ = _run(est, data, crash_after=1)
    return est, checkpoint.path


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _rewrite(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _inf_weight(state):
    state["model"]["weight"][0, 0] = float("inf")


def _inf_optimizer(state):
    next(iter(state["optimizer"]["state"].values()))["exp_avg"][0, 0] = float("nan")


def _wrong_shape(state):
    state["model"]["weight"] = torch.zeros(4, 2)


def _unsafe_pickle(path):
    torch.save({"x": _RowRecorder(2, 2)}, path)  # weights_only=True refuses it


CORRUPTIONS = {
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)),
    "unsafe pickle": _unsafe_pickle,
    "inf weights": lambda p: _rewrite(p, _inf_weight),
    "nan optimizer state": lambda p: _rewrite(p, _inf_optimizer),
    "wrong shape": lambda p: _rewrite(p, _wrong_shape),
    "missing key": lambda p: _rewrite(p, lambda s: s.pop("generator")),
    "extra weight": lambda p: _rewrite(p, lambda s: s["model"].update(extra=torch.ones(1))),
    "history mismatch": lambda p: _rewrite(p, lambda s: s.update(epoch=3)),
    "other settings": lambda p: _rewrite(p, lambda s: s["signature"].update(estimator="x")),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_damaged_checkpoint_raises_one_error_naming_the_file(data, tmp_path, corrupt):
    est, path = _valid_checkpoint(data, tmp_path)
    corrupt(path)
    trainer = _trainer()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=START_OVER) as info:
        estimator_checkpoint(est, data, tag="0").restore(trainer)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    for key, value in trainer.model.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[key])


# --------------------------------------------------------------------------- unwritable directory
def test_checkpoint_dir_that_is_a_file_is_reported_before_training(data, tmp_path, monkeypatch):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    epochs = []
    _before_each_epoch(monkeypatch, epochs.append)
    est = CollisionClustering(3, checkpoint_dir=not_a_dir, random_state=0, **KW)
    with pytest.raises(CheckpointError, match="not a writable directory") as info:
        est.fit(data)
    assert str(not_a_dir) in str(info.value) and epochs == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="file permissions are not enforced for root")
def test_read_only_checkpoint_dir_is_reported(data, tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        est = CollisionClustering(3, checkpoint_dir=read_only, random_state=0)
        with pytest.raises(CheckpointError, match="ro' is not a writable directory"):
            estimator_checkpoint(est, data, tag="0")
    finally:
        read_only.chmod(0o700)


def test_failed_write_keeps_the_last_checkpoint_and_no_temp_file(data, tmp_path, monkeypatch):
    est = CollisionClustering(3, checkpoint_dir=tmp_path, random_state=0)
    original = torch.save
    calls = []

    def disk_full_at_epoch_two(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) < 2:
            return original(obj, f, *args, **kwargs)
        with open(f, "ab") if isinstance(f, (str, os.PathLike)) else f as out:
            out.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_at_epoch_two)
    with pytest.raises(CheckpointError, match="could not write the checkpoint") as info:
        _run(est, data)
    monkeypatch.setattr(torch, "save", original)
    checkpoint = estimator_checkpoint(est, data, tag="0")
    assert str(checkpoint.path) in str(info.value)
    assert _files(tmp_path) == [checkpoint.filename]  # no .tmp left
    assert checkpoint.restore(_trainer()) == 1


# --------------------------------------------------------------------------- stable signatures
def net():
    return torch.nn.Linear(2, 3)


def test_stable_values_hold_no_memory_address():
    values = [np.random.RandomState(0), np.random.default_rng(0), net, lambda x: x,
              torch.nn.Linear(2, 3), torch.optim.Adam, np, torch.Generator().manual_seed(0),
              object(), CollisionClustering(2, random_state=np.random.RandomState(0))]
    described = json.dumps(_stable(values))
    assert "0x" not in described
    assert _stable(np.random.RandomState(0)) != _stable(np.random.RandomState(1))
    assert _stable(lambda x: x) != _stable(lambda x: x + 1)
    assert _stable(torch.nn.Linear(2, 3)) == _stable(torch.nn.Linear(2, 3))


def _signature(data_path, directory):
    est = CollisionClustering(3, model=net, random_state=np.random.RandomState(0),
                              checkpoint_dir=directory)
    checkpoint = estimator_checkpoint(est, np.load(data_path), tag="0")
    return json.dumps([checkpoint.filename, checkpoint.signature], sort_keys=True)


def test_signature_is_identical_in_two_processes(data, tmp_path):
    np.save(tmp_path / "X.npy", data)
    args = [str(tmp_path / "X.npy"), str(tmp_path)]
    # the other process loads this file under this module's name, so `net` is the same function
    script = textwrap.dedent("""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(module._signature(*sys.argv[3:]))
    """)
    proc = subprocess.run([sys.executable, "-c", script, net.__module__, __file__, *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    here = _signature(*args)
    assert proc.stdout.strip().splitlines()[-1] == here
    assert "0x" not in here and "RandomState" in here and ".net" in here


def test_checkpoint_class_round_trip(tmp_path, data):
    trainer = _trainer()
    checkpoint = Checkpoint(tmp_path / "new", signature={"a": np.float32(1.5)})
    trainer.callbacks.append(checkpoint)
    trainer.fit(ArraySource(data), epochs=2)
    checkpoint.save(trainer)
    assert Checkpoint(tmp_path / "new", signature={"a": 1.5}).restore(_trainer()) == 2
    with pytest.raises(CheckpointError, match="other settings"):
        Checkpoint(tmp_path / "new", signature={"a": 2.5}).restore(_trainer())
