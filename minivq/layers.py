"""Layers as pairs of free functions: ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients`` (one per forward input, same shapes).

Size letters: B batch, C input channels, F output channels (filters), H/W height/width,
KH/KW kernel size, OH/OW output height/width, D feature size, V vocabulary, N rows.

Convolutions use im2col: the input patches are laid out as a (C*KH*KW, B*OH*OW) matrix so
the whole convolution is ONE matrix product with the (F, C*KH*KW) weight matrix.
Layout choices (measured with benchmarks/layers.py; the matrix products themselves run at
BLAS speed, so what costs time is moving data around them):
- The patch matrix has the reduction axis (C, KH, KW) first. The weight matrix is used as
  stored (w.reshape(F, -1)), im2col is one copy out of a strided view of the padded input,
  and col2im scatters each of the KH*KW kernel offsets as one strided slice-add over the
  whole batch (the only Python loop is over kernel offsets, never pixels or images).
- The forward product is formed as cols^T @ w_mat^T -> (B*OH*OW, F): OpenBLAS runs this
  orientation (many output rows, few columns) 1.2-2x faster than w_mat @ cols on our sizes.
  The (B, F, OH, OW) result is a transposed view of it and the bias add makes the single copy
  (NumPy keeps the channels-last memory order, which later elementwise layers and the next
  im2col read through strides without extra copies). conv-transpose's dx is formed the same way.
- Weight gradients reduce over the long B*OH*OW axis. OpenBLAS is many times slower when
  such a product's output has fewer rows than columns, so _abt orients each one with the
  larger side as rows and transposes the (small) result.

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


# ----------------------------------------------------------------------------- im2col
def _out_size(n, k, stride, pad):
    return (n + 2 * pad - k) // stride + 1


def im2col(x, KH, KW, stride=1, pad=0):
    """x: (B, C, H, W) -> cols (C*KH*KW, B*OH*OW), OH = (H + 2*pad - KH)//stride + 1 (OW alike).
    Column (b, oh, ow) holds the KH x KW patch of every channel that output pixel reads, so a
    convolution is w.reshape(F, -1) @ cols. A strided *view* of the padded input exposes every
    patch without copying (xp.lib.stride_tricks: NumPy's or CuPy's, so x must live on the
    backend in use); the one reshape copies it."""
    xp_ = _pad(x, pad)  # (B, C, Hp, Wp)
    B, C, Hp, Wp = xp_.shape
    OH, OW = (Hp - KH) // stride + 1, (Wp - KW) // stride + 1
    sB, sC, sH, sW = xp_.strides
    patches = xp.lib.stride_tricks.as_strided(
        xp_, shape=(C, KH, KW, B, OH, OW),
        strides=(sC, sH, sW, sB, sH * stride, sW * stride))  # (C, KH, KW, B, OH, OW) view
    return patches.reshape(C * KH * KW, B * OH * OW)  # (C*KH*KW, B*OH*OW) copy


def _col2im(cols, B, C, Hp, Wp, KH, KW, stride, OH, OW):
    """Adjoint of im2col: cols (C*KH*KW, B*OH*OW) -> summed into (B, C, Hp, Wp).
    Each kernel offset (i, j) touches a strided grid of the padded image; overlapping
    patches add up (that is the sum in the chain rule for a shared input pixel)."""
    c6 = cols.reshape(C, KH, KW, B, OH, OW)  # (C, KH, KW, B, OH, OW)
    out = xp.zeros((C, B, Hp, Wp), dtype=cols.dtype)  # (C, B, Hp, Wp)
    for i in range(KH):
        for j in range(KW):
            out[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += c6[:, i, j]
    return out.transpose(1, 0, 2, 3)  # (B, C, Hp, Wp) view


def _abt(a, b):
    """a @ b.T for a (M, N), b (K, N) with a long shared axis N -> (M, K).
    OpenBLAS can be 10-100x slower when the output's row count is the smaller of M and K
    (measured: (16, 32768) @ (32768, 64) took 1.5 s, its transpose 20 ms), so we always let
    the larger side be the rows and transpose the small result."""
    return a @ b.T if a.shape[0] >= b.shape[0] else (b @ a.T).T


def _pad(x, pad):
    if pad == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # (B, C, H+2p, W+2p)


def _unpad(x, pad):
    return x if pad == 0 else x[:, :, pad:-pad, pad:-pad]


# ----------------------------------------------------------------------------- conv2d
class Conv2dCache(NamedTuple):
    x_shape: tuple  # (B, C, H, W) of the input (the input itself is not kept: cols holds its patches)
    w: object       # (F, C, KH, KW) the weight
    cols: object    # (C*KH*KW, B*OH*OW) im2col of the padded input
    stride: int
    pad: int


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x: (B, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (B, F, OH, OW),
    OH = (H + 2*pad - KH)//stride + 1.  out[b,f] = sum_c,i,j w[f,c,i,j] x_pad[b,c,s*oh+i,s*ow+j] + b[f]"""
    B, C, H, W = x.shape
    F, C2, KH, KW = w.shape
    if C != C2:
        raise ValueError(f"conv2d: input has {C} channels but the weight expects {C2}")
    OH, OW = _out_size(H, KH, stride, pad), _out_size(W, KW, stride, pad)
    cols = im2col(x, KH, KW, stride, pad)  # (C*KH*KW, B*OH*OW)
    out = cols.T @ w.reshape(F, -1).T  # (B*OH*OW, F): the faster BLAS orientation (see top)
    out = out.reshape(B, OH, OW, F).transpose(0, 3, 1, 2) + b.reshape(1, F, 1, 1)  # (B, F, OH, OW)
    return out, Conv2dCache(x.shape, w, cols, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """dout: (B, F, OH, OW) -> dx (B, C, H, W), dw (F, C, KH, KW), db (F,).
    With out = W_mat @ cols:  dW_mat = dout_mat @ cols^T,  dcols = W_mat^T @ dout_mat,
    and dx = col2im(dcols) (the adjoint of the patch extraction).
    need_dx=False (a network's first layer: nobody wants the input's gradient) skips dx and
    returns None in its place."""
    (B, C, H, W), w, cols, stride, pad = cache.x_shape, cache.w, cache.cols, cache.stride, cache.pad
    F, _, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    d2 = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, B*OH*OW)
    dw = _abt(d2, cols).reshape(w.shape)  # (F, C, KH, KW)
    db = d2.sum(axis=1)  # (F,)
    if not need_dx:
        return None, dw, db
    dcols = w.reshape(F, -1).T @ d2  # (C*KH*KW, B*OH*OW)
    dxp = _col2im(dcols, B, C, H + 2 * pad, W + 2 * pad, KH, KW, stride, OH, OW)  # (B, C, Hp, Wp)
    dx = xp.ascontiguousarray(_unpad(dxp, pad))  # (B, C, H, W)
    return dx, dw, db


