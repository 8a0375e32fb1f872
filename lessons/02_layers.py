"""Lesson 02 - layers with explicit forward and backward passes, checked by finite differences.

    python lessons/02_layers.py [--quick] [--out out/lesson02] [--break linear|conv2d|layernorm|gelu|softmax_ce]
                                [--h 1e-6]

Every layer in minivq is a pair of free functions:
    out, cache = layer_forward(inputs...)      # compute, remember what backward needs
    grads      = layer_backward(dout, cache)   # dL/dinputs from dL/dout (the chain rule)

For linear, conv2d (via im2col), conv-transpose, layernorm, GELU and softmax cross-entropy
this lesson prints the backward's derivation in one or two equations, writes forward and
backward as short NumPy below, and checks them twice: against the library (max |difference|)
and against centred finite differences (minivq.gradcheck, worst relative error). Then it runs
the library's own gradient check on every layer, and saves a figure of im2col with numbered
cells and of the check errors. --break NAME swaps in a backward with a classic mistake, to
see the check catch it.
"""
import argparse
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import conv  # noqa: E402
from minivq import layers as L  # noqa: E402
from minivq.backend import asarray, to_numpy  # noqa: E402  (library arrays live on the selected device)
from minivq.gradcheck import check_layer  # noqa: E402

SEED = 0
TOLERANCE = 1e-6          # worst relative error allowed in float64 (finite differences, h = 1e-6)
VQVAE_BATCH = 32          # batch size used for the shape walk-through
IM2COL_IMAGE = 5          # side of the toy image drawn in the figure
IM2COL_KERNEL = 3         # its kernel side (stride 1, no padding)
H_STEP = 1e-6             # finite-difference step (minivq.gradcheck's default)
GELU_A = 0.044715         # the cubic coefficient of GELU's tanh approximation
GELU_C = np.sqrt(2 / np.pi)
BREAKABLE = ("linear", "conv2d", "layernorm", "gelu", "softmax_ce")


def section(title):
    print("\n" + title + "\n" + "-" * len(title))


# ------------------------------------------------------------------------ linear, by hand
def linear_forward(x, w, b):
    """x (N, D_in), w (D_in, D_out), b (D_out,) -> out (N, D_out) = x w + b."""
    return x @ w + b, (x, w)


def linear_backward(dout, cache):
    x, w = cache
    dx = dout @ w.T                 # dL/dx[n,i] = sum_j dout[n,j] w[i,j]
    dw = x.T @ dout                 # dL/dw[i,j] = sum_n x[n,i] dout[n,j]
    db = dout.sum(axis=0)           # dL/db[j]   = sum_n dout[n,j]
    return dx, dw, db


# ------------------------------------------------------------------- conv2d via im2col, by hand
def im2col(x, KH, KW, stride, pad):
    """x (B, C, H, W) -> cols (C*KH*KW, B*OH*OW): column (b, oh, ow) is the patch that output
    pixel reads, flattened in (channel, kernel row, kernel column) order."""
    B, C, H, W = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    cols = np.zeros((C * KH * KW, B * OH * OW))
    for b in range(B):
        for oh in range(OH):
            for ow in range(OW):
                patch = xpad[b, :, oh * stride:oh * stride + KH, ow * stride:ow * stride + KW]  # (C, KH, KW)
                cols[:, (b * OH + oh) * OW + ow] = patch.reshape(-1)
    return cols


