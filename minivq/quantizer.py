"""Vector quantiser: nearest-code lookup, straight-through gradient, codebook/commitment
losses, EMA codebook updates, k-means initialisation, dead-code restart, usage statistics.

Size letters: N vectors (batch x positions, flattened), D code dimension, K codebook size.

The quantiser replaces each encoder output z_e[n] (D,) by its nearest codebook row
e[k] with k = argmin_k ||z_e[n] - e[k]||^2. The argmin has no gradient, so training uses
(van den Oord et al., 2017):
    z_q = z_e + sg(e[k] - z_e)                 straight-through: dL/dz_e gets dL/dz_q as is
    L_codebook = mean (sg(z_e) - e[k])^2       moves the codes towards the encoder outputs
    L_commit   = beta * mean (z_e - sg(e[k]))^2  keeps the encoder close to its codes
(sg = stop-gradient; the means run over all N*D elements, as torch's F.mse_loss does.)
Instead of L_codebook the codes can follow an exponential moving average of the vectors
assigned to them (``ema_update``), which is often steadier.
"""
import math
from typing import NamedTuple

from minivq.backend import xp, asarray, rng as host_rng, to_numpy
# scatter_sum(idx, values, K): the sum of the vectors assigned to each code, as a one-hot matrix
# product that (unlike a scatter-add on the GPU) adds in the same order every run
from minivq.layers import scatter_sum


# ----------------------------------------------------------------------------- lookup
def nearest_code(z, codebook):
    """z: (N, D), codebook: (K, D) -> idx (N,) int64, dist2 (N,) squared distance to it.
    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2: one (N, D) x (D, K) matrix product instead of
    an (N, K, D) difference tensor. ||z||^2 does not change the argmin, so it is added last."""
    e2 = (codebook * codebook).sum(axis=1)  # (K,)
    # -2 is folded into the small (D, K) operand and ||e||^2 added in place: one pass over the
    # (N, K) scores instead of three (scaling by a power of 2 is exact, so the values are the same)
    scores = z @ (-2.0 * codebook.T)  # (N, K)
    scores += e2  # (N, K)  = dist2 - ||z||^2
    idx = scores.argmin(axis=1)  # (N,)
    z2 = (z * z).sum(axis=1)  # (N,)
    dist2 = xp.maximum(scores[xp.arange(z.shape[0]), idx] + z2, 0.0)  # (N,) clamp round-off
    return idx.astype(xp.int64), dist2


def code_counts(idx, K):
    """idx: (...) int -> counts (K,) int64: how many vectors chose each code."""
    return xp.bincount(idx.reshape(-1), minlength=K)  # (K,)


# ----------------------------------------------------------------------------- forward/backward
class QuantizeCache(NamedTuple):
    diff: object          # (N, D) e[idx] - z_e
    idx: object           # (N,) the chosen codes
    codebook_shape: tuple  # (K, D)
    beta: float           # commitment weight
    codebook_loss: bool   # whether L_codebook is part of the loss (False with EMA codes)


def quantize_forward(z_e, codebook, beta=0.25, codebook_loss=True, idx=None):
    """z_e: (N, D) encoder outputs, codebook: (K, D) ->
    (z_q (N, D), idx (N,), losses dict {'codebook', 'commit'} (scalars), cache).

    beta: weight of the commitment loss. codebook_loss=False (EMA training) leaves the
    codebook loss out of the total (it is still reported as 0). idx: pass (N,) indices to
    hold the assignment fixed (gradient checks); default: nearest code."""
    if idx is None:
        idx, _ = nearest_code(z_e, codebook)
    e = codebook[idx]  # (N, D) chosen codes
    diff = e - z_e  # (N, D)
    m = float((diff * diff).mean()) if diff.size else 0.0
    # forward value of z_e + sg(e - z_e) is just e; the name records the gradient route
    z_q = e
    losses = {"codebook": m if codebook_loss else 0.0, "commit": beta * m}
    cache = QuantizeCache(diff, idx, codebook.shape, beta, codebook_loss)
    return z_q, idx, losses, cache


