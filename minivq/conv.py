"""Convolutions as pairs of free functions (the layers.py API): conv2d, conv-transpose2d, the
im2col patch matrix they are built on, and the residual block made of two of them.

Size letters: B batch, C input channels, F output channels (filters), H/W height/width,
KH/KW kernel size, OH/OW output height/width, N rows.

Convolutions are matrix products on a channels-last layout. Activations keep the (B, C, H, W)
shape everywhere, but a convolution's output is a transposed view of (B, H, W, C) memory, so
every pixel's C channels sit side by side; that is the layout the products want and the one
the next layer reads (measured with benchmarks/layers.py: the products run at BLAS speed, so
what costs time is moving data around them). A convolution is a sum over its KH*KW kernel taps
    out[b, oh, ow] = sum_(i,j) x_pad[b, s*oh+i, s*ow+j, :] @ w[:, :, i, j]^T + b     (C) @ (C, F)
formed in one of two ways:
- im2col (any stride): copy the taps side by side into the patch matrix cols
  (B*OH*OW, KH*KW*C) and do ONE product with the (KH*KW*C, F) weight matrix. The copy moves
  KH*KW times the input; col2im, its adjoint, adds the taps back one kernel offset at a time
  (a strided slice-add over the whole batch: the only Python loop is over kernel offsets).
- tap products (stride 1 with fewer output than input channels, e.g. the residual blocks'
  3x3 convs 128 -> 32): on the zero-padded input flattened to one row per pixel, tap (i, j)
  of every output pixel is the same contiguous block of rows shifted by i*Wp + j, so the
  conv is KH*KW products on views, accumulated; no copy of the input (see _tap_rows). It costs
  KH*KW passes over the (narrow) output instead of one copy of KH*KW inputs.
The backward of a stride-1 conv is again a stride-1 conv, of dout with the kernel flipped:
one patch matrix of dout gives dx and dw in two products (conv2d_backward). A strided conv
keeps its patch matrix for dw and adds dx back with col2im; conv-transpose is the adjoint
pair (its forward is a product and a col2im, its backward an im2col and two products).
Weight gradients reduce over the long B*OH*OW axis; OpenBLAS is many times slower when such a
product's output has fewer rows than columns, so _abt orients each one with the larger side
as rows and transposes the (small) result.

Nothing here writes into its inputs or into ``dout``: a residual branch may share them.
Each cache is a small NamedTuple whose fields say what backward reads (read them by name).
"""
from typing import NamedTuple

from minivq.backend import xp
from minivq.layers import relu_backward, relu_forward


# ----------------------------------------------------------------------------- im2col
def _out_size(n, k, stride, pad):
    return (n + 2 * pad - k) // stride + 1


def _pad_cl(x, pad):
    """x: (B, C, H, W) of any memory order -> (B, H+2p, W+2p, C) contiguous, zero border
    (a view of x when pad == 0 and x is already channels-last, else one copy)."""
    B, C, H, W = x.shape
    if pad == 0:
        return xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (B, H, W, C)
    out = xp.zeros((B, H + 2 * pad, W + 2 * pad, C), dtype=x.dtype)  # (B, Hp, Wp, C)
    out[:, pad:pad + H, pad:pad + W] = x.transpose(0, 2, 3, 1)
    return out


def _patches(xh, KH, KW, stride):
    """xh: (B, Hp, Wp, C) padded, contiguous -> (B*OH*OW, KH*KW*C) patch matrix: row (b, oh, ow)
    holds the KH x KW x C patch that output pixel reads. A strided *view* of xh exposes every
    patch without copying (xp.lib.stride_tricks: NumPy's or CuPy's, so xh must live on the
    backend in use); the reshape copies it (runs of C contiguous values), unless KH = KW = 1
    and stride 1, where the patches are the pixels themselves and the reshape is free."""
    B, Hp, Wp, C = xh.shape
    OH, OW = (Hp - KH) // stride + 1, (Wp - KW) // stride + 1
    sB, sH, sW, sC = xh.strides
    view = xp.lib.stride_tricks.as_strided(
        xh, shape=(B, OH, OW, KH, KW, C),
        strides=(sB, sH * stride, sW * stride, sH, sW, sC))  # (B, OH, OW, KH, KW, C) view
    return view.reshape(B * OH * OW, KH * KW * C)  # (B*OH*OW, KH*KW*C)