def col2im(cols, x_shape, KH, KW, stride, pad):
    """The adjoint of im2col: add every column back onto the pixels it was copied from.
    A pixel that sat in several patches collects the sum of their gradients."""
    B, C, H, W = x_shape
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    xpad = np.zeros((B, C, H + 2 * pad, W + 2 * pad))
    for b in range(B):
        for oh in range(OH):
            for ow in range(OW):
                patch = cols[:, (b * OH + oh) * OW + ow].reshape(C, KH, KW)
                xpad[b, :, oh * stride:oh * stride + KH, ow * stride:ow * stride + KW] += patch
    return xpad[:, :, pad:pad + H, pad:pad + W]


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x (B, C, H, W), w (F, C, KH, KW), b (F,) -> out (B, F, OH, OW) = W_mat cols + b."""
    F, C, KH, KW = w.shape
    B, _, H, W = x.shape
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    cols = im2col(x, KH, KW, stride, pad)                         # (C*KH*KW, B*OH*OW)
    out = w.reshape(F, -1) @ cols + b[:, None]                   # (F, B*OH*OW)
    return out.reshape(F, B, OH, OW).transpose(1, 0, 2, 3), (x.shape, w, cols, stride, pad)


def conv2d_backward(dout, cache):
    x_shape, w, cols, stride, pad = cache
    F, C, KH, KW = w.shape
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(F, -1)         # (F, B*OH*OW)
    dw = (dout_mat @ cols.T).reshape(w.shape)                    # dW_mat = dout_mat cols^T
    db = dout_mat.sum(axis=1)                                    # every output pixel adds b
    dcols = w.reshape(F, -1).T @ dout_mat                        # dcols = W_mat^T dout_mat
    dx = col2im(dcols, x_shape, KH, KW, stride, pad)             # back onto the pixels
    return dx, dw, db


# ------------------------------------------------------------------- conv-transpose, by hand
def conv_transpose2d_forward(x, w, b, stride=1, pad=0):
    """x (B, C, H, W), w (C, F, KH, KW), b (F,) -> out (B, F, OH, OW), OH = (H-1)*stride - 2*pad + KH:
    every input pixel paints a KH x KW stamp of w; out = col2im(W_mat^T x_mat) + b."""
    B, C, H, W = x.shape
    _, F, KH, KW = w.shape
    OH, OW = (H - 1) * stride - 2 * pad + KH, (W - 1) * stride - 2 * pad + KW
    x_mat = x.transpose(1, 0, 2, 3).reshape(C, -1)                # (C, B*H*W)
    cols = w.reshape(C, -1).T @ x_mat                            # (F*KH*KW, B*H*W) one stamp per pixel
    out = col2im(cols, (B, F, OH, OW), KH, KW, stride, pad) + b[None, :, None, None]
    return out, (x_mat, x.shape, w, stride, pad)


def conv_transpose2d_backward(dout, cache):
    x_mat, (B, C, H, W), w, stride, pad = cache
    _, F, KH, KW = w.shape
    dcols = im2col(dout, KH, KW, stride, pad)                    # (F*KH*KW, B*H*W) the adjoint of col2im
    dx = (w.reshape(C, -1) @ dcols).reshape(C, B, H, W).transpose(1, 0, 2, 3)  # dx_mat = W_mat dcols
    dw = (x_mat @ dcols.T).reshape(w.shape)                      # dW_mat = x_mat dcols^T
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db


# ------------------------------------------------------------------------ layernorm, by hand
def layernorm_forward(x, gamma, beta, eps=1e-5):
    """x (N, D), gamma/beta (D,) -> out (N, D) = gamma xhat + beta, xhat = (x - mean) / sqrt(var + eps)."""
    mu = x.mean(axis=1, keepdims=True)                           # (N, 1)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + eps)  # (N, 1)
    xhat = (x - mu) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def layernorm_backward(dout, cache):
    xhat, rstd, gamma = cache
    g = dout * gamma                                             # dL/dxhat
    dx = rstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)       # dx, dgamma, dbeta


# ----------------------------------------------------------------------------- GELU, by hand
def gelu_forward(x):
    """gelu(x) = 0.5 x (1 + tanh u), u = c (x + a x^3), c = sqrt(2/pi), a = 0.044715."""
    t = np.tanh(GELU_C * (x + GELU_A * x ** 3))
    return 0.5 * x * (1 + t), (x, t)


def gelu_backward(dout, cache):
    x, t = cache
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * GELU_C * (1 + 3 * GELU_A * x ** 2))


# -------------------------------------------------------------- softmax cross-entropy, by hand
def softmax_ce_forward(z, targets):
    """z (N, V) logits, targets (N,) int -> loss = mean_n [log sum_v exp z[n,v] - z[n, t_n]]."""
    N = z.shape[0]
    zs = z - z.max(axis=1, keepdims=True)                        # shift: exp never overflows
    logp = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))    # (N, V) log softmax
    return -logp[np.arange(N), targets].mean(), (np.exp(logp), targets)


def softmax_ce_backward(dloss, cache):
    p, targets = cache
    N = p.shape[0]
    onehot = np.zeros_like(p)
    onehot[np.arange(N), targets] = 1
    return dloss * (p - onehot) / N


# ------------------------------------------------- the classic mistakes, for --break NAME
def linear_backward_broken(dout, cache):
    dx, dw, _ = linear_backward(dout, cache)
    return dx, dw, dout.mean(axis=0)                             # BUG: the bias feeds every row: sum, not mean


def col2im_overwriting(cols, x_shape, KH, KW, stride, pad):
    B, C, H, W = x_shape
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    xpad = np.zeros((B, C, H + 2 * pad, W + 2 * pad))
    for b in range(B):
        for oh in range(OH):
            for ow in range(OW):
                patch = cols[:, (b * OH + oh) * OW + ow].reshape(C, KH, KW)
                xpad[b, :, oh * stride:oh * stride + KH, ow * stride:ow * stride + KW] = patch  # BUG: = not +=
    return xpad[:, :, pad:pad + H, pad:pad + W]


def conv2d_backward_broken(dout, cache):
    x_shape, w, cols, stride, pad = cache
    _, dw, db = conv2d_backward(dout, cache)
    F, C, KH, KW = w.shape
    dcols = w.reshape(F, -1).T @ dout.transpose(1, 0, 2, 3).reshape(F, -1)
    return col2im_overwriting(dcols, x_shape, KH, KW, stride, pad), dw, db


def layernorm_backward_broken(dout, cache):
    xhat, rstd, gamma = cache
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=1, keepdims=True))              # BUG: treats the variance as a constant
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def gelu_backward_broken(dout, cache):
    x, t = cache
    return dout * 0.5 * (1 + t)                                  # BUG: treats tanh(u) as a constant


def softmax_ce_backward_broken(dloss, cache):
    p, targets = cache
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), targets] = 1
    return dloss * (p - onehot)                                  # BUG: forgets the 1/N of the mean


BROKEN = {"linear": linear_backward_broken, "conv2d": conv2d_backward_broken,
          "layernorm": layernorm_backward_broken, "gelu": gelu_backward_broken,
          "softmax_ce": softmax_ce_backward_broken}


# ------------------------------------------------------------------------ the two checks
def on_host(fn):
    """The lesson's NumPy runs on the host: copy device arrays (what gradcheck hands over) to it."""
    return lambda *args, **kw: fn(*[to_numpy(a) if hasattr(a, "shape") else a for a in args], **kw)