# ----------------------------------------------------------------------------- conv-transpose2d
class ConvTranspose2dCache(NamedTuple):
    x2: object      # (C, B*H*W) the input as a matrix, channels first
    x_shape: tuple  # (B, C, H, W) of the input
    w: object       # (C, F, KH, KW) the weight
    stride: int
    pad: int


def conv_transpose2d_forward(x, w, b, stride=1, pad=0):
    """x: (B, C, H, W), w: (C, F, KH, KW), b: (F,) -> out: (B, F, OH, OW),
    OH = (H-1)*stride - 2*pad + KH.  The transpose (adjoint) of conv2d with the same w:
    every input pixel paints a KH x KW stamp of w into the output, stride apart, then the
    border of width `pad` is cropped. So 4x4 / stride 2 / pad 1 exactly doubles H and W."""
    B, C, H, W = x.shape
    C2, F, KH, KW = w.shape
    if C != C2:
        raise ValueError(f"conv_transpose2d: input has {C} channels but the weight expects {C2}")
    OH, OW = (H - 1) * stride - 2 * pad + KH, (W - 1) * stride - 2 * pad + KW
    x2 = x.transpose(1, 0, 2, 3).reshape(C, -1)  # (C, B*H*W)
    cols = w.reshape(C, -1).T @ x2  # (F*KH*KW, B*H*W)
    outp = _col2im(cols, B, F, OH + 2 * pad, OW + 2 * pad, KH, KW, stride, H, W)  # (B, F, OHp, OWp)
    out = _unpad(outp, pad) + b.reshape(1, F, 1, 1)  # (B, F, OH, OW)
    return out, ConvTranspose2dCache(x2, x.shape, w, stride, pad)