def _unpatch(cols, B, Hp, Wp, C, KH, KW, stride, OH, OW):
    """Adjoint of _patches: cols (B*OH*OW, KH*KW*C) -> summed into (B, Hp, Wp, C).
    Each kernel offset (i, j) touches a strided grid of the padded image; overlapping
    patches add up (that is the sum in the chain rule for a shared input pixel)."""
    c6 = cols.reshape(B, OH, OW, KH, KW, C)  # (B, OH, OW, KH, KW, C)
    if (KH, KW, stride, OH, OW) == (1, 1, 1, Hp, Wp):
        return c6[:, :, :, 0, 0]  # (B, Hp, Wp, C) a 1x1 stride-1 patch is the pixel itself: nothing to add
    out = xp.zeros((B, Hp, Wp, C), dtype=cols.dtype)  # (B, Hp, Wp, C)
    for i in range(KH):
        for j in range(KW):
            out[:, i:i + stride * OH:stride, j:j + stride * OW:stride] += c6[:, :, :, i, j]
    return out


def im2col(x, KH, KW, stride=1, pad=0):
    """x: (B, C, H, W) -> cols (C*KH*KW, B*OH*OW), OH = (H + 2*pad - KH)//stride + 1 (OW alike):
    the textbook layout, column (b, oh, ow) = the flattened (C, KH, KW) patch under that output
    pixel, so a convolution is w.reshape(F, -1) @ cols. The layers use the same patches in
    channels-last order (_patches); this rearranges them for reading and for the lessons."""
    KC = _patches(_pad_cl(x, pad), KH, KW, stride)  # (B*OH*OW, KH*KW*C)
    N, C = KC.shape[0], x.shape[1]
    return KC.reshape(N, KH, KW, C).transpose(3, 1, 2, 0).reshape(C * KH * KW, N)  # (C*KH*KW, B*OH*OW)


def _abt(a, b):
    """a @ b.T for a (M, N), b (K, N) with a long shared axis N -> (M, K).
    OpenBLAS can be 10-100x slower when the output's row count is the smaller of M and K
    (measured: (16, 32768) @ (32768, 64) took 1.5 s, its transpose 20 ms), so we always let
    the larger side be the rows and transpose the small result."""
    return a @ b.T if a.shape[0] >= b.shape[0] else (b @ a.T).T


def _w_mat(w):
    """Conv weight (F, C, KH, KW) -> (KH*KW*C, F), rows in the patch matrix's (KH, KW, C) order."""
    F = w.shape[0]
    return w.transpose(2, 3, 1, 0).reshape(-1, F)  # (KH*KW*C, F) a small copy


def _tap_rows(x, pad):
    """x: (B, C, H, W) -> xf (B*Hp*Wp, C): the zero-padded input channels last, one row per pixel.
    With this layout a stride-1 convolution needs no patch matrix. Output pixel r = (b, y, x)
    (indexed on the padded grid) reads input row r + i*Wp + j for tap (i, j), so
        out[r] = sum over taps (i, j) of xf[r + i*Wp + j] @ w[:, :, i, j]^T,
    and tap (i, j)'s inputs for all r at once are the contiguous block xf[i*Wp + j : ... + M]:
    KH*KW matrix products on views, no copies. Rows r with y >= OH or x >= OW (they straddle
    the border) are computed too and cropped: (Hp*Wp)/(OH*OW) more work, 1.27x at 16x16."""
    B, C, H, W = x.shape
    return _pad_cl(x, pad).reshape(-1, C)  # (B*Hp*Wp, C)


def _use_taps(C, F, stride):
    """Tap products for stride 1 (a tap is then a contiguous block of rows) when the output is
    narrower than the input (its KH*KW accumulation passes cost less than im2col's copy of
    KH*KW inputs) and C >= 8 (a product with a reduction of a few channels runs far below peak)."""
    return stride == 1 and F < C and C >= 8


