"""TEMI objective (skcce._temi) and CollisionClustering(loss='temi')."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClustering
from skcce._temi import TEMI_HEADS, EMATeacher, TEMIHead, TEMIObjective, temi_loss
from skcce._training import Batch, ModelStep
from skcce.metrics import clustering_accuracy


def test_temi_loss_hand_computed():
    student = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    teacher = torch.tensor([[0.6, 0.4], [0.1, 0.9]])
    weight = torch.tensor([0.5, 2.0])
    marginal = torch.tensor([0.25, 0.75])
    beta = 0.6
    row0 = -0.5 * math.log((0.8 * 0.6) ** beta / 0.25 + (0.2 * 0.4) ** beta / 0.75)
    row1 = -2.0 * math.log((0.3 * 0.1) ** beta / 0.25 + (0.7 * 0.9) ** beta / 0.75)
    value = temi_loss(student.log(), teacher, weight, marginal.log(), beta)
    assert float(value) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_temi_loss_rewards_confident_agreement():
    uniform = torch.full((1, 3), 1 / 3)
    onehot = torch.tensor([[1.0, 1e-9, 1e-9]])
    log_u = uniform[0].log()
    agree = temi_loss(onehot.log(), onehot, torch.ones(1), log_u)
    flat = temi_loss(uniform.log(), uniform, torch.ones(1), log_u)
    assert float(agree) < float(flat)


def _blobs():
    X, y = make_blobs(n_samples=300, centers=[[-6, 0], [0, 6], [6, 0]], cluster_std=1.0,
                      random_state=0)
    return StandardScaler().fit_transform(X), y


def test_temi_clusters_separated_blobs():
    X, y = _blobs()
    est = CollisionClustering(n_clusters=3, loss="temi", max_epochs=30, random_state=0).fit(X)
    assert clustering_accuracy(y, est.labels_) > 0.95
    assert np.isfinite(est.loss_)
    assert est.pseudo_labels_ is None


def test_temi_seeded_reproducible():
    X, _ = _blobs()
    a = CollisionClustering(n_clusters=3, loss="temi", max_epochs=5, random_state=3).fit(X)
    b = CollisionClustering(n_clusters=3, loss="temi", max_epochs=5, random_state=3).fit(X)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_ == b.loss_curve_


def test_temi_ema_teacher_moves_slower_than_student():
    X, _ = _blobs()
    X = torch.as_tensor(X, dtype=torch.float32)
    neighbors = np.stack([(np.arange(len(X)) + 1) % len(X)] * 2, axis=1)
    with torch.random.fork_rng():  # a seeded start that leaves the global generator as it was
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 3)
    teacher = EMATeacher(momentum=0.9)
    trainer = SimpleNamespace(model=model)
    teacher.on_train_begin(trainer)
    objective = TEMIObjective(neighbors, teacher, 3)
    step = ModelStep(model, rows=lambda idx: X[torch.as_tensor(idx)],
                     generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    def params(m):
        return [p.detach().clone() for p in m.parameters()]

    def distance(before, m):
        return sum(float((p.detach() - b).norm()) for p, b in zip(m.parameters(), before,
                                                                  strict=True))

    # path lengths: the sum of each step's movement (the end points alone depend on where
    # an oscillating student happens to stop)
    student_moved = teacher_moved = 0.0
    for _ in range(20):
        idx = np.arange(64)
        student, held = params(model), params(teacher.model)
        optimizer.zero_grad()
        objective(step, Batch(indices=idx, x=X[idx])).loss.backward()
        optimizer.step()
        teacher.on_batch_end(trainer, None, None)
        student_moved += distance(student, model)
        teacher_moved += distance(held, teacher.model)
    assert 0 < teacher_moved < student_moved
    # the teacher never receives gradients
    assert all(p.grad is None for p in teacher.model.parameters())


def test_temi_needs_neighbor_graph():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="loss='temi'"):
        CollisionClustering(n_clusters=3, loss="temi", augment=None).fit(X)


def test_temi_with_partial_labels():
    X, y = _blobs()
    partial = np.full(len(y), -1)
    partial[:10] = y[:10]
    est = CollisionClustering(n_clusters=3, loss="temi", max_epochs=3, random_state=0)
    assert est.fit(X, partial).labels_.shape == (len(X),)


def test_temi_predicts_with_lowest_loss_head():
    X, _ = _blobs()
    est = CollisionClustering(n_clusters=3, loss="temi", max_epochs=3, random_state=0).fit(X)
    model = est.model_
    assert isinstance(model, TEMIHead) and len(model.prototypes) == 3 * TEMI_HEADS
    head = int(model.head)
    assert 0 <= head < TEMI_HEADS
    with torch.no_grad():
        all_heads = model.train()(torch.as_tensor(X, dtype=torch.float32))
    model.eval()
    expected = all_heads[:, 3 * head:3 * head + 3].argmax(dim=1).numpy()
    np.testing.assert_array_equal(est.predict(X), expected)