def as_tuple(g):
    return tuple(g) if isinstance(g, (tuple, list)) else (g,)


def check_both(name, hand, lib, inputs, args, kwargs=None, seed=SEED):
    """hand, lib: (forward, backward) pairs; inputs: {name: host array}.
    Returns (name, max |hand - library| over the output and every gradient, worst
    finite-difference relative error of the hand-written backward with step args.h)."""
    kwargs = kwargs or {}
    out, cache = hand[0](*inputs.values(), **kwargs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    grads = as_tuple(hand[1](dout, cache))
    out_l, cache_l = lib[0](*[asarray(v) for v in inputs.values()], **kwargs)
    grads_l = as_tuple(lib[1](asarray(dout), cache_l))
    vs_lib = max(float(np.abs(a - to_numpy(b)).max()) for a, b in zip((out,) + grads, (out_l,) + grads_l))
    errs = check_layer(on_host(hand[0]), on_host(hand[1]), {k: asarray(v.copy()) for k, v in inputs.items()},
                       kwargs=kwargs, h=args.h)
    worst = max(errs.values())
    print(f"  check: by hand vs minivq.layers max |difference| {vs_lib:.1e};  by hand vs finite differences "
          f"({', '.join('d' + k for k in errs)}): worst relative error {worst:.1e}  "
          f"{'pass' if worst < TOLERANCE else 'FAIL'}")
    return name, vs_lib, worst


def loss_as_layer(fn):
    """A minivq loss returns (loss, dpred); as a layer, backward scales dpred by dL/dloss."""
    return (lambda *a: fn(*a)), (lambda dout, dpred: dout * dpred)


# --------------------------------------------------------------------------- the lesson
def linear_part(args, rng):
    section("1. linear: out = x w + b")
    print("  out[n,j] = sum_i x[n,i] w[i,j] + b[j]   =>   dL/dx[n,i] = sum_j dout[n,j] w[i,j]:  dx = dout w^T")
    print("                                               dL/dw[i,j] = sum_n x[n,i] dout[n,j]:  dw = x^T dout")
    print("                                               dL/db[j]   = sum_n dout[n,j]  (b feeds every row)")
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])             # (N=2, D_in=3)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])            # (D_in=3, D_out=2)
    b = np.array([0.5, -0.5])
    out, cache = linear_forward(x, w, b)
    print("  x =", x.tolist(), " w =", w.tolist(), " b =", b.tolist())
    print("  out =", out.tolist(), f"  e.g. out[0,0] = 1*1 + 2*0 + 3*1 + 0.5 = {out[0, 0]:g}")
    dout = np.array([[1.0, 0.0], [0.0, 2.0]])
    dx, dw, db = linear_backward(dout, cache)
    print("  with dout =", dout.tolist(), ": dx =", dx.tolist(), " dw =", dw.tolist(), " db =", db.tolist())
    backward = BROKEN["linear"] if args.broken == "linear" else linear_backward
    return check_both("linear", (linear_forward, backward), (L.linear_forward, L.linear_backward),
                      {"x": rng.standard_normal((4, 5)), "w": rng.standard_normal((5, 3)), "b": rng.standard_normal(3)},
                      args)