def conv_transpose2d_backward(dout, cache):
    """dout: (B, F, OH, OW) -> dx (B, C, H, W), dw (C, F, KH, KW), db (F,).
    The adjoint of col2im is im2col, so the backward is an ordinary convolution of dout:
    dcols = im2col(pad(dout)),  dx_mat = W_mat @ dcols,  dW_mat = x_mat @ dcols^T."""
    x2, (B, C, H, W), w, stride, pad = cache.x2, cache.x_shape, cache.w, cache.stride, cache.pad
    _, F, KH, KW = w.shape
    dcols = im2col(dout, KH, KW, stride, pad)  # (F*KH*KW, B*H*W): the output size maps back to H, W
    dx = (dcols.T @ w.reshape(C, -1).T).reshape(B, H, W, C).transpose(0, 3, 1, 2)  # (B, C, H, W) view
    dw = _abt(x2, dcols).reshape(w.shape)  # (C, F, KH, KW)
    db = dout.sum(axis=(0, 2, 3))  # (F,)
    return xp.ascontiguousarray(dx), dw, db


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
    """dout: (..., D) -> dx (..., D), dgamma (D,), dbeta (D,).
    With g = dout * gamma:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    xhat, rstd, gamma = cache.xhat, cache.rstd, cache.gamma
    D = xhat.shape[-1]
    dgamma = (dout * xhat).reshape(-1, D).sum(axis=0)  # (D,)
    dbeta = dout.reshape(-1, D).sum(axis=0)  # (D,)
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta


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


# ----------------------------------------------------------------------------- residual block
class ResidualBlockCache(NamedTuple):
    relu0: object  # (B, C, H, W) relu(x) (relu's cache is its output)
    conv1: Conv2dCache  # the 3x3 conv C -> Ch
    relu1: object  # (B, Ch, H, W) relu of the 3x3 conv's output
    conv2: Conv2dCache  # the 1x1 conv Ch -> C


def residual_block_forward(x, w1, b1, w2, b2):
    """x: (B, C, H, W), w1: (Ch, C, 3, 3), b1: (Ch,), w2: (C, Ch, 1, 1), b2: (C,) -> out (B, C, H, W).
    out = x + conv1x1(relu(conv3x3(relu(x))))  (the VQ-VAE paper's residual block)."""
    h0, c0 = relu_forward(x)
    h1, c1 = conv2d_forward(h0, w1, b1, stride=1, pad=1)  # (B, Ch, H, W)
    h2, c2 = relu_forward(h1)
    h3, c3 = conv2d_forward(h2, w2, b2)  # (B, C, H, W)
    return x + h3, ResidualBlockCache(c0, c1, c2, c3)


def residual_block_backward(dout, cache):
    """dout: (B, C, H, W) -> dx, dw1, db1, dw2, db2.  The skip adds dout straight to dx."""
    dh2, dw2, db2 = conv2d_backward(dout, cache.conv2)
    dh1 = relu_backward(dh2, cache.relu1)
    dh0, dw1, db1 = conv2d_backward(dh1, cache.conv1)
    dx = dout + relu_backward(dh0, cache.relu0)
    return dx, dw1, db1, dw2, db2
