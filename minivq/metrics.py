"""Metrics for generated samples, classifiers and codebooks (host-side NumPy/SciPy).

Size letters: N real samples, M fake samples, D feature dimension, C classes,
K codebook size, R rows of one distance block.

  top_pr            TopP&R fidelity / diversity / TopF1 (implemented in minivq/topp_r.py)
  prdc              precision, recall, density, coverage of Naeem et al. (2020)
  frechet_distance  distance between Gaussian fits of two feature sets (the formula of FID)
  digit_score       the Inception-Score formula on a digit classifier's probabilities
  accuracy, confusion_matrix
  codebook_usage    perplexity, fraction of active codes, histogram of a VQ codebook

Inputs may be NumPy or CuPy arrays; they are moved to the host with backend.to_numpy.
"""
from __future__ import annotations

import numpy as np

from minivq.backend import to_numpy
from minivq.quantizer import usage_stats
from minivq.topp_r import (TopPRResult, augment_right, cosine_kde, distance_block,  # noqa: F401
                           kernel_bandwidth, kth_neighbour_distances, min_points, row_blocks,
                           sq_distance_block, top_pr)


def _features(a, name: str) -> np.ndarray:
    """(N, D) finite float64 features, or a ValueError naming the argument."""
    a = np.asarray(to_numpy(a))
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (samples, features); got shape {a.shape}")
    a = a.astype(np.float64)                                   # (N, D)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


# ---------------------------------------------------------------- PRDC
def prdc(real, fake, k: int = 5) -> dict:
    """Precision, recall, density and coverage (Naeem et al., ICML 2020) with k neighbours.

    real: (N, D), fake: (M, D).  r_i is the distance from real i to its k-th nearest other real
    point, f_j the same within the fakes.  With d_ij = |real_i - fake_j| (strict < throughout):
      precision = share of fakes j with d_ij < r_i for some i      (fakes inside the real k-NN balls)
      recall    = share of reals i with d_ij < f_j for some j      (reals inside the fake k-NN balls)
      density   = (1/(k M)) * #{(i, j): d_ij < r_i}                 (how many real balls hold each fake)
      coverage  = share of reals i whose ball holds a fake: min_j d_ij < r_i
    Returns {"precision", "recall", "density", "coverage"} as floats.
    """
    x = _features(real, "real")                                # (N, D)
    y = _features(fake, "fake")                                # (M, D)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real has {x.shape[1]} features but fake has {y.shape[1]}")
    for name, a in (("real", x), ("fake", y)):
        if a.shape[0] <= k:
            raise ValueError(f"prdc with k = {k} needs more than {k} {name} samples; got {a.shape[0]}")
    centre = x.mean(axis=0)                                    # (D,)
    x, y = x - centre, y - centre
    r = kth_neighbour_distances(x, k)                          # (N,)
    f = kth_neighbour_distances(y, k)                          # (M,)
    y_aug = augment_right(y)                                   # (M, D+2)
    fake_in_real = np.zeros(y.shape[0], dtype=bool)            # (M,)
    balls_per_fake = np.zeros(y.shape[0])                      # (M,)
    real_in_fake = np.empty(x.shape[0], dtype=bool)            # (N,)
    covered = np.empty(x.shape[0], dtype=bool)                 # (N,)
    for s, e in row_blocks(x.shape[0], y.shape[0]):
        d = np.sqrt(np.maximum(sq_distance_block(x[s:e], y_aug), 0.0))  # (R, M)
        inside = d < r[s:e, None]                              # (R, M) fake j in real ball i
        fake_in_real |= inside.any(axis=0)
        balls_per_fake += inside.sum(axis=0)
        real_in_fake[s:e] = (d < f[None, :]).any(axis=1)
        covered[s:e] = d.min(axis=1) < r[s:e]
    return {"precision": float(fake_in_real.mean()), "recall": float(real_in_fake.mean()),
            "density": float(balls_per_fake.mean() / k), "coverage": float(covered.mean())}


# ---------------------------------------------------------------- Fréchet distance
def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (D, D) -> (D, D)."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T       # (D, D)