def quantize_backward(dz_q, cache, dloss=1.0):
    """dz_q: (N, D) gradient of the loss w.r.t. z_q; dloss: weight of the VQ losses in the
    total loss (d total / d (L_codebook + L_commit)) -> dz_e (N, D), dcodebook (K, D).

    dz_e      = dz_q  (straight-through)  + dloss * 2 beta (z_e - e) / (N D)   (commitment)
    dcodebook[k] = dloss * 2 sum_{n: idx[n]=k} (e[k] - z_e[n]) / (N D)        (codebook loss)
    No gradient reaches e through z_q or z_e through L_codebook: those are the stop-gradients."""
    diff, idx, (K, D), beta = cache.diff, cache.idx, cache.codebook_shape, cache.beta
    scale = 2.0 * dloss / max(diff.size, 1)
    dz_e = dz_q - (beta * scale) * diff  # (N, D)   diff = e - z_e
    if cache.codebook_loss:
        dcodebook = scatter_sum(idx, scale * diff, K)  # (K, D)
    else:
        dcodebook = xp.zeros((K, D), dtype=diff.dtype)  # (K, D) EMA codes get no gradient
    return dz_e, dcodebook


# ----------------------------------------------------------------------------- codebook upkeep
def init_state(codebook):
    """Bookkeeping for EMA and dead-code restart: a dict of arrays (saved in checkpoints).
    ema_count (K,): smoothed count of vectors per code; ema_sum (K, D): smoothed sum of them;
    unused (K,): steps since each code was last chosen; usage (K,): smoothed count of vectors per
    code and step, for restarting rare codes (-1 until the first step sets it)."""
    K, D = codebook.shape
    return {"ema_count": xp.ones((K,), dtype=codebook.dtype),  # (K,)
            "ema_sum": codebook.copy(),  # (K, D)
            "unused": xp.zeros((K,), dtype=xp.int64),  # (K,)
            "usage": xp.full((K,), -1.0, dtype=codebook.dtype)}  # (K,)


def ema_update(codebook, state, z_e, idx, decay=0.99, eps=1e-5):
    """Move each code to the running mean of the vectors assigned to it (in place).
    z_e: (N, D), idx: (N,).
        count_k <- decay count_k + (1 - decay) n_k        n_k = #{n: idx[n] = k}
        sum_k   <- decay sum_k   + (1 - decay) sum_{idx[n]=k} z_e[n]
        e_k     =  sum_k / count~_k,  count~_k = (count_k + eps) / (n + K eps) * n,  n = sum count
    The Laplace smoothing (count~) keeps a code with count ~ 0 from dividing by zero while
    leaving the total mass n unchanged."""
    K = codebook.shape[0]
    n_k = code_counts(idx, K).astype(codebook.dtype)  # (K,)
    s_k = scatter_sum(idx, z_e, K)  # (K, D)
    state["ema_count"] *= decay
    state["ema_count"] += (1 - decay) * n_k
    state["ema_sum"] *= decay
    state["ema_sum"] += (1 - decay) * s_k
    n = state["ema_count"].sum()
    smoothed = (state["ema_count"] + eps) / (n + K * eps) * n  # (K,)
    codebook[...] = state["ema_sum"] / smoothed[:, None]
    return codebook


