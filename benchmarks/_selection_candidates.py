"""Candidate label-free validity scores, measured by ``bench_model_selection.py``.

Each candidate maps one fit (its labels, ``predict_proba`` and pseudo-labels)
and a per-dataset context (a PCA embedding, its neighbour graph, optionally a
UMAP embedding) to a number where higher should mean a better clustering.
The best single-fit one ships as :func:`skcce.selection.validity_score`
(scored by the benchmark itself, with its timing), the restart-based one as
:func:`skcce.selection.consensus_scores`; the others stay here so the
measurement can be rerun.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.neighbors import NearestNeighbors

N_NEIGHBORS = 10


def dataset_context(X, seed=0, umap=True):
    """Per-dataset quantities shared by every fit's candidates.

    Returns
    -------
    ctx : dict
        ``X``, ``Z`` (PCA-50), ``R`` (Gaussian random projection to 50-d),
        ``knn`` (10 neighbours in ``Z``), ``U`` (UMAP-10 or None), ``half``
        (a fixed random half of the rows), ``sub`` (2000 rows for
        silhouettes), ``times`` (seconds of each part).
    """
    rng = np.random.default_rng(seed)
    times = {}
    t = time.perf_counter()
    Z = PCA(min(50, X.shape[1]), random_state=seed).fit_transform(X).astype(np.float32)
    times["pca"] = time.perf_counter() - t
    t = time.perf_counter()
    knn = NearestNeighbors(n_neighbors=N_NEIGHBORS + 1).fit(Z).kneighbors(Z)[1][:, 1:]
    times["knn"] = time.perf_counter() - t
    R = (X @ rng.standard_normal((X.shape[1], 50)).astype(np.float32)) / np.sqrt(50)
    U = None
    if umap:
        import umap as umap_module

        t = time.perf_counter()
        U = umap_module.UMAP(n_components=10, random_state=seed).fit_transform(X)
        times["umap"] = time.perf_counter() - t
    perm = rng.permutation(len(X))
    return {"kmeans_ref": {}, "X": X, "Z": Z, "R": R, "knn": knn, "U": U,
            "half": perm[: len(X) // 2], "rest": perm[len(X) // 2:],
            "sub": perm[: min(2000, len(X))], "times": times}


def _probe(F, labels, ctx):
    a, b = ctx["half"], ctx["rest"]
    if len(np.unique(labels[a])) < 2:
        return 0.0, labels[b]
    clf = LogisticRegression(max_iter=200).fit(F[a], labels[a])
    pred = clf.predict(F[b])
    return float(np.mean(pred == labels[b])), pred


def _prediction_strength(labels, pred):
    """Tibshirani-Walther prediction strength, classifier variant.

    For each cluster of the held-out half, the fraction of its pairs that
    the probe (trained on the other half) also puts together; the minimum
    over clusters.
    """
    strengths = []
    for k in np.unique(labels):
        members = pred[labels == k]
        n = len(members)
        if n < 2:
            continue
        counts = np.bincount(members)
        strengths.append((counts * (counts - 1)).sum() / (n * (n - 1)))
    return float(min(strengths)) if strengths else 0.0


def _kmeans_reference(ctx, k):
    """K-means (one start) on the PCA embedding, computed once per K."""
    if k not in ctx["kmeans_ref"]:
        from sklearn.cluster import KMeans

        ctx["kmeans_ref"][k] = KMeans(k, n_init=1, random_state=0).fit_predict(ctx["Z"])
    return ctx["kmeans_ref"][k]


def _silhouette(F, labels, sub):
    lab = labels[sub]
    if len(np.unique(lab)) < 2:
        return -1.0
    return float(silhouette_score(F[sub], lab))


def single_fit_candidates(fit, ctx):
    """Every single-fit candidate of one fit (higher = better, by intent)."""
    labels = np.asarray(fit["labels"])
    proba = np.asarray(fit["proba"], dtype=np.float64)
    knn = ctx["knn"]
    same = labels[knn] == labels[:, None]
    k = proba.shape[1]
    sizes = np.bincount(labels, minlength=k) / len(labels)
    nz = sizes[sizes > 0]
    per_cluster = [same[labels == c].mean() for c in np.unique(labels)]
    probe_z, pred = _probe(ctx["Z"], labels, ctx)
    probe_r, _ = _probe(ctx["R"], labels, ctx)
    out = {
        "neg_loss": -fit["loss"],
        "probe_pca": probe_z,
        "probe_randproj": probe_r,
        "pred_strength": _prediction_strength(labels[ctx["rest"]], pred),
        "knn_agree": float(same.mean()),
        "knn_agree_min": float(min(per_cluster)),
        "knn_agree_balanced": float(np.mean(per_cluster)),
        "knn_excess": float(np.mean(np.asarray(per_cluster) - nz)),
        "knn_agree_corrected": float(np.mean([(a - p) / (1 - p) if p < 1 else 0.0
                                              for a, p in zip(per_cluster, nz, strict=True)])),
        "nbr_collision": float(np.mean(np.einsum("ik,ijk->ij", proba, proba[knn]))),
        "silhouette_X": _silhouette(ctx["X"], labels, ctx["sub"]),
        "silhouette_pca": _silhouette(ctx["Z"], labels, ctx["sub"]),
        "calinski_pca": float(calinski_harabasz_score(ctx["Z"], labels))
        if len(nz) > 1 else 0.0,
        "neg_davies_pca": -float(davies_bouldin_score(ctx["Z"], labels))
        if len(nz) > 1 else -np.inf,
        "confidence": float(proba.max(axis=1).mean()),
        "collision": float((proba ** 2).sum(axis=1).mean()),
        "neg_entropy": float((proba * np.log(np.clip(proba, 1e-12, None))).sum(axis=1).mean()),
        "size_entropy": float(-(nz * np.log(nz)).sum() / np.log(k)),
        "ari_kmeans_pca": float(adjusted_rand_score(labels, _kmeans_reference(ctx, k))),
    }
    if ctx["U"] is not None:
        out["silhouette_umap"] = _silhouette(ctx["U"], labels, ctx["sub"])
    return out


def consensus_candidates(fits):
    """Restart-based candidates over a list of fits of the same data and K.

    ``consensus``: a fit's mean ARI to every other fit (any ``lam``);
    ``stability``: the mean pairwise ARI of the fits with the same ``lam``
    (a property of the setting, given to each of its fits).
    """
    n = len(fits)
    ari = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            ari[i, j] = ari[j, i] = adjusted_rand_score(fits[i]["labels"], fits[j]["labels"])
    lams = np.array([f["lam"] for f in fits])
    out = []
    for i in range(n):
        same = (lams == lams[i])
        same[i] = False
        others = np.arange(n) != i
        stab = ari[i, same].mean() if same.any() else np.nan
        setting = lams == lams[i]
        block = ari[np.ix_(setting, setting)]
        m = setting.sum()
        out.append({"consensus": float(ari[i, others].mean()),
                    "stability_restarts": float((block.sum() - m) / max(m * (m - 1), 1)),
                    "agreement_same_lam": float(stab)})
    return out