def conv_part(args, rng):
    section("2. conv2d as ONE matrix product: im2col")
    print("  cols = im2col(x): column (b, oh, ow) holds the C*KH*KW inputs that output pixel reads")
    print("  out_mat = W_mat cols + b,  W_mat = w.reshape(F, C*KH*KW),  out_mat (F, B*OH*OW)")
    print("  =>  dW_mat = dout_mat cols^T,   db = sum over the columns of dout_mat,   dcols = W_mat^T dout_mat,")
    print("      dx = col2im(dcols): im2col copied each pixel into every patch that covers it, so its")
    print("      gradient is the SUM of those copies' gradients (col2im adds each column back in place)")
    x = np.arange(16.0).reshape(1, 1, 4, 4)                       # (B=1, C=1, H=4, W=4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])                   # (F=1, C=1, KH=2, KW=2)
    out, cache = conv2d_forward(x, w, np.zeros(1), stride=2)
    cols = im2col(x, 2, 2, 2, 0)
    print("  a 4x4 image, 2x2 kernel, stride 2:  x[0,0] =", x[0, 0].astype(int).tolist())
    print("  im2col (one column per output pixel, one row per kernel tap):", cols.astype(int).tolist())
    print("  w as a row", w.reshape(-1).tolist(), "@ cols = out", out.reshape(-1).tolist(),
          "(top-left minus bottom-right of each block)")
    cols_lib = to_numpy(conv.im2col(asarray(x), 2, 2, stride=2))
    xb = rng.standard_normal((2, 3, 6, 5))
    print(f"  im2col by hand vs minivq.conv.im2col: max |difference| {np.abs(cols - cols_lib).max():.1e} here, "
          f"{np.abs(im2col(xb, 3, 3, 2, 1) - to_numpy(conv.im2col(asarray(xb), 3, 3, stride=2, pad=1))).max():.1e} "
          "on a (2, 3, 6, 5) input, 3x3, stride 2, pad 1")
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    print("  with dout = 1 everywhere: dw =", dw.reshape(-1).tolist(), "(the sum of x under each tap),")
    print("    dx[0,0] =", dx[0, 0].astype(int).tolist(), "(w scattered back onto the pixels it touched)")

    H, W = (5, 6) if args.quick else (8, 7)
    rows = []
    for K, s, p in [(3, 1, 1), (4, 2, 1)]:
        print(f"  conv2d {K}x{K} stride {s} pad {p} on (2, 3, {H}, {W}) -> 4 channels:")
        backward = BROKEN["conv2d"] if args.broken == "conv2d" else conv2d_backward
        rows.append(check_both(f"conv2d {K}x{K} s{s} p{p}", (conv2d_forward, backward),
                               (conv.conv2d_forward, conv.conv2d_backward),
                               {"x": rng.standard_normal((2, 3, H, W)), "w": rng.standard_normal((4, 3, K, K)),
                                "b": rng.standard_normal(4)}, args, {"stride": s, "pad": p}))

    section(f"2b. shapes at the VQ-VAE sizes (library, B={VQVAE_BATCH}, float32)")
    h = asarray(rng.standard_normal((VQVAE_BATCH, 1, 64, 64)).astype(np.float32))
    for F, K, s, p in [(64, 4, 2, 1), (128, 4, 2, 1), (128, 3, 1, 1)]:
        C = h.shape[1]
        w = asarray((rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32))
        out, _ = conv.conv2d_forward(h, w, asarray(np.zeros(F, np.float32)), stride=s, pad=p)
        OH = out.shape[2]
        print(f"  conv {C:3d}->{F:3d} {K}x{K} s{s} p{p}: x {tuple(h.shape)} -> cols ({C * K * K}, "
              f"{VQVAE_BATCH * OH * OH}) -> W_mat ({F}, {C * K * K}) @ cols -> out {tuple(out.shape)}")
        h = out
    return rows


