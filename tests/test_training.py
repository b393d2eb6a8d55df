"""The training loop, the batch objectives and model construction."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skcce import _objectives as obj
from skcce._callbacks import CollapseWarning
from skcce._sources import ArraySource
from skcce._training import Batch, Callback, ModelStep, Trainer
from skcce.losses import collision_cross_entropy, mutual_information_loss
from skcce.networks import LinearClassifier, build_model, seeded_global_rng


def _data(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4, size=(3, d))
    return (centers[rng.integers(0, 3, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _trainer(objective=None, epochs=3, seed=0, **kw):
    gen = torch.Generator().manual_seed(seed)
    model = LinearClassifier(4, 3, generator=gen)
    objective = objective or obj.MutualInformationObjective(lam=1.0)
    return Trainer(model, objective, optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                   batch_size=16, max_epochs=epochs, generator=gen, tol=None, **kw)


def test_batch_indices_cover_rows_once_and_merge_single_row_tail():
    trainer = _trainer()
    batches = trainer.batch_indices(33)
    assert sorted(np.concatenate(batches).tolist()) == list(range(33))
    assert min(len(b) for b in batches) > 1
    again = _trainer().batch_indices(33)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_fit_records_history_and_losses_finite():
    trainer = _trainer(epochs=4)
    result = trainer.fit(ArraySource(_data()))
    assert result.n_epochs == 4 and len(trainer.history) == 4
    assert np.all(np.isfinite([r.loss for r in trainer.history]))
    assert trainer.history[-1].cluster_sizes.sum() == 60
    assert not result.interrupted and not result.diverged


def test_early_stop_flag_from_callback():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, trainer, record):
            if record.epoch == 1:
                trainer.stop_training = True

    result = _trainer(epochs=10, callbacks=[StopAfterTwo()]).fit(ArraySource(_data()))
    assert result.n_epochs == 2


def test_tol_early_stop_sets_converged():
    trainer = _trainer(epochs=200)
    trainer.tol, trainer.n_iter_no_change = 1.0, 2  # any change below 1.0 counts as no progress
    result = trainer.fit(ArraySource(_data()))
    assert result.converged and result.n_epochs == 3


def test_keyboard_interrupt_returns_with_usable_model():
    class Interrupt(Callback):
        def __init__(self):
            self.n = 0

        def on_batch_end(self, trainer, batch, output):
            self.n += 1
            if self.n == 5:
                raise KeyboardInterrupt

    trainer = _trainer(epochs=10, callbacks=[Interrupt()])
    with pytest.warns(UserWarning, match="interrupted"):
        result = trainer.fit(ArraySource(_data()))
    assert result.interrupted and result.n_epochs == 1
    proba = trainer.predict_log_proba(ArraySource(_data())).exp().numpy()
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_nan_loss_restores_last_good_state_and_warns():
    class NaNAfter(obj.MutualInformationObjective):
        calls = 0

        def batch_loss(self, log_proba):
            loss, value, y = super().batch_loss(log_proba)
            NaNAfter.calls += 1
            if NaNAfter.calls > 8:  # during the third epoch (4 batches per epoch)
                return loss * float("nan"), float("nan"), y
            return loss, value, y

    trainer = _trainer(NaNAfter(lam=1.0), epochs=5)
    snapshots = []

    class Keep(Callback):
        def on_epoch_end(self, trainer, record):
            snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer.callbacks.append(Keep())
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        result = trainer.fit(ArraySource(_data()))
    assert result.diverged and result.n_epochs == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, snapshots[-1][k])


def test_views_average_in_probability_space():
    model = torch.nn.Linear(4, 3)
    x = torch.from_numpy(_data(8))
    x2 = x + 1.0
    step = ModelStep(model, rows=None, views=lambda batch, rows, gen: [batch.x, x2])
    lp = step.log_proba(Batch(indices=np.arange(8), x=x))
    with torch.no_grad():
        expected = (torch.softmax(model(x), 1) + torch.softmax(model(x2), 1)) / 2
    assert torch.allclose(lp.exp(), expected, atol=1e-6)
    same = ModelStep(model, rows=None, views=lambda batch, rows, gen: [batch.x] * 3)
    lp_same = same.log_proba(Batch(indices=np.arange(8), x=x))
    assert torch.allclose(lp_same, same.log_proba(Batch(np.arange(8), x), views=False),
                          atol=1e-6)


def test_array_source_memmap_copies_only_batch(tmp_path):
    X = _data(20)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                   shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = ArraySource(ro).rows(np.array([3, 1]))
    assert rows.dtype == torch.float32 and torch.equal(rows, torch.from_numpy(X[[3, 1]]))


def test_mutual_information_objective_matches_loss():
    logits = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    lp = torch.log_softmax(logits, 1)
    loss, value, y = obj.MutualInformationObjective(lam=0.7).batch_loss(lp)
    assert y is None
    assert torch.isclose(loss, mutual_information_loss(logits, None, 0.7), atol=1e-6)


def test_self_labeling_objective_uses_solver_labels():
    from skcce.solvers import solve_pseudo_labels

    logits = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
    lp = torch.log_softmax(logits, 1)
    o = obj.SelfLabelingObjective(lam=0.5)
    loss, value, y = o.batch_loss(lp)
    p = lp.exp().double().numpy()
    ref = solve_pseudo_labels(p / p.sum(1, keepdims=True), 0.5, None, "reverse", "em",
                              "collision", max_iter=100, tol=1e-6, warn=False).y
    assert np.allclose(y.numpy(), ref, atol=1e-5)
    assert torch.isclose(loss, collision_cross_entropy(logits, y), atol=1e-5)
    assert value >= float(loss)  # the fairness term is non-negative


def test_partial_labels_objective_adds_supervised_term():
    trainer = _trainer()
    x = torch.from_numpy(_data(8))
    inner = obj.MutualInformationObjective(lam=1.0)
    unl = Batch(np.arange(8), x, torch.full((8,), -1))
    lab = Batch(np.arange(8), x, torch.tensor([0, 1, -1, -1, -1, -1, -1, -1]))
    wrapped = obj.PartialLabelsObjective(inner)
    step = trainer.model_step(ArraySource(_data(8)))
    base = wrapped(step, unl)
    sup = wrapped(step, lab)
    lp = base.log_proba.detach()
    extra = -(lp[0, 0] + lp[1, 1]) / 2  # mean over the two labeled rows
    assert torch.isclose(sup.loss - base.loss, extra, atol=1e-6)


def test_cross_neighbor_objective_is_symmetric_in_the_pair():
    X = _data(30)
    neighbors = np.array([[(i + 1) % 30] for i in range(30)])
    trainer = _trainer()
    source = ArraySource(X)
    o = obj.CrossNeighborObjective(obj.SelfLabelingObjective(lam=0.5), neighbors)
    out = o(trainer.model_step(source), trainer.load_batch(source, np.arange(30)))
    assert out.log_proba.shape == (30, 3) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in trainer.model.parameters())


# --------------------------------------------------------------------------- networks
def test_linear_model_kaiming_zero_bias_and_reproducible():
    a = build_model("linear", (5,), 3, generator=torch.Generator().manual_seed(3))
    b = build_model("linear", (5,), 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.linear.weight, b.linear.weight)
    assert float(a.linear.bias.detach().abs().sum()) == 0.0
    std = float(a.linear.weight.detach().std())
    assert 0.2 < std < 1.5  # kaiming normal, gain sqrt(2), fan_in 5: std ~ 0.63


def test_build_model_leaves_global_rng_untouched():
    before = torch.random.get_rng_state()
    build_model("mlp", (5,), 3, generator=torch.Generator().manual_seed(0))
    build_model(torch.nn.Identity, (5,), 3, generator=torch.Generator().manual_seed(0))
    with seeded_global_rng(torch.Generator().manual_seed(0)):
        torch.rand(3)
    assert torch.equal(before, torch.random.get_rng_state())


def test_custom_module_gets_head_when_width_differs():
    def factory(width=7):
        return torch.nn.Sequential(torch.nn.Linear(5, width), torch.nn.ReLU())

    g = torch.Generator().manual_seed(0)
    m = build_model(factory, (5,), 3, generator=g, model_params={"width": 9})
    assert m(torch.zeros(2, 5)).shape == (2, 3)
    same = build_model(torch.nn.Linear(5, 3), (5,), 3, generator=g)
    assert isinstance(same, torch.nn.Linear)


@pytest.mark.parametrize("spec, params", [
    ("nope", None), (lambda: 3, None), ("linear", {"hidden_layer_sizes": (3,)}),
    ("mlp", {"dropout": 0.5}),
])
def test_build_model_bad_spec(spec, params):
    with pytest.raises(ValueError):
        build_model(spec, (5,), 3, generator=torch.Generator(), model_params=params)


def test_collapse_warning_on_empty_clusters():
    trainer = _trainer(epochs=2, callbacks=[CollapseWarning()])
    X = np.zeros((40, 4), dtype=np.float32)  # every point gets the same prediction
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.fit(ArraySource(X))
    assert any(issubclass(w.category, ConvergenceWarning) and "collapse" in str(w.message)
               for w in rec)


def test_tail_below_min_batch_size_joins_the_previous_batch():
    trainer = _trainer()  # batch_size 16
    trainer.min_batch_size = 8
    sizes = [len(b) for b in trainer.batch_indices_from(np.arange(16 * 3 + 7))]
    assert sizes == [16, 16, 23]
    sizes = [len(b) for b in trainer.batch_indices_from(np.arange(16 * 3 + 8))]
    assert sizes == [16, 16, 16, 8]


def test_infinite_reported_value_with_finite_loss_is_not_divergence():
    class InfiniteFairness(obj.MutualInformationObjective):
        def batch_loss(self, log_proba):
            loss, _, y = super().batch_loss(log_proba)
            return loss, float("inf"), y  # e.g. KL(u || ybar) of a batch with an empty cluster

    trainer = _trainer(InfiniteFairness(lam=1.0), epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = trainer.fit(ArraySource(_data()))
    assert result.n_epochs == 3 and not result.diverged
    assert all(r.loss == float("inf") for r in trainer.history)


def test_collapse_warning_suggests_standardizing_unscaled_features():
    from sklearn.datasets import load_digits

    from skcce import CollisionClustering
    from skcce._callbacks import standardization_hint

    rng = np.random.default_rng(0)
    assert standardization_hint(rng.normal(size=(300, 8))) is None
    raw = rng.normal(size=(300, 8)) * np.logspace(-4, 1, 8)
    assert "StandardScaler" in standardization_hint(raw)
    trainer = _trainer(epochs=2, callbacks=[CollapseWarning(hint="Standardize first.")])
    with pytest.warns(ConvergenceWarning, match="collapse.*Standardize first"):
        trainer.fit(ArraySource(np.zeros((40, 4), dtype=np.float32)))
    # the estimator passes the hint of its features: raw digits pixels (0-16, some
    # constant columns) with lam=0 collapse
    X = load_digits().data.astype(np.float32) * np.logspace(-3, 1, 64, dtype=np.float32)
    with pytest.warns(ConvergenceWarning, match="unstandardized"):
        CollisionClustering(10, lam=0.0, max_epochs=2, augment=None, random_state=0).fit(X)