def kmeans(z, K, iters=10, seed=0):
    """Lloyd's k-means on z: (N, D) -> centroids (K, D), used to initialise the codebook from
    the first batch. Seeding is k-means++ (each new centre drawn with probability ~ squared
    distance to the nearest centre so far), which avoids the poor local minima of purely
    random starts; with N < K the extra centres are jittered copies of data points. A
    centroid that loses all its points is moved to a random point."""
    N, D = z.shape
    g = host_rng(seed)
    u = g.random(K)  # (K,) uniforms for the k-means++ draws
    c = xp.empty((K, D), dtype=z.dtype)  # (K, D)
    c[0] = z[int(g.integers(N))]
    d2 = ((z - c[0]) ** 2).sum(axis=1)  # (N,) squared distance to the nearest centre so far
    for k in range(1, K):
        cum = xp.cumsum(d2)  # (N,)
        tot = float(cum[-1])
        # draw n with probability d2[n] / sum(d2); all-zero d2 (duplicates, N < K) -> jitter
        j = int(xp.searchsorted(cum, u[k] * tot)) if tot > 0 else int(g.integers(N))
        c[k] = z[min(j, N - 1)]
        if tot <= 0:
            c[k] += asarray(g.standard_normal(D) * 1e-3, dtype=z.dtype) * (float(z.std()) + 1e-12)
        d2 = xp.minimum(d2, ((z - c[k]) ** 2).sum(axis=1))
    for _ in range(iters):
        idx, _ = nearest_code(z, c)
        counts = code_counts(idx, K)  # (K,)
        sums = scatter_sum(idx, z, K)  # (K, D)
        used = counts > 0
        c = xp.where(used[:, None], sums / xp.maximum(counts, 1)[:, None].astype(z.dtype), c)
        n_empty = int(to_numpy((~used).sum()))
        if n_empty:
            pick = asarray(g.choice(N, n_empty, replace=N < n_empty))  # (E,)
            jitter = asarray(g.standard_normal((n_empty, D)) * 1e-3, dtype=z.dtype) * (float(z.std()) + 1e-12)
            c[~used] = z[pick] + jitter  # jitter keeps codes distinct when N < K
    return c.astype(z.dtype)


def restart_dead_codes(codebook, state, z_e, idx, after=20, seed=0, min_share=0.0, decay=0.99):
    """Count how long each code has gone unused and move codes unused for ``after`` steps
    or more onto random current encoder outputs z_e: (N, D) (in place; idx: (N,) this step's
    choices). Their EMA statistics restart as if they had seen that one vector.

    min_share > 0 also restarts codes that are used, but rarely: those whose smoothed usage
    (an EMA of their count per step, with ``decay``) is below min_share * N / K, a fraction of
    an even share. Their new positions are drawn from z_e, so they land where the encoder
    outputs are dense and split the busiest codes' regions. A restarted code starts again
    from an even share, so it gets about ln(1 / min_share) / (1 - decay) steps to win vectors.
    Returns the (R,) indices of restarted codes (so an optimiser can reset their moments)."""
    K, N = codebook.shape[0], z_e.shape[0]
    n_k = code_counts(idx, K)  # (K,)
    state["unused"] = xp.where(n_k > 0, 0, state["unused"] + 1)
    usage = state.setdefault("usage", xp.full((K,), -1.0, dtype=codebook.dtype))  # (K,) older checkpoints lack it
    if float(usage[0]) < 0:  # first step: start from this step's counts
        usage[...] = n_k
    else:
        usage *= decay
        usage += (1 - decay) * n_k
    restart = xp.zeros((K,), dtype=bool)  # (K,)
    if after > 0:
        restart |= state["unused"] >= after  # unused for too long
    if min_share > 0:
        restart |= usage < min_share * N / K  # used, but rarely
    dead = xp.nonzero(restart)[0]  # (R,)
    R = int(dead.shape[0])
    if R:
        g = host_rng(seed)
        pick = asarray(g.choice(z_e.shape[0], R, replace=z_e.shape[0] < R))  # (R,)
        codebook[dead] = z_e[pick]
        state["ema_sum"][dead] = z_e[pick]
        state["ema_count"][dead] = 1.0
        state["unused"][dead] = 0
        usage[dead] = N / K
    return dead


# ----------------------------------------------------------------------------- statistics
def usage_stats(idx, K):
    """idx: (...) chosen codes -> {'perplexity': exp(entropy of the code histogram) (1..K),
    'active': fraction of the K codes chosen at least once, 'hist': (K,) counts (NumPy)}.
    Perplexity is the 'effective number of codes': K when all are used equally often.
    The one computation of these numbers: metrics.codebook_usage reports the same ones."""
    counts = code_counts(asarray(idx), K)  # (K,)
    p = counts / max(int(counts.sum()), 1)  # (K,)
    ent = float(-(p * xp.log(xp.where(p > 0, p, 1.0))).sum())  # 0 log 0 = 0
    return {"perplexity": math.exp(ent), "active": float((counts > 0).mean()), "hist": to_numpy(counts)}
