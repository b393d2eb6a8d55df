"""Data-parallel training on torch.distributed: time per epoch of 2 gloo ranks against 1 process.

:class:`skcce.CollisionClustering` is fitted on a synthetic mixture (10
Gaussian components) by one process with batch ``2 b`` and by two gloo
processes on 127.0.0.1 with local batch ``b``, i.e. the same global batch
(the two runs fit the same model: ``tests/test_distributed_torch.py``).
Each process uses one torch thread. The time of an epoch is the training
loop's own epoch duration (the neighbour graph, built once per fit, is not
in it), the median over every epoch after the first of every repeat; for two
ranks, the slower rank's epoch.

Communication: in the two-rank runs every collective is timed where it is
called: the all-gathers of the pseudo-label solves, the all-reduces of the
fairness value, the step's finiteness flag and the epoch history, the
generator broadcast, and the gradient all-reduce of
DistributedDataParallel (through a communication hook that runs the
all-reduce synchronously, so it is timed alone, without overlap with the
backward pass). The time includes waiting for the other rank, so it is
"communication and synchronization".

Usage: ``python benchmarks/bench_distributed.py [--quick] [--output PATH]``;
the full run writes ``docs/benchmarks/distributed.md``, ``--quick`` a smoke
run on small data to a temporary folder.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_description, write_markdown  # noqa: E402

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks")


def mixture(n_samples, n_features, seed=0):
    """Ten Gaussian components, float32."""
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=n_samples, n_features=n_features, centers=10,
                      cluster_std=2.0, random_state=seed)
    return X.astype(np.float32)


# --------------------------------------------------------------------------- one process
def _timed(fn, box):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            box[0] += time.perf_counter() - start
    return wrapper


def _instrument(comm):
    """Time every collective of skcce._distributed and DDP's gradient all-reduce into ``comm``."""
    import torch
    import torch.distributed as dist

    import skcce._distributed as sd

    class TimedDist:
        def __getattr__(self, name):
            attr = getattr(dist, name)
            if name in ("all_reduce", "all_gather", "broadcast"):
                return _timed(attr, comm)
            return attr

    sd.dist = TimedDist()
    make_module = sd.Shard.module

    def allreduce_hook(state, bucket):
        start = time.perf_counter()
        grads = bucket.buffer().div_(dist.get_world_size())
        dist.all_reduce(grads)
        comm[0] += time.perf_counter() - start
        future = torch.futures.Future()
        future.set_result(grads)
        return future

    def module(self, model):
        had = self._ddp
        out = make_module(self, model)
        if self._ddp is not None and self._ddp is not had:
            self._ddp.register_comm_hook(None, allreduce_hook)
        return out

    sd.Shard.module = module


