"""Layers as pairs of free functions: ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients`` (one per forward input, same shapes).

Size letters: B batch, C input channels, F output channels (filters), H/W height/width,
KH/KW kernel size, OH/OW output height/width, D feature size, V vocabulary, N rows.

Convolutions (conv2d, conv-transpose2d, im2col and the residual block) live in conv.py.

Nothing here writes into its inputs or into ``dout``: a residual branch may share them.
Each cache is a small NamedTuple whose fields say what backward reads (read them by name).
"""
from typing import NamedTuple

from minivq.backend import xp


# ----------------------------------------------------------------------------- linear
class LinearCache(NamedTuple):
    x: object  # (..., D_in) the input
    w: object  # (D_in, D_out) the weight


def linear_forward(x, w, b):
    """x: (..., D_in), w: (D_in, D_out), b: (D_out,) -> out: (..., D_out).  out = x @ w + b"""
    out = x @ w + b  # (..., D_out)
    return out, LinearCache(x, w)


def linear_backward(dout, cache):
    """dout: (..., D_out) -> dx (..., D_in), dw (D_in, D_out), db (D_out,).
    dx = dout @ w^T,  dw = sum over rows of x^T dout,  db = sum over rows of dout."""
    x, w = cache.x, cache.w
    dx = dout @ w.T  # (..., D_in)
    x2 = x.reshape(-1, x.shape[-1])  # (N, D_in)
    d2 = dout.reshape(-1, dout.shape[-1])  # (N, D_out)
    dw = x2.T @ d2  # (D_in, D_out)
    db = d2.sum(axis=0)  # (D_out,)
    return dx, dw, db


# ----------------------------------------------------------------------------- activations
def relu_forward(x):
    """x: any shape -> out = max(x, 0), same shape."""
    out = xp.maximum(x, 0)
    return out, out  # the output's sign is all backward needs


def relu_backward(dout, cache):
    """dx = dout where out > 0 (we take the subgradient 0 at x == 0)."""
    return dout * (cache > 0)


_GELU_C = 0.7978845608028654  # sqrt(2/pi)


class GeluCache(NamedTuple):
    x: object  # (...) the input
    t: object  # (...) tanh(c (x + 0.044715 x^3))


def gelu_forward(x):
    """tanh approximation: gelu(x) = 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi)."""
    # In-place steps on two buffers (each fresh (B, T, 4C) array costs page faults as well as a
    # pass over memory), and x (1 + a x^2) rather than x + a x**3 (float32 ** is a slow pow).
    t = x * x
    t *= 0.044715
    t += 1
    t *= x
    t *= _GELU_C
    xp.tanh(t, out=t)  # t = tanh(c (x + 0.044715 x^3)), kept for backward
    out = t + 1
    out *= x
    out *= 0.5
    return out, GeluCache(x, t)


def gelu_backward(dout, cache):
    """d gelu/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3*0.044715 x^2)."""
    x, t = cache.x, cache.t
    g = x * x
    g *= 0.134145
    g += 1  # 1 + 3*0.044715 x^2
    g *= x
    s = t * t
    s -= 1
    g *= s  # -x (1 - t^2)(1 + 3*0.044715 x^2)
    g *= -_GELU_C
    g += t
    g *= 0.5
    g += 0.5  # 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3*0.044715 x^2)
    g *= dout
    return g


# ----------------------------------------------------------------------------- layernorm
class LayernormCache(NamedTuple):
    xhat: object   # (..., D) the normalised input (x - mean) / sqrt(var + eps)
    rstd: object   # (..., 1) 1 / sqrt(var + eps)
    gamma: object  # (D,) the gain


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """x: (..., D), gamma/beta: (D,) -> out (..., D), normalised over the last axis:
    xhat = (x - mean) / sqrt(var + eps),  out = gamma * xhat + beta."""
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = xc * rstd
    return xhat * gamma + beta, LayernormCache(xhat, rstd, gamma)


def layernorm_backward(dout, cache):
    """dout: (..., D) -> dx (..., D), dgamma (D,), dbeta (D,)."""
    D = cache.xhat.shape[-1]
    dgamma = (dout * cache.xhat).reshape(-1, D).sum(axis=0)  # (D,)
    dbeta = dout.reshape(-1, D).sum(axis=0)  # (D,)
    return layernorm_dx(dout, cache), dgamma, dbeta