def frechet_distance(real, fake) -> float:
    """Fréchet distance between Gaussian fits N(mu_r, C_r), N(mu_f, C_f) of real (N, D) and fake (M, D).

    d^2 = |mu_r - mu_f|^2 + tr(C_r) + tr(C_f) - 2 tr((C_r C_f)^(1/2))   (units: squared features)
    C_r C_f is not symmetric, and scipy.linalg.sqrtm of it returns tiny imaginary parts from
    round-off.  We avoid them: C_r C_f is similar to S C_f S with S = C_r^(1/2), which is
    symmetric PSD, so tr((C_r C_f)^(1/2)) = sum of sqrt(eigenvalues of S C_f S), all real.
    Covariances use N-1 (numpy.cov); each set needs >= 2 samples.
    """
    x = _features(real, "real")                                # (N, D)
    y = _features(fake, "fake")                                # (M, D)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real has {x.shape[1]} features but fake has {y.shape[1]}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("frechet_distance needs at least 2 real and 2 fake samples for a covariance")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)                # (D,)
    c_x = np.atleast_2d(np.cov(x, rowvar=False))               # (D, D)
    c_y = np.atleast_2d(np.cov(y, rowvar=False))               # (D, D)
    s = _psd_sqrt(c_x)                                         # (D, D)
    m = s @ c_y @ s                                            # (D, D) symmetric PSD
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)))
    diff = mu_x - mu_y                                         # (D,)
    return float(diff @ diff + np.trace(c_x) + np.trace(c_y) - 2.0 * tr_sqrt)


# ---------------------------------------------------------------- classifier-based scores
def digit_score(probs, eps: float = 1e-12) -> float:
    """Inception-Score formula on class probabilities probs (M, C): exp(mean_m KL(p(c|m) || p(c))).

    p(c) is the mean of the rows.  1 means the classifier sees no confident, varied digits;
    C (the number of classes) is the best: every sample confident and the classes balanced.
    """
    p = _features(probs, "probs")                              # (M, C)
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be non-negative rows that sum to 1 (softmax outputs)")
    marginal = p.mean(axis=0)                                  # (C,)
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)[None, :]), axis=1)  # (M,)
    return float(np.exp(kl.mean()))


def _labels(a, name: str) -> np.ndarray:
    a = np.asarray(to_numpy(a))
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices; got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices; got dtype {a.dtype}")
    return a.astype(np.int64)                                  # (M,)


def accuracy(pred, labels) -> float:
    """Share of positions where pred (M,) equals labels (M,); pred may also be scores (M, C) -> argmax."""
    pred = np.asarray(to_numpy(pred))
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)                             # (M,)
    pred, labels = _labels(pred, "pred"), _labels(labels, "labels")
    if pred.shape != labels.shape or pred.size == 0:
        raise ValueError(f"pred and labels must be non-empty and of equal length; got {pred.shape} and {labels.shape}")
    return float(np.mean(pred == labels))


def confusion_matrix(labels, pred, num_classes: int | None = None) -> np.ndarray:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    labels, pred = _labels(labels, "labels"), _labels(pred, "pred")
    if pred.shape != labels.shape:
        raise ValueError(f"labels and pred must have equal length; got {labels.shape} and {pred.shape}")
    if num_classes is None:
        num_classes = int(max(labels.max(initial=-1), pred.max(initial=-1))) + 1
    if labels.size and (min(labels.min(), pred.min()) < 0 or max(labels.max(), pred.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    flat = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)  # (C*C,)
    return flat.reshape(num_classes, num_classes)             # (C, C)


# ---------------------------------------------------------------- codebook usage
def codebook_usage(indices, K: int) -> dict:
    """How a VQ codebook of K codes is used by code indices (any shape, values in [0, K)):
    quantizer.usage_stats (what training logs) after checking the indices, with its keys
    spelled for reports.

    Returns {"histogram": (K,) int64 counts, "probs": (K,) frequencies,
             "perplexity": exp(entropy) in codes (1 = one code used, K = all used equally),
             "active_fraction": share of codes used at least once, "active": count of those}.
    """
    idx = np.asarray(to_numpy(indices)).ravel()
    if idx.size == 0:
        raise ValueError("codebook_usage needs at least one code index")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"code indices must be integers; got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= K:
        raise ValueError(f"code indices must lie in [0, {K}); got values from {idx.min()} to {idx.max()}")
    st = usage_stats(idx, K)  # the one computation of these statistics (quantizer.usage_stats)
    hist = st["hist"]                                          # (K,)
    return {"histogram": hist, "probs": hist / idx.size, "perplexity": st["perplexity"],
            "active_fraction": st["active"], "active": int(np.sum(hist > 0))}