def worker(rank, world, port, config, out):
    """One process of a run: fit ``config['repeats']`` times, write epoch and comm times."""
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist

    import skcce._objectives as objectives
    from skcce import CollisionClustering
    from skcce._callbacks import Callback

    comm, solve = [0.0], [0.0]
    objectives.SelfLabelingObjective.pseudo_labels = _timed(
        objectives.SelfLabelingObjective.pseudo_labels, solve)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
        _instrument(comm)

    class Epochs(Callback):
        def __init__(self):
            self.times, self.comm, self.solve = [], [], []

        def on_epoch_begin(self, trainer, epoch):
            self._comm, self._solve = comm[0], solve[0]

        def on_epoch_end(self, trainer, record):
            self.times.append(record.duration)
            self.comm.append(comm[0] - self._comm)
            self.solve.append(solve[0] - self._solve)

    X = mixture(config["n_samples"], config["n_features"])
    runs = []
    for repeat in range(config["repeats"]):
        epochs = Epochs()
        CollisionClustering(n_clusters=10, batch_size=config["batch_size"] // world,
                            max_epochs=config["epochs"], model=config["model"],
                            random_state=repeat, callbacks=[epochs]).fit(X)
        runs.append({"times": epochs.times, "comm": epochs.comm, "solve": epochs.solve})
    if world > 1:
        dist.destroy_process_group()
    with open(out, "w") as fh:
        json.dump(runs, fh)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world, config, folder):
    """Run ``world`` worker processes (as torchrun would) and return each rank's runs."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1"}
    outs = [os.path.join(folder, f"w{world}_r{r}.json") for r in range(world)]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(r),
                               str(world), str(port), json.dumps(config), outs[r]], env=env)
             for r in range(world)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"a worker of the {world}-process run failed (exit codes {codes})")
    runs = []
    for path in outs:
        with open(path) as fh:
            runs.append(json.load(fh))
    return runs


def epoch_times(runs):
    """Median epoch time (slowest rank per epoch, epochs after the first), comm and solve shares.

    The shares (of the epoch, averaged over the ranks) are medians over the
    same epochs.  Inside the pseudo-label solve, the all-gather is counted in
    both: the solve share below excludes it.
    """
    times, comm, solve = [], [], []
    for repeat in range(len(runs[0])):
        per_rank = np.array([r[repeat]["times"] for r in runs])
        skip = 1 if per_rank.shape[1] > 1 else 0
        times += per_rank.max(axis=0)[skip:].tolist()
        for key, out in (("comm", comm), ("solve", solve)):
            share = np.array([r[repeat][key] for r in runs]) / per_rank
            out += share.mean(axis=0)[skip:].tolist()
    return (float(np.median(times)), float(np.median(comm)), float(np.median(solve)),
            len(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--output", default=None, help="markdown report to write")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    output = args.output or os.path.join(DOCS, "distributed.md")
    if args.quick:
        configs = [dict(n_samples=2000, n_features=32, batch_size=256, epochs=2,
                        model="linear", repeats=1)]
    else:
        configs = [dict(n_samples=20000, n_features=128, batch_size=bs, epochs=4, model=model,
                        repeats=args.repeats)
                   for model in ("linear", "mlp") for bs in (512, 2048)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for config in configs:
            load = os.getloadavg()[0]
            one, _, solve_one, n_one = epoch_times(launch(1, config, folder))
            two, comm, solve_two, n_two = epoch_times(launch(2, config, folder))
            rows.append({"data": f"{config['n_samples']:,} x {config['n_features']}",
                         "model": config["model"], "global batch": config["batch_size"],
                         "1 process s/epoch": one, "2 ranks s/epoch": two,
                         "ratio 2 / 1": two / one, "2 ranks: comm share": comm,
                         "solve share (1 / 2)": f"{solve_one:.2f} / {solve_two:.2f}",
                         "epochs timed (1 / 2)": f"{n_one} / {n_two}",
                         "load before": load})
    command = "python benchmarks/bench_distributed.py" + (" --quick" if args.quick else "")
    header = "\n\n".join([
        __doc__.split("Usage:")[0].split("\n", 1)[1].strip(),
        f"Command: `{command}`. 10 clusters, default augment='cross_neighbors', "
        "mlp = the default MLP (one hidden layer of 512 units, BatchNorm). A ratio of 0.5 "
        "would be a perfect speed-up; the comm share is the median over epochs of the "
        "fraction of an epoch a rank spent in collectives; the solve share the fraction "
        "spent in the pseudo-label solves (every rank solves the global batch, so this part "
        "does not shrink with more ranks; for 2 ranks it includes the all-gathers). "
        "'load before': the machine's 1-minute load average before the row's runs (the 2 "
        "cores are shared with other jobs; above 2 the ranks compete for a core).",
        f"Machine: {machine_description()}"])
    print(write_markdown(output, "Data-parallel training (torch.distributed, gloo)", header,
                         rows, quick=args.quick))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        rank, world, port, config, out = sys.argv[2:7]
        worker(int(rank), int(world), int(port), json.loads(config), out)
    else:
        main()
