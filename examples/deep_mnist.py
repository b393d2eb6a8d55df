"""Deep clustering on MNIST from raw pixels, small enough for a CPU.

The paper's VGG-4 (``model='vgg4'``) is trained from scratch together with
the clusters, with self-augmentation (each prediction averaged over random
transforms of the image, section 5.2). Here: 1,500 images and 3 epochs,
a few minutes on two CPU cores. Accuracy is after Hungarian matching; at
this scale it is far below the paper's MNIST result (50 epochs on all 70,000
images): the example shows the workflow, not the paper's number.

MNIST is read by ``skcce.datasets.load_mnist`` from the folder named by the
``SKCCE_DATA`` environment variable: either torchvision's download folder
(``python -c "import torchvision; torchvision.datasets.MNIST('DIR',
download=True)"``, then ``SKCCE_DATA=DIR``) or a folder holding
``mnist70k.npz`` (``X`` uint8 (70000, 784), ``y``). The
paper-scale run (all 70,000 images, 50 epochs, a GPU) is the same code with
``device='cuda'``, a larger subset and more epochs; see
``benchmarks/bench_deep.py``.

Run::

    python examples/deep_mnist.py [--quick]

``--quick`` (or ``SKCCE_QUICK=1``) trains on 64 images for one epoch.
"""

import os
import sys
import time

import numpy as np

from skcce import CollisionClustering
from skcce.datasets import load_mnist
from skcce.metrics import clustering_accuracy

QUICK = "--quick" in sys.argv[1:] or os.environ.get("SKCCE_QUICK") == "1"


def main():
    try:
        X, y = load_mnist()
    except FileNotFoundError as exc:
        print(f"deep_mnist: {exc}", file=sys.stderr)
        return 1
    n = 64 if QUICK else 1500
    rows = np.random.default_rng(0).choice(X.shape[0], n, replace=False)
    X, y = X[rows], y[rows]
    model = CollisionClustering(
        n_clusters=10,
        model="vgg4",
        image_shape=(1, 28, 28),  # rows are flattened 28x28 images
        augment="default",  # flip, rotation, colour distortion; sigma averaged over copies
        n_augment=2,
        batch_size=32 if QUICK else 128,
        max_epochs=1 if QUICK else 3,
        tol=None,
        device="auto",
        random_state=0,
        verbose=0 if QUICK else 1,
    )
    start = time.perf_counter()
    labels = model.fit_predict(X)
    seconds = time.perf_counter() - start
    print(f"VGG-4 on {n} MNIST images: accuracy {clustering_accuracy(y, labels):.3f} "
          f"after {model.n_iter_} epochs ({seconds:.0f} s)")
    print(f"cluster sizes: {model.cluster_sizes_.tolist()}")
    print(f"loss per epoch: {[round(v, 4) for v in model.loss_curve_]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
