"""Candidate label-free validity scores, measured by ``bench_model_selection.py``.

Each candidate maps one fit (its labels, ``predict_proba`` and pseudo-labels)
and a per-dataset context (a PCA embedding, neighbour graphs in it and in the
features, optionally a UMAP embedding) to a number where higher should mean
a better clustering.  The single-fit score that ``CollisionClustering.score``
returns ships as :func:`skcce.selection.neighbor_information_score`, the one
that chooses the number of clusters as :func:`skcce.selection.validity_score`
(both scored by the benchmark itself, with their timing), the restart-based
one as :func:`skcce.selection.consensus_scores`; the others stay here so the
measurement can be rerun.

Candidates are computed in groups (:func:`single_fit_candidates`,
:func:`graph_candidates`), so the benchmark's per-fit cache of scores can be
completed with a new group without recomputing the others.
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

from skcce.selection import _drop_self

N_NEIGHBORS = 10


def dataset_context(X, seed=0, umap=True):
    """Per-dataset quantities shared by every fit's candidates.

    Returns
    -------
    ctx : dict
        ``X``, ``Z`` (PCA-50), ``R`` (Gaussian random projection to 50-d),
        ``knn`` (10 neighbours in ``Z``), ``knn_x`` (10 neighbours in ``X``),
        ``U`` (UMAP-10 or None), ``half`` (a fixed random half of the rows),
        ``sub`` (2000 rows for silhouettes), ``times`` (seconds of each part).
    """
    rng = np.random.default_rng(seed)
    times = {}
    t = time.perf_counter()
    Z = PCA(min(50, X.shape[1]), random_state=seed).fit_transform(X).astype(np.float32)
    times["pca"] = time.perf_counter() - t
    t = time.perf_counter()
    knn = NearestNeighbors(n_neighbors=N_NEIGHBORS + 1).fit(Z).kneighbors(Z)[1][:, 1:]
    times["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    knn_x = _drop_self(NearestNeighbors(n_neighbors=N_NEIGHBORS + 1).fit(X).kneighbors(X)[1])
    times["knn_x"] = time.perf_counter() - t
    R = (X @ rng.standard_normal((X.shape[1], 50)).astype(np.float32)) / np.sqrt(50)
    U = None
    if umap:
        import umap as umap_module

        t = time.perf_counter()
        U = umap_module.UMAP(n_components=10, random_state=seed).fit_transform(X)
        times["umap"] = time.perf_counter() - t
    perm = rng.permutation(len(X))
    return {"kmeans_ref": {}, "X": X, "Z": Z, "R": R, "knn": knn, "knn_x": knn_x, "U": U,
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


#: The candidates of :func:`graph_candidates`, in their order.
GRAPH_NAMES = ("neighbor_information_pca", "modularity_features", "modularity_res2_features",
               "modularity_res2_pca")


def _edge_mutual_information(labels, knn, k):
    """Mutual information (nats) of the clusters at the two ends of a symmetrized k-NN edge."""
    joint = np.bincount((labels[:, None] * k + labels[knn]).ravel(), minlength=k * k)
    joint = joint.reshape(k, k).astype(np.float64)
    joint = (joint + joint.T) / (2 * joint.sum())
    marginal = joint.sum(axis=1)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.outer(marginal, marginal)[nz])).sum())


def _modularity(labels, knn, k, resolution=1.0):
    sizes = np.bincount(labels, minlength=k) / len(labels)
    return float((labels[knn] == labels[:, None]).mean() - resolution * (sizes ** 2).sum())


def graph_candidates(fit, ctx):
    """Neighbour-graph candidates of one fit, beside the shipped ones.

    ``neighbor_information_pca``: the shipped mutual information on the
    PCA-50 graph instead of its default (128-component) one; ``modularity_features``:
    the shipped modularity (``validity``) on the features' graph;
    ``modularity_res2_*``: modularity with the chance term doubled
    (resolution 2, a value set by hand after a sweep over 0.5-4 on these
    datasets: it is tuned on them), on either graph.
    """
    labels = np.asarray(fit["labels"])
    k = int(np.asarray(fit["proba"]).shape[1])
    out = {"neighbor_information_pca": _edge_mutual_information(labels, ctx["knn"], k),
           "modularity_features": _modularity(labels, ctx["knn_x"], k),
           "modularity_res2_features": _modularity(labels, ctx["knn_x"], k, 2.0),
           "modularity_res2_pca": _modularity(labels, ctx["knn"], k, 2.0)}
    assert tuple(out) == GRAPH_NAMES
    return out


def consensus_candidates(fits):
    """Restart-based candidates over a list of fits of the same data and K.

    ``consensus``: a fit's mean ARI to every other fit (any ``lam``);
    ``stability_restarts``: the mean pairwise ARI of the fits with the same
    ``lam`` (a property of the setting, given to each of its fits);
    ``agreement_same_lam``: a fit's mean ARI to the other fits of its
    ``lam`` (what the kept restart of an estimator whose restarts were
    those fits could score itself by); ``agreement_same_lam_x_size_entropy``:
    that times the normalized entropy of the fit's cluster sizes (a product
    chosen after seeing the two candidates' tables on these datasets, not a
    validated candidate).
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
        k = np.asarray(fits[i]["proba"]).shape[1]
        sizes = np.bincount(fits[i]["labels"], minlength=k) / len(fits[i]["labels"])
        sizes = sizes[sizes > 0]
        size_entropy = -(sizes * np.log(sizes)).sum() / np.log(k)
        out.append({"consensus": float(ari[i, others].mean()),
                    "stability_restarts": float((block.sum() - m) / max(m * (m - 1), 1)),
                    "agreement_same_lam": float(stab),
                    "agreement_same_lam_x_size_entropy": float(stab * size_entropy)})
    return out