def conv_transpose_part(args, rng):
    section("3. conv-transpose: conv2d's backward-for-x, used as a forward (the decoder's upsampler)")
    print("  out = col2im(W_mat^T x_mat) + b   (every input pixel paints a KH x KW stamp of w, stride apart)")
    print("  =>  its backward is a conv2d forward:  dcols = im2col(dout),  dx_mat = W_mat dcols,")
    print("      dW_mat = x_mat dcols^T,  db = sum of dout over batch and pixels")
    print("  4x4 kernel, stride 2, pad 1 doubles the size: OH = (H - 1)*2 - 2*1 + 4 = 2H")
    H, W = (3, 4) if args.quick else (4, 5)
    return check_both("conv_transpose2d 4x4 s2 p1", (conv_transpose2d_forward, conv_transpose2d_backward),
                      (conv.conv_transpose2d_forward, conv.conv_transpose2d_backward),
                      {"x": rng.standard_normal((2, 3, H, W)), "w": rng.standard_normal((3, 2, 4, 4)),
                       "b": rng.standard_normal(2)}, args, {"stride": 2, "pad": 1})


def layernorm_part(args, rng):
    section("4. layernorm (over the last axis of D features)")
    print("  xhat_i = (x_i - mu) r,  mu = mean_i x_i,  r = 1/sqrt(var + eps);  out = gamma xhat + beta")
    print("  dL/dxhat = g = dout * gamma;  dmu/dx_j = 1/D;  dr/dx_j = -r^3 (x_j - mu)/D = -r^2 xhat_j / D")
    print("  =>  dx_j = r ( g_j  -  mean_i g_i  -  xhat_j mean_i (g_i xhat_i) )")
    print("             direct     through mu      through the variance")
    print("      dgamma = sum over rows of dout * xhat,  dbeta = sum over rows of dout")
    backward = BROKEN["layernorm"] if args.broken == "layernorm" else layernorm_backward
    return check_both("layernorm", (layernorm_forward, backward), (L.layernorm_forward, L.layernorm_backward),
                      {"x": rng.standard_normal((6, 7)), "gamma": rng.standard_normal(7), "beta": rng.standard_normal(7)}, args)


def gelu_part(args, rng):
    section("5. GELU (tanh form)")
    print(f"  gelu(x) = 0.5 x (1 + tanh u),  u = c (x + a x^3),  c = sqrt(2/pi) = {GELU_C:.4f},  a = {GELU_A}")
    print("  =>  gelu'(x) = 0.5 (1 + tanh u)  +  0.5 x (1 - tanh^2 u) c (1 + 3 a x^2)")
    print("      (product rule; d tanh u / du = 1 - tanh^2 u;  du/dx = c (1 + 3 a x^2))")
    backward = BROKEN["gelu"] if args.broken == "gelu" else gelu_backward
    return check_both("gelu", (gelu_forward, backward), (L.gelu_forward, L.gelu_backward),
                      {"x": 2 * rng.standard_normal((4, 9))}, args)