# ----------------------------------------------------------------------------- conv2d
class Conv2dCache(NamedTuple):
    x_shape: tuple  # (B, C, H, W) of the input
    w: object       # (F, C, KH, KW) the weight
    cols: object    # (B*OH*OW, KH*KW*C) patch matrix of the padded input (stride > 1), else None
    x2: object      # (B*H*W, C) the input, one row per pixel, channels last (stride 1), else None
    stride: int
    pad: int


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x: (B, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (B, F, OH, OW) (channels-last memory),
    OH = (H + 2*pad - KH)//stride + 1.  out[b,f] = sum_c,i,j w[f,c,i,j] x_pad[b,c,s*oh+i,s*ow+j] + b[f]
    Formed as one im2col product or as one product per kernel tap (see the module docstring)."""
    B, C, H, W = x.shape
    F, C2, KH, KW = w.shape
    if C != C2:
        raise ValueError(f"conv2d: input has {C} channels but the weight expects {C2}")
    OH, OW = _out_size(H, KH, stride, pad), _out_size(W, KW, stride, pad)
    if not _use_taps(C, F, stride):
        cols = _patches(_pad_cl(x, pad), KH, KW, stride)  # (B*OH*OW, KH*KW*C)
        out = cols @ _w_mat(w)  # (B*OH*OW, F)
        out += b
        out = out.reshape(B, OH, OW, F).transpose(0, 3, 1, 2)  # (B, F, OH, OW) view, channels last
    else:
        Hp, Wp = H + 2 * pad, W + 2 * pad
        xf = _tap_rows(x, pad)  # (B*Hp*Wp, C)
        M = xf.shape[0] - (KH - 1) * Wp - (KW - 1)  # rows r whose every tap stays inside xf
        wt = w.transpose(2, 3, 1, 0)  # (KH, KW, C, F) view: tap (i, j)'s (C, F) matrix is wt[i, j]
        full = xp.empty((B * Hp * Wp, F), dtype=x.dtype)  # (B*Hp*Wp, F) rows >= M are never read
        xp.matmul(xf[:M], wt[0, 0], out=full[:M])
        for i in range(KH):
            for j in range(KW):
                if i or j:
                    full[:M] += xf[i * Wp + j:i * Wp + j + M] @ wt[i, j]
        full = full.reshape(B, Hp, Wp, F)[:, :OH, :OW]  # (B, OH, OW, F) view: the valid pixels
        out = full.transpose(0, 3, 1, 2) + b.reshape(1, F, 1, 1)  # (B, F, OH, OW) one compact copy, channels last
    if stride == 1:  # backward works from dout's patches and the input (see conv2d_backward)
        return out, Conv2dCache(x.shape, w, None, _pad_cl(x, 0).reshape(-1, C), stride, pad)
    return out, Conv2dCache(x.shape, w, cols, None, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """dout: (B, F, OH, OW) -> dx (B, C, H, W), dw (F, C, KH, KW), db (F,).
    Strided: with out_mat = cols @ W_mat,  dW_mat = cols^T @ dout_mat,
    dcols = dout_mat @ W_mat^T, and dx = col2im(dcols) (the adjoint of the patch copy).
    Stride 1 (either forward form): dx is itself a stride-1 convolution, of dout zero-padded by KH-1-pad (KW-1-pad)
    with the kernel flipped and its channel axes swapped (dout's F channels in, C out):
        dx[b, y, x] = sum_(i,j) dpad[b, y + KH-1-i, x + KW-1-j] @ w[:, :, i, j]
    so with P = the patch matrix of dpad (B*H*W, KH*KW*F):  dx_mat = P @ Wflip_mat, and the
    weight gradient is the same pairing the other way round:  dWflip_mat = P^T @ x_mat.
    One copy of dout's patches and two products: no col2im passes, no cols kept from the forward.
    need_dx=False (a network's first layer: nobody wants the input's gradient) skips dx and
    returns None in its place."""
    (B, C, H, W), w, stride, pad = cache.x_shape, cache.w, cache.stride, cache.pad
    F, _, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    Hp, Wp = H + 2 * pad, W + 2 * pad
    db = dout.sum(axis=(0, 2, 3))  # (F,)
    if cache.x2 is None:
        d2 = dout.transpose(0, 2, 3, 1).reshape(-1, F)  # (B*OH*OW, F) free when dout is channels-last
        dw = _abt(cache.cols.T, d2.T).reshape(KH, KW, C, F).transpose(3, 2, 0, 1)  # (F, C, KH, KW) view
        if not need_dx:
            return None, xp.ascontiguousarray(dw), db
        dcols = d2 @ _w_mat(w).T  # (B*OH*OW, KH*KW*C)
        dxp = _unpatch(dcols, B, Hp, Wp, C, KH, KW, stride, OH, OW)  # (B, Hp, Wp, C)
        dx = dxp[:, pad:pad + H, pad:pad + W].transpose(0, 3, 1, 2)  # (B, C, H, W) view, channels last
        return dx, xp.ascontiguousarray(dw), db
    dpad = _place(dout, KH - 1 - pad, KW - 1 - pad, H + KH - 1, W + KW - 1)  # (B, H+KH-1, W+KW-1, F)
    P = _patches(dpad, KH, KW, 1)  # (B*H*W, KH*KW*F) columns (i', j', f), tap i' = KH-1-i
    dwflip = _abt(P.T, cache.x2.T)  # (KH*KW*F, C)
    dw = xp.ascontiguousarray(dwflip.reshape(KH, KW, F, C)[::-1, ::-1].transpose(2, 3, 0, 1))  # (F, C, KH, KW)
    if not need_dx:
        return None, dw, db
    wflip = w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, C)  # (KH*KW*F, C) rows (i', j', f)
    dx = P @ wflip  # (B*H*W, C)
    return dx.reshape(B, H, W, C).transpose(0, 3, 1, 2), dw, db  # (B, C, H, W) view, channels last


def _place(d, top, left, Hd, Wd):
    """d: (B, F, h, w) -> (B, Hd, Wd, F) zeros with d's pixel (y, x) at (y + top, x + left),
    channels last; the part of d that falls outside (top or left < 0, or past the far edge) is dropped."""
    B, F, h, w = d.shape
    if (top, left, Hd, Wd) == (0, 0, h, w):
        return _pad_cl(d, 0)  # (B, h, w, F) d itself, free when d is channels-last
    out = xp.zeros((B, Hd, Wd, F), dtype=d.dtype)  # (B, Hd, Wd, F)
    y0, x0 = max(0, -top), max(0, -left)  # first rows / columns of d that land inside
    y1, x1 = min(h, Hd - top), min(w, Wd - left)  # one past the last
    if y1 > y0 and x1 > x0:
        out[:, y0 + top:y1 + top, x0 + left:x1 + left] = d[:, :, y0:y1, x0:x1].transpose(0, 2, 3, 1)
    return out


# ----------------------------------------------------------------------------- conv-transpose2d
class ConvTranspose2dCache(NamedTuple):
    x2: object      # (B*H*W, C) the input as a matrix, one row per pixel (channels last)
    x_shape: tuple  # (B, C, H, W) of the input
    w: object       # (C, F, KH, KW) the weight
    stride: int
    pad: int


def _wt_mat(w):
    """Conv-transpose weight (C, F, KH, KW) -> (C, KH*KW*F), columns in the patch matrix's order."""
    C = w.shape[0]
    return w.transpose(0, 2, 3, 1).reshape(C, -1)  # (C, KH*KW*F) a small copy


def conv_transpose2d_forward(x, w, b, stride=1, pad=0):
    """x: (B, C, H, W), w: (C, F, KH, KW), b: (F,) -> out: (B, F, OH, OW) (channels-last memory),
    OH = (H-1)*stride - 2*pad + KH.  The transpose (adjoint) of conv2d with the same w:
    every input pixel paints a KH x KW stamp of w into the output, stride apart, then the
    border of width `pad` is cropped. So 4x4 / stride 2 / pad 1 exactly doubles H and W."""
    B, C, H, W = x.shape
    C2, F, KH, KW = w.shape
    if C != C2:
        raise ValueError(f"conv_transpose2d: input has {C} channels but the weight expects {C2}")
    OH, OW = (H - 1) * stride - 2 * pad + KH, (W - 1) * stride - 2 * pad + KW
    x2 = _pad_cl(x, 0).reshape(-1, C)  # (B*H*W, C) free when x is channels-last
    cols = x2 @ _wt_mat(w)  # (B*H*W, KH*KW*F) every pixel's stamp
    outp = _unpatch(cols, B, OH + 2 * pad, OW + 2 * pad, F, KH, KW, stride, H, W)  # (B, OHp, OWp, F)
    out = outp[:, pad:pad + OH, pad:pad + OW] + b  # (B, OH, OW, F) one compact copy
    return out.transpose(0, 3, 1, 2), ConvTranspose2dCache(x2, x.shape, w, stride, pad)


def conv_transpose2d_backward(dout, cache):
    """dout: (B, F, OH, OW) -> dx (B, C, H, W), dw (C, F, KH, KW), db (F,).
    The adjoint of col2im is im2col, so the backward is an ordinary convolution of dout:
    dcols = im2col(pad(dout)),  dx_mat = dcols @ W_mat^T,  dW_mat = x_mat^T @ dcols."""
    x2, (B, C, H, W), w, stride, pad = cache.x2, cache.x_shape, cache.w, cache.stride, cache.pad
    _, F, KH, KW = w.shape
    dcols = _patches(_pad_cl(dout, pad), KH, KW, stride)  # (B*H*W, KH*KW*F): the output size maps back to H, W
    dx = (dcols @ _wt_mat(w).T).reshape(B, H, W, C).transpose(0, 3, 1, 2)  # (B, C, H, W) view, channels last
    dw = _abt(x2.T, dcols.T).reshape(C, KH, KW, F).transpose(0, 3, 1, 2)  # (C, F, KH, KW) view
    db = dout.sum(axis=(0, 2, 3))  # (F,)
    return dx, xp.ascontiguousarray(dw), db


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
