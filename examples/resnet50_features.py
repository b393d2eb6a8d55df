"""The ResNet-50 features workflow: extract CNN features once, then cluster them.

1. ``skcce.extract_features(images, model='resnet50', weights=...)`` returns the
   2048-d pooled features of an ImageNet-pretrained ResNet-50 (images resized
   to 224x224, grey images repeated to 3 channels, ImageNet normalization).
2. ``StandardScaler -> CollisionClustering`` clusters them.

The images here are scikit-learn's digits, so the script runs offline. The
weights are, in order of preference:

* ``weights='DEFAULT'``: torchvision's pretrained weights, downloaded once on
  a connected machine (not tried in quick mode);
* a local ``state_dict`` file named by ``SKCCE_RESNET50_WEIGHTS`` (save one on a
  connected machine with
  ``torch.save(torchvision.models.resnet50(weights="DEFAULT").state_dict(), "r50.pt")``);
* random weights, in which case the script says so plainly: **the features
  and every accuracy computed from them then mean nothing** (the run only
  shows that the pipeline works).

Run::

    python examples/resnet50_features.py [--quick]

``--quick`` (or ``SKCCE_QUICK=1``) uses 60 images at 64x64 and a few epochs.
The full run extracts features of 600 digits at 112x112 (the digits are
8x8, so nothing is lost against the usual 224x224), a couple of minutes on a
CPU.
"""

import os
import sys

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClustering, extract_features
from skcce.metrics import clustering_accuracy

QUICK = "--quick" in sys.argv[1:] or os.environ.get("SKCCE_QUICK") == "1"


def extract(images, size):
    """Features with the best weights available; returns (features, description)."""
    if not QUICK:
        try:
            feats = extract_features(images, "resnet50", weights="DEFAULT", size=size)
            return feats, "torchvision's pretrained ResNet-50 (weights='DEFAULT')"
        except Exception as exc:  # noqa: BLE001 - offline: fall back below
            print(f"weights='DEFAULT' unavailable ({type(exc).__name__}); falling back")
    local = os.environ.get("SKCCE_RESNET50_WEIGHTS")
    if local:
        return (extract_features(images, "resnet50", weights=local, size=size),
                f"ResNet-50 with the local state_dict {local}")
    print("WARNING: no pretrained weights available; using RANDOM weights. The features and "
          "the accuracies below mean nothing: this run only shows that the pipeline works.")
    return extract_features(images, "resnet50", weights=None, size=size), "RANDOM weights"


def main():
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)  # (n, 8, 8) grey
    y = digits.target
    # 600 digits keep the CPU run to a couple of minutes; use all 1,797 on a GPU.
    images, y = (images[:60], y[:60]) if QUICK else (images[:600], y[:600])
    # The digits are 8x8 pixels, so 112x112 inputs lose nothing and cost a quarter of 224x224.
    feats, source = extract(images, size=64 if QUICK else 112)
    print(f"features: {feats.shape} from {source}")
    n_clusters = 10
    cce = make_pipeline(StandardScaler(), CollisionClustering(
        n_clusters=n_clusters, max_epochs=3 if QUICK else 50, batch_size=60 if QUICK else 256,
        random_state=0))
    kmeans = make_pipeline(StandardScaler(), KMeans(n_clusters, n_init=10, random_state=0))
    for name, model in (("CollisionClustering", cce), ("KMeans", kmeans)):
        acc = clustering_accuracy(y, model.fit_predict(feats))
        print(f"{name:>20}: accuracy {acc:.3f}")
    print("the same from the shell: skcce extract IMAGES --model resnet50 --out feats.npy && "
          "skcce fit feats.npy --n-clusters 10")


if __name__ == "__main__":
    main()