def softmax_ce_part(args, rng):
    section("6. softmax cross-entropy (the prior's loss)")
    print("  loss = (1/N) sum_n [ log sum_v exp z[n,v]  -  z[n, t_n] ]")
    print("  d/dz[n,v] log sum_v' exp z[n,v'] = softmax(z)[n,v] = p[n,v];   d z[n,t_n] / dz[n,v] = 1 if v = t_n")
    print("  =>  dz = (p - onehot(t)) / N   (each row sums to 0: raising every logit changes nothing)")
    z = 3 * rng.standard_normal((8, 6))
    t = rng.integers(0, 6, 8)
    backward = BROKEN["softmax_ce"] if args.broken == "softmax_ce" else softmax_ce_backward
    return check_both("softmax cross-entropy", (softmax_ce_forward, backward), loss_as_layer(L.softmax_cross_entropy),
                      {"logits": z, "targets": t}, args)


def library_table(quick):
    section("7. the library's own layers, float64 gradient check (random dout, centred differences, h=1e-6)")
    rng = np.random.default_rng(SEED)
    r = lambda *s: asarray(rng.standard_normal(s))  # noqa: E731
    B = 2
    H, W = (5, 7) if quick else (9, 7)
    ce_f, ce_b = loss_as_layer(L.softmax_cross_entropy)
    mse_f, mse_b = loss_as_layer(L.mse)
    cases = [
        ("linear (x: B,T,D)", L.linear_forward, L.linear_backward,
         {"x": r(B, 3, 5), "w": r(5, 4), "b": r(4)}, None),
        ("conv2d 3x3 s1 p1", conv.conv2d_forward, conv.conv2d_backward,
         {"x": r(B, 3, H, W), "w": r(4, 3, 3, 3), "b": r(4)}, {"stride": 1, "pad": 1}),
        ("conv2d 4x4 s2 p1", conv.conv2d_forward, conv.conv2d_backward,
         {"x": r(B, 2, H, W), "w": r(3, 2, 4, 4), "b": r(3)}, {"stride": 2, "pad": 1}),
        ("conv_transpose2d 4x4 s2 p1", conv.conv_transpose2d_forward, conv.conv_transpose2d_backward,
         {"x": r(B, 3, 4, 3), "w": r(3, 2, 4, 4), "b": r(2)}, {"stride": 2, "pad": 1}),
        ("relu", L.relu_forward, L.relu_backward, {"x": r(B, 3, 7)}, None),
        ("gelu (tanh)", L.gelu_forward, L.gelu_backward, {"x": r(B, 3, 7)}, None),
        ("layernorm", L.layernorm_forward, L.layernorm_backward,
         {"x": r(B, 3, 7), "gamma": r(7), "beta": r(7)}, None),
        ("embedding", L.embedding_forward, L.embedding_backward,
         {"idx": asarray([[1, 3, 1], [0, 3, 3]]), "w": r(5, 4)}, None),
        ("softmax cross-entropy", ce_f, ce_b,
         {"logits": 3 * r(B, 5, 7), "targets": asarray(rng.integers(0, 7, (B, 5)))}, None),
        ("mse", mse_f, mse_b, {"pred": r(B, 3, 5), "target": r(B, 3, 5)}, None),
        ("residual block", conv.residual_block_forward, conv.residual_block_backward,
         {"x": r(B, 3, 5, 5), "w1": r(4, 3, 3, 3), "b1": r(4), "w2": r(3, 4, 1, 1), "b2": r(3)}, None),
    ]
    grad_names = {"mse": ["pred"]}
    rows = []
    print(f"  {'layer':28s} {'gradients':28s} {'worst rel. error':>16s}  result")
    for name, fwd, bwd, inputs, kw in cases:
        errs = check_layer(fwd, bwd, inputs, grad_names=grad_names.get(name), kwargs=kw)
        worst = max(errs.values())
        rows.append((name, worst))
        print(f"  {name:28s} {', '.join('d' + k for k in errs):28s} {worst:16.2e}  "
              f"{'pass' if worst < TOLERANCE else 'FAIL'}")
    return rows