def layernorm_dx(dout, cache):
    """The input gradient alone, dout: (..., D) -> dx (..., D). gamma may be any shape that
    broadcasts against x (a per-sequence gain, for instance). With g = dout * gamma:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    xhat, rstd = cache.xhat, cache.rstd
    g = dout * cache.gamma
    return rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- embedding
class EmbeddingCache(NamedTuple):
    idx: object     # (...) the integer ids looked up
    w_shape: tuple  # (V, D) of the table


def embedding_forward(idx, w):
    """idx: (...) integer, w: (V, D) -> out (..., D) = w[idx]."""
    return w[idx], EmbeddingCache(idx, w.shape)


def embedding_backward(dout, cache):
    """dout: (..., D) -> dw (V, D): each row of w collects the gradients of every position
    that looked it up (summed, because one token may appear many times)."""
    idx, (V, D) = cache.idx, cache.w_shape
    return scatter_sum(idx.reshape(-1), dout.reshape(-1, D), V)  # (V, D)


def scatter_sum(idx, values, V):
    """idx: (N,) int in [0, V), values: (N, D) -> sums (V, D), sums[v] = sum of the values[n]
    with idx[n] == v.  Written as one matrix product with the one-hot matrix of idx:
        sums = onehot(idx)^T @ values,   onehot(idx)[n, v] = 1 if idx[n] == v else 0.
    Why not a scatter-add (xp.add.at)? On the GPU that is a kernel of atomic float adds whose
    order changes from run to run, so a repeated training run (or a resumed one) drifts apart
    in the last bits. A matrix product adds in an order fixed by the shapes, on both backends.
    It costs V*N*D multiply-adds. Measured on one CPU core: 12 ms instead of np.add.at's 7 ms
    at the prior's sizes (V=522, N=8192, D=128; the step takes 0.9 s), 32 ms instead of 14 ms
    for the EMA sums of a CR=4 VQ-VAE (K=512, N=32768, D=64; the step takes 1.2 s). The (N, V)
    one-hot matrix is the size of the logits (or code distances) the step already holds."""
    onehot = (idx.reshape(-1, 1) == xp.arange(V)).astype(values.dtype)  # (N, V)
    return onehot.T @ values  # (V, D)


# ----------------------------------------------------------------------------- softmax
def stable_exp(z, out=None):
    """The one stable softmax kernel of the package (every softmax and log-sum-exp uses it).
    z: (..., V) -> (e, s, zmax) over the last axis:
        zmax = max_j z_j                 (..., 1)
        e    = exp(z - zmax)             (..., V)  each in [0, 1], the largest exactly 1: no overflow
        s    = sum_j e_j                 (..., 1)  >= 1
    so that softmax(z) = e / s and log sum_j exp(z_j) = zmax + log s. Entries of -inf (masked)
    give e = 0. out: the buffer e is written to (pass z itself to overwrite z); default new."""
    zmax = z.max(axis=-1, keepdims=True)  # (..., 1)
    e = xp.subtract(z, zmax, out=out)  # (..., V) shifted logits
    xp.exp(e, out=e)
    s = e.sum(axis=-1, keepdims=True)  # (..., 1)
    return e, s, zmax


def softmax(z, out=None):
    """z: (..., V) -> probabilities (..., V) over the last axis: p = exp(z - max z) / sum exp(z - max z).
    out=z overwrites z in place (saves a (..., V) buffer, e.g. attention scores); default new."""
    e, s, _ = stable_exp(z, out)
    e /= s
    return e


# ----------------------------------------------------------------------------- losses
def softmax_cross_entropy(logits, targets, mask=None):
    """logits: (..., V), targets: (...) int, mask: (...) bool/0-1 or None
    -> (loss, dlogits). loss = mean over unmasked positions of -log softmax(logits)[target].
    Stable (stable_exp subtracts the row max).  dlogits = (softmax - onehot) * mask / n_unmasked."""
    V = logits.shape[-1]
    rows = xp.arange(targets.size)
    t = targets.reshape(-1)  # (N,)
    # one (N, V) buffer, reused: exp of the shifted logits -> softmax -> dlogits
    flat = logits.reshape(-1, V)  # (N, V) view
    e, sum_e, zmax = stable_exp(flat)  # (N, V), (N, 1), (N, 1)
    z_t = flat[rows, t] - zmax[:, 0]  # (N,) the target's shifted logit
    nll = xp.log(sum_e[:, 0]) - z_t  # (N,)  -log softmax(z)[t] = log sum exp(z) - z_t
    m = xp.ones(t.shape, dtype=logits.dtype) if mask is None else mask.reshape(-1).astype(logits.dtype)
    n = m.sum()
    if float(n) == 0:
        raise ValueError("softmax_cross_entropy: the mask selects no positions")
    loss = (nll * m).sum() / n
    e /= sum_e  # softmax
    e[rows, t] -= 1
    e *= (m / n)[:, None]
    return loss, e.reshape(logits.shape)  # dlogits (..., V)


def mse(pred, target):
    """Mean squared error over all elements -> (loss, dpred);  dpred = 2 (pred - target) / N."""
    diff = pred - target
    return (diff * diff).mean(), diff * (2.0 / diff.size)
