"""Out-of-core training: a numpy.memmap larger than the memory budget is never loaded whole.

``CollisionClustering.fit`` on a memmap must hold O(batch) rows of the data at
a time (plus O(n_samples * n_clusters) outputs): no full copy of X and no
float64 upcast. Two spies watch a fit on a 51 MB float32 file:

- tracemalloc sees every numpy allocation (a copy or upcast of X with numpy);
- the process's anonymous resident memory (``RssAnon``, Linux), sampled while
  the fit runs, also sees copies made by torch, which tracemalloc does not
  trace. File-backed pages of the memmap are not anonymous memory, so
  streaming the file through batches does not count.
"""

import sys
import threading
import tracemalloc

import numpy as np
import pytest

from skcce import CollisionClustering

N_SAMPLES, N_FEATURES = 200_000, 64  # 51 MB of float32
BUDGET = 30 * 2**20  # bytes: 60% of the file


def _rss_anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class _PeakSampler(threading.Thread):
    """Highest RssAnon above the start value, sampled every millisecond."""

    def __init__(self):
        super().__init__(daemon=True)
        self.start_value = _rss_anon()
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(0.001):
            self.peak = max(self.peak, _rss_anon() - self.start_value)

    def stop(self):
        self._stop_event.set()
        self.join()
        return self.peak


@pytest.fixture(scope="module")
def memmap_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ooc") / "X.f32"
    rng = np.random.default_rng(0)
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(N_SAMPLES, N_FEATURES))
    centers = rng.normal(scale=3, size=(4, N_FEATURES)).astype(np.float32)
    for start in range(0, N_SAMPLES, 50_000):
        rows = slice(start, start + 50_000)
        out[rows] = centers[rng.integers(4, size=50_000)] + rng.standard_normal(
            (50_000, N_FEATURES), dtype=np.float32)
    out.flush()
    del out
    return path


def _estimator():
    # augment=None: the neighbour graph's memory is tested in test_neighbors.py
    return CollisionClustering(n_clusters=4, max_epochs=1, batch_size=2048, augment=None,
                               random_state=0, device="cpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_fit_on_a_memmap_never_loads_it_whole(memmap_file):
    X = np.memmap(memmap_file, dtype=np.float32, mode="r", shape=(N_SAMPLES, N_FEATURES))
    assert X.nbytes > 1.6 * BUDGET
    _estimator().fit(X[:5000])  # imports, thread pools and kernels before measuring
    sampler = _PeakSampler()
    sampler.start()
    tracemalloc.start()
    try:
        est = _estimator().fit(X)
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        anon_peak = sampler.stop()
    assert est.labels_.shape == (N_SAMPLES,)
    assert len(np.unique(est.labels_)) > 1
    # a float64 upcast would be 102 MB, a float32 copy 51 MB
    assert numpy_peak < BUDGET, f"numpy allocations peaked at {numpy_peak / 2**20:.0f} MB"
    assert anon_peak < BUDGET, f"anonymous memory grew by {anon_peak / 2**20:.0f} MB"