def save_figure(hand_rows, lib_rows, broken, out_dir):
    n, k = IM2COL_IMAGE, IM2COL_KERNEL
    m = n - k + 1
    x = np.arange(n * n, dtype=float).reshape(1, 1, n, n)         # pixel values = their own index
    cols = to_numpy(conv.im2col(asarray(x), k, k))                  # (k*k, m*m) on the host for matplotlib
    covered = col2im(np.ones_like(cols), x.shape, k, k, 1, 0)[0, 0]  # how many patches hold each pixel
    fig = plt.figure(figsize=(17, 10), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1.6, 1])
    marks = [(0, 0, "red", "-"), (0, 1, "white", "--"), (m - 1, m - 1, "orange", "-")]  # 3 patches: (oh, ow, colour, line)

    ax = fig.add_subplot(grid[0, 0])
    im = ax.imshow(x[0, 0], cmap="viridis")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(x[0, 0, i, j])}", ha="center", va="center", color="k" if x[0, 0, i, j] > n * n / 2 else "w")
    for oh, ow, colour, ls in marks:
        ax.add_patch(plt.Rectangle((ow - 0.5, oh - 0.5), k, k, fill=False, ec=colour, ls=ls, lw=2.5))
    ax.set(title=f"input {n}x{n}, pixels numbered:\n3 of its {m * m} {k}x{k} patches", xlabel="column", ylabel="row")
    fig.colorbar(im, ax=ax, label="pixel index")

    ax = fig.add_subplot(grid[0, 1])
    im = ax.imshow(cols, cmap="viridis", aspect="auto")
    for r in range(cols.shape[0]):
        for c in range(cols.shape[1]):
            ax.text(c, r, f"{int(cols[r, c])}", ha="center", va="center", fontsize=9,
                    color="k" if cols[r, c] > n * n / 2 else "w")
    for oh, ow, colour, ls in marks:
        ax.add_patch(plt.Rectangle((oh * m + ow - 0.5, -0.5), 1, k * k, fill=False, ec=colour, ls=ls, lw=2.5))
    ax.set_xticks(range(m * m), [f"{c}\n({c // m},{c % m})" for c in range(m * m)], fontsize=8)
    ax.set_yticks(range(k * k), [f"tap ({r // k},{r % k})" for r in range(k * k)])
    ax.set(title=f"im2col(x): ({k}*{k}, {m}*{m}) matrix, each patch a column;\ncell = index of the input pixel copied there",
           xlabel="output pixel (oh, ow) = column", ylabel="kernel tap (i, j) = row")
    fig.colorbar(im, ax=ax, label="pixel index")

    ax = fig.add_subplot(grid[0, 2])
    im = ax.imshow(covered, cmap="magma", vmin=0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(covered[i, j])}", ha="center", va="center", color="k" if covered[i, j] > k * k / 2 else "w")
    ax.set(title="col2im(ones): how many patches\nhold each pixel = how many\ngradients col2im adds into dx", xlabel="column", ylabel="row")
    fig.colorbar(im, ax=ax, label="patches")

    ax = fig.add_subplot(grid[1, :])
    names = [f"by hand: {r[0]}" for r in hand_rows] + [f"library: {r[0]}" for r in lib_rows]
    worst = [max(r[2], 1e-17) for r in hand_rows] + [max(r[1], 1e-17) for r in lib_rows]
    colours = ["tab:blue" if w < TOLERANCE else "tab:red" for w in worst[:len(hand_rows)]] + \
              ["tab:green" if w < TOLERANCE else "tab:red" for w in worst[len(hand_rows):]]
    ax.barh(names, worst, color=colours)
    ax.axvline(TOLERANCE, color="k", ls="--", label=f"tolerance {TOLERANCE:g}")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("worst relative error against finite differences (float64)")
    ax.set_title("gradient check" + (f"  (--break {broken}: red = the check caught the planted bug)" if broken else ""))
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="tab:blue", label="by hand (this lesson)"),
                       plt.Rectangle((0, 0), 1, 1, color="tab:green", label="minivq.layers"),
                       plt.Rectangle((0, 0), 1, 1, color="tab:red", label="FAIL"),
                       plt.Line2D([], [], color="k", ls="--", label=f"tolerance {TOLERANCE:g}")],
              loc="upper left", bbox_to_anchor=(1.01, 1))
    path = out_dir / "im2col_and_gradcheck.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Layers: forward/backward by hand and the gradient check.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller gradient-check shapes")
    ap.add_argument("--out", default="out/lesson02", help="folder for the figure")
    ap.add_argument("--break", dest="broken", choices=BREAKABLE, default=None,
                    help="swap in a backward with a classic mistake and watch the gradient check fail")
    ap.add_argument("--h", type=float, default=H_STEP, help="finite-difference step for the checks of the by-hand layers")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(precision=3, suppress=True)
    rng = np.random.default_rng(SEED)
    if args.broken:
        print(f"--break {args.broken}: the hand-written backward of {args.broken} has a planted mistake "
              f"({BROKEN[args.broken].__name__})")

    hand_rows = [linear_part(args, rng)]
    hand_rows += conv_part(args, rng)
    hand_rows.append(conv_transpose_part(args, rng))
    hand_rows.append(layernorm_part(args, rng))
    hand_rows.append(gelu_part(args, rng))
    hand_rows.append(softmax_ce_part(args, rng))
    lib_rows = library_table(args.quick)
    path = save_figure(hand_rows, lib_rows, args.broken, out_dir)

    hand_failed = [r[0] for r in hand_rows if r[2] >= TOLERANCE]
    lib_failed = [r[0] for r in lib_rows if r[1] >= TOLERANCE]
    good = [r for r in hand_rows if r[0] not in hand_failed]
    section("What to notice")
    if good:
        print(f"  - The straight-line versions agree with minivq.layers to {max(r[1] for r in good):.0e} (float64 "
              "round-off): the library computes\n    the same equations, only arranged for speed (strided views, "
              "one matrix product per layer, fewer copies).")
        print(f"  - Judge a backward by finite differences, not by eye: the correct ones above are off by "
              f"{min(r[2] for r in good):.0e} to {max(r[2] for r in good):.0e}\n    (relative; with h = {args.h:g}), "
              f"the tolerance is {TOLERANCE:g}.")
    if hand_failed:
        print(f"  - Failing: {', '.join(hand_failed)}: worst relative error "
              f"{max(r[2] for r in hand_rows if r[0] in hand_failed):.1e}, off from the library by up to "
              f"{max(r[1] for r in hand_rows if r[0] in hand_failed):.1e}.")
    print("  - conv2d and conv-transpose are the same two matrix products (W_mat, im2col/col2im) used in the")
    print("    two directions: one's backward is the other's forward.")

    section("Try this")
    print("  1. python lessons/02_layers.py --break layernorm   (or linear, conv2d, gelu, softmax_ce)")
    print("     that layer's row turns FAIL, far above the tolerance, and its difference to the library")
    print("     jumps from round-off to the size of the gradients; every other row stays at round-off.")
    print("  2. --break conv2d plants a col2im that writes (=) instead of adding (+=): wrong only where patches")
    print("     overlap. Give conv_part a 2x2 kernel with stride 2 (no overlap) and the broken one passes.")
    print("  3. python lessons/02_layers.py --h 1e-2   then   --h 1e-12")
    print("     a big step makes the difference quotient's own O(h^2) error grow, a tiny one drowns it in")
    print("     round-off (~1e-16 / h): correct backwards start to FAIL at both ends.")

    print(f"\nwrote {path}")
    if args.h != H_STEP and not args.broken:
        print(f"--h {args.h:g}: {len(hand_failed)} of {len(hand_rows)} correct backwards fail the check with this step")
        return 1 if lib_failed else 0
    if args.broken:
        print(f"--break {args.broken}: the gradient check {'caught' if hand_failed else 'MISSED'} the planted mistake "
              f"(failing: {', '.join(hand_failed) or 'none'})")
        return 0 if hand_failed and not lib_failed else 1
    print("every check passes" if not (hand_failed or lib_failed) else f"FAILED: {', '.join(hand_failed + lib_failed)}")
    return 1 if hand_failed or lib_failed else 0


if __name__ == "__main__":
    sys.exit(main())
