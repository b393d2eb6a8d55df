"""The fast paths of the training loop give the results of the plain ones, on a fixed thread count.

Performance itself is measured by ``benchmarks/bench_throughput.py``; these
tests check that the optimized code computes the same thing: batches
gathered from a tensor view of X, the pseudo-label solver's unvalidated
core, one cross-entropy call for a neighbour pair, large prediction chunks,
and a fit whose result does not depend on the caller's thread settings.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClustering
from skcce._objectives import CrossNeighborObjective, SelfLabelingObjective
from skcce._sources import ArraySource
from skcce._training import Batch, ModelStep, Trainer, intra_op_threads
from skcce.solvers import solve_pseudo_labels

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits():
    return StandardScaler().fit_transform(load_digits().data).astype(np.float32)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_seeded_fit_does_not_depend_on_the_callers_thread_count(digits, restore_threads):
    # issue 10 #9: the MLP head gave 89% label agreement between 1 and 2 threads
    fits = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        est = CollisionClustering(10, model="mlp", max_epochs=2, device="cpu", random_state=0)
        fits.append(est.fit(digits))
        assert torch.get_num_threads() == threads  # the caller's setting is restored
    one, two = fits
    np.testing.assert_array_equal(one.labels_, two.labels_)
    assert one.loss_curve_ == two.loss_curve_
    np.testing.assert_array_equal(one.predict_proba(digits), two.predict_proba(digits))


def test_intra_op_threads_restores_the_setting_after_an_error(restore_threads):
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with intra_op_threads(None):
        assert torch.get_num_threads() == 2


def test_trainer_predicts_on_its_own_thread_count(restore_threads):
    torch.set_num_threads(2)
    seen = []

    class Probe(torch.nn.Linear):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return super().forward(x)

    trainer = Trainer(Probe(3, 2), None, batch_size=4)
    trainer.predict_log_proba(ArraySource(np.zeros((10, 3), np.float32)))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("make", [
    lambda X: X,                                   # float32, C-contiguous: tensor view
    lambda X: X.astype(np.float64),                # converted per batch
    lambda X: np.asfortranarray(X),                # not C-contiguous
    lambda X: X[:, ::2].copy()[:, :2],             # a view of another array
])
def test_array_source_rows_are_the_same_on_every_path(make):
    X = np.arange(40, dtype=np.float32).reshape(10, 4)[:, :2].copy()
    X = make(X)
    idx = np.array([3, 0, 9, 3])
    rows = ArraySource(X).rows(idx)
    assert rows.dtype == torch.float32
    np.testing.assert_array_equal(rows.numpy(), np.asarray(X, dtype=np.float32)[idx])
    rows += 1  # a batch is a copy: writing to it leaves X alone
    np.testing.assert_array_equal(ArraySource(X).rows(idx).numpy(),
                                  np.asarray(X, dtype=np.float32)[idx])


def test_array_source_reads_a_memmap_per_batch(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    source = ArraySource(mm)
    assert source._tensor is None  # never loaded whole
    np.testing.assert_array_equal(source.rows([5, 1]).numpy(), X[[5, 1]])


@pytest.mark.parametrize("prior", [None, np.array([0.5, 0.3, 0.2])])
def test_solver_core_gives_the_fronts_pseudo_labels(prior):
    rng = np.random.default_rng(0)
    proba = torch.softmax(torch.from_numpy(rng.normal(size=(50, 3)) * 2), dim=1).float()
    objective = SelfLabelingObjective(lam=1.0, prior=prior, solver_tol=1e-4)
    p = objective.solver_input(proba)
    expected = solve_pseudo_labels(p / p.sum(axis=1, keepdims=True), 1.0, prior, max_iter=100,
                                   tol=1e-4, warn=False).y
    # the same problem to the solver's precision (bit-identical with today's solvers)
    np.testing.assert_allclose(objective.solve(p), expected, rtol=0, atol=1e-7)
    assert objective.n_solves == 1


def test_non_finite_predictions_give_nan_pseudo_labels():
    # a diverged step: the loss becomes NaN and the loop restores the last good state
    objective = SelfLabelingObjective(lam=1.0)
    p = np.full((4, 2), 0.5)
    p[1, 0] = np.inf
    assert np.isnan(objective.solve(p)).all()
    assert objective.solver_stats() == (0, 0)


def _reference_cross_neighbor(base, neighbors, step, batch):
    """The pair objective as two solver calls and two cross-entropy calls (the plain form)."""
    from skcce.augment import random_neighbors

    j = random_neighbors(neighbors, batch.indices, step.generator)
    pair = Batch(indices=batch.indices, x=torch.cat([batch.x, step.rows(j)]))
    log_proba = step.log_proba(pair, views=False)
    n = len(batch.x)
    lp_i, lp_j = log_proba[:n], log_proba[n:]
    y_i = base.pseudo_labels(lp_j.detach().exp())
    y_j = base.pseudo_labels(lp_i.detach().exp())
    loss = 0.5 * (base.cross_entropy(lp_i, y_i) + base.cross_entropy(lp_j, y_j))
    return loss, 0.5 * (base.fairness_value(y_i) + base.fairness_value(y_j)), y_i


@pytest.mark.parametrize("loss", ["collision", "shannon"])
def test_cross_neighbor_step_matches_the_plain_form(loss):
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(40, 5)).astype(np.float32))
    neighbors = rng.integers(0, 40, size=(40, 3))
    solver = "em" if loss == "collision" else "pgd"
    grads, outputs = [], []
    for fused in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 4)
        base = SelfLabelingObjective(lam=1.0, loss=loss, solver=solver,
                                     fairness="reverse" if loss == "collision" else "forward")
        step = ModelStep(model, rows=lambda idx: X[torch.as_tensor(idx)],
                         generator=torch.Generator().manual_seed(1))
        batch = Batch(indices=np.arange(16), x=X[:16])
        if fused:
            out = CrossNeighborObjective(base, neighbors)(step, batch)
            value, y = out.value, out.y
            out.loss.backward()
        else:
            ref, fair, y = _reference_cross_neighbor(base, neighbors, step, batch)
            value = float(ref.detach()) + fair
            ref.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        outputs.append((value, y))
    assert outputs[0][0] == outputs[1][0]
    assert torch.equal(outputs[0][1], outputs[1][1])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_prediction_chunks_are_large_for_feature_vectors_only():
    trainer = Trainer(torch.nn.Linear(64, 3), None, batch_size=256)
    assert trainer.predict_chunk_size(ArraySource(np.zeros((5, 64), np.float32))) > 256

    class Images:
        input_shape = (3, 32, 32)

    assert trainer.predict_chunk_size(Images()) == 256


def test_prediction_does_not_depend_on_the_chunk_size():
    X = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16),
                                torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model(torch.from_numpy(X[:64]))  # BatchNorm statistics that are not the defaults
    big = Trainer(model, None, batch_size=256).predict_log_proba(ArraySource(X))
    small = Trainer(model, None, batch_size=7)
    small.predict_chunk_size = lambda source: 7
    torch.testing.assert_close(big, small.predict_log_proba(ArraySource(X)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_jobs, expected", [(None, 1), (1, 1), (2, 2), (-1, None)])
def test_n_jobs_sets_the_threads_of_the_fit(digits, restore_threads, n_jobs, expected):
    import os

    seen = []

    class Probe(torch.nn.Linear):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return super().forward(x)

    torch.set_num_threads(1)
    est = CollisionClustering(3, model=lambda: Probe(64, 3), max_epochs=1, n_jobs=n_jobs,
                              device="cpu", random_state=0).fit(digits[:200])
    del seen[:1]  # building the model probes its output width once, outside the fit
    est.predict(digits[:10])
    assert set(seen) == {expected or os.cpu_count()}
    assert torch.get_num_threads() == 1


def test_n_jobs_zero_is_rejected(digits):
    with pytest.raises(ValueError, match="n_jobs"):
        CollisionClustering(3, n_jobs=0).fit(digits[:50])
