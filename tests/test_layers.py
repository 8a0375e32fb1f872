"""Every layer's backward against float64 centred differences, conv forwards against a naive
loop, and the contract that backward never writes into dout or its inputs.

Shapes use odd sizes, batch > 1, stride 2 and padding on purpose: those are where index
arithmetic goes wrong.
"""
import numpy as np
import pytest

from minivq import conv
from minivq import layers as L
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import check_layer

TOL = 1e-6


def _rand(rng, *shape, scale=1.0):
    return asarray(rng.standard_normal(shape) * scale)


def _check(forward, backward, inputs, grad_names=None, kwargs=None):
    """Grad check plus the no-mutation and gradient-shape contracts; returns the errors."""
    before = {k: to_numpy(v).copy() for k, v in inputs.items()}
    out, cache = forward(*inputs.values(), **(kwargs or {}))
    dout = asarray(np.random.default_rng(1).standard_normal(out.shape))
    dout_before = to_numpy(dout).copy()
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    names = grad_names or [k for k, v in inputs.items() if v.dtype.kind == "f"]
    assert len(grads) == len(names)
    for n, g in zip(names, grads):
        assert g.shape == inputs[n].shape, f"d{n} has shape {g.shape}, expected {inputs[n].shape}"
        assert g.dtype == inputs[n].dtype, f"d{n} has dtype {g.dtype}"
    assert np.array_equal(to_numpy(dout), dout_before), "backward wrote into dout"
    for k, v in inputs.items():
        assert np.array_equal(to_numpy(v), before[k]), f"forward/backward wrote into input {k}"
    errs = check_layer(forward, backward, inputs, grad_names=grad_names, kwargs=kwargs)
    for name, e in errs.items():
        assert e < TOL, f"{forward.__name__}: d{name} rel. error {e:.2e}"
    return errs


# ----------------------------------------------------------------------------- naive references
def conv2d_naive(x, w, b, stride, pad):
    """Direct loop over every output pixel (NumPy, float64)."""
    x, w, b = (np.asarray(to_numpy(a), np.float64) for a in (x, w, b))
    B, C, H, W = x.shape
    F, _, KH, KW = w.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    out = np.zeros((B, F, OH, OW))
    for n in range(B):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    patch = xp_[n, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
                    out[n, f, i, j] = (patch * w[f]).sum() + b[f]
    return out


def conv_transpose2d_naive(x, w, b, stride, pad):
    """Each input pixel stamps x * w[c] into the output at (stride*i, stride*j); crop pad."""
    x, w, b = (np.asarray(to_numpy(a), np.float64) for a in (x, w, b))
    B, C, H, W = x.shape
    _, F, KH, KW = w.shape
    full = np.zeros((B, F, (H - 1) * stride + KH, (W - 1) * stride + KW))
    for n in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    full[n, :, i * stride:i * stride + KH, j * stride:j * stride + KW] += x[n, c, i, j] * w[c]
    OH, OW = full.shape[2] - 2 * pad, full.shape[3] - 2 * pad
    return full[:, :, pad:pad + OH, pad:pad + OW] + b[None, :, None, None]


CONV_CASES = [  # (B, C, H, W, F, KH, KW, stride, pad)
    (2, 3, 7, 5, 4, 3, 3, 1, 1),
    (3, 2, 9, 7, 5, 4, 4, 2, 1),
    (2, 3, 8, 6, 2, 3, 2, 2, 0),
    (2, 4, 5, 5, 3, 1, 1, 1, 0),
    (1, 2, 6, 7, 3, 5, 3, 3, 2),
]
# stride 1 with C >= 8 runs as one product per kernel tap (layers._tap_rows), the rest via im2col
TAP_CASES = [
    (2, 8, 7, 5, 3, 3, 3, 1, 1),  # 3x3, pad 1, odd non-square image
    (3, 9, 6, 5, 4, 3, 2, 1, 2),  # non-square kernel, pad wider than the kernel's reach
    (2, 8, 5, 6, 2, 3, 3, 1, 0),  # no padding: taps straddle the image's right edge
    (2, 10, 5, 4, 3, 1, 1, 1, 0),  # 1x1: one tap, the rows are the input itself
    (1, 8, 4, 3, 5, 1, 1, 1, 1),  # 1x1 with padding: a border of bias-only outputs
]


@pytest.mark.parametrize("case", CONV_CASES + TAP_CASES)
def test_conv2d_forward_matches_naive_loop(backend, case):
    B, C, H, W, F, KH, KW, s, p = case
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, B, C, H, W), _rand(rng, F, C, KH, KW), _rand(rng, F)
    out, _ = conv.conv2d_forward(x, w, b, stride=s, pad=p)
    ref = conv2d_naive(x, w, b, s, p)
    assert out.shape == ref.shape
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-12, atol=1e-12)


def test_tap_cases_take_the_tap_path(backend):
    """TAP_CASES exercise the per-tap forward, CONV_CASES the im2col product (else the tests
    above would check one of the two forms twice); stride-1 backwards work from dout's patches
    and the input rows, strided ones from the forward's patch matrix."""
    for case in CONV_CASES + TAP_CASES:
        B, C, H, W, F, KH, KW, s, p = case
        assert conv._use_taps(C, F, s) == (case in TAP_CASES), case
        _, cache = conv.conv2d_forward(asarray(np.zeros((B, C, H, W))), asarray(np.zeros((F, C, KH, KW))),
                                    asarray(np.zeros(F)), stride=s, pad=p)
        assert (cache.x2 is not None) == (s == 1) == (cache.cols is None), case


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_transpose2d_forward_matches_naive_loop(backend, case):
    B, C, H, W, F, KH, KW, s, p = case
    rng = np.random.default_rng(1)
    x, w, b = _rand(rng, B, C, H, W), _rand(rng, C, F, KH, KW), _rand(rng, F)
    out, _ = conv.conv_transpose2d_forward(x, w, b, stride=s, pad=p)
    ref = conv_transpose2d_naive(x, w, b, s, p)
    assert out.shape == ((B, F, (H - 1) * s - 2 * p + KH, (W - 1) * s - 2 * p + KW))
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-12, atol=1e-12)


def test_conv_transpose_4x4_stride2_pad1_doubles_size(backend):
    x = asarray(np.ones((2, 3, 16, 8)))
    out, _ = conv.conv_transpose2d_forward(x, asarray(np.ones((3, 5, 4, 4))), asarray(np.zeros(5)), stride=2, pad=1)
    assert out.shape == (2, 5, 32, 16)


def test_conv_rejects_channel_mismatch(backend):
    x = asarray(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="channels"):
        conv.conv2d_forward(x, asarray(np.zeros((2, 4, 3, 3))), asarray(np.zeros(2)))
    with pytest.raises(ValueError, match="channels"):
        conv.conv_transpose2d_forward(x, asarray(np.zeros((4, 2, 3, 3))), asarray(np.zeros(2)))


def test_conv_transpose_is_adjoint_of_conv(backend):
    """<conv(x), v> == <x, convT(v)> with the same weight and no bias: the defining identity.
    (H + 2p - KH) divisible by the stride, so convT maps back to exactly x's size.)"""
    rng = np.random.default_rng(2)
    x, w = _rand(rng, 2, 3, 8, 6), _rand(rng, 4, 3, 4, 4)
    y, _ = conv.conv2d_forward(x, w, asarray(np.zeros(4)), stride=2, pad=1)
    v = _rand(rng, *y.shape)
    xt, _ = conv.conv_transpose2d_forward(v, w, asarray(np.zeros(3)), stride=2, pad=1)
    assert y.shape == (2, 4, 4, 3) and xt.shape == x.shape
    lhs = float((to_numpy(y) * to_numpy(v)).sum())
    rhs = float((to_numpy(x) * to_numpy(xt)).sum())
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


# ----------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("case", CONV_CASES[:3] + [CONV_CASES[3]] + TAP_CASES)
def test_conv2d_gradcheck(backend, case):
    B, C, H, W, F, KH, KW, s, p = case
    rng = np.random.default_rng(3)
    inputs = {"x": _rand(rng, B, C, H, W), "w": _rand(rng, F, C, KH, KW), "b": _rand(rng, F)}
    _check(conv.conv2d_forward, conv.conv2d_backward, inputs, kwargs={"stride": s, "pad": p})


def test_conv2d_backward_without_dx(backend):
    """need_dx=False (first layers) returns the same dw, db and no dx."""
    rng = np.random.default_rng(4)
    x, w, b = _rand(rng, 2, 1, 8, 8), _rand(rng, 3, 1, 4, 4), _rand(rng, 3)
    out, c = conv.conv2d_forward(x, w, b, stride=2, pad=1)
    dout = _rand(rng, *out.shape)
    dx, dw, db = conv.conv2d_backward(dout, c)
    none, dw2, db2 = conv.conv2d_backward(dout, c, need_dx=False)
    assert none is None and dx.shape == x.shape
    assert np.array_equal(to_numpy(dw), to_numpy(dw2)) and np.array_equal(to_numpy(db), to_numpy(db2))


@pytest.mark.parametrize("case", CONV_CASES[:3] + [CONV_CASES[3]])
def test_conv_transpose2d_gradcheck(backend, case):
    B, C, H, W, F, KH, KW, s, p = case
    rng = np.random.default_rng(4)
    inputs = {"x": _rand(rng, B, C, H, W), "w": _rand(rng, C, F, KH, KW), "b": _rand(rng, F)}
    _check(conv.conv_transpose2d_forward, conv.conv_transpose2d_backward, inputs, kwargs={"stride": s, "pad": p})


@pytest.mark.parametrize("xshape", [(5, 3), (2, 3, 3), (2, 1, 3, 3)])
def test_linear_gradcheck_any_leading_shape(backend, xshape):
    rng = np.random.default_rng(5)
    inputs = {"x": _rand(rng, *xshape), "w": _rand(rng, 3, 7), "b": _rand(rng, 7)}
    _check(L.linear_forward, L.linear_backward, inputs)
    out, _ = L.linear_forward(*inputs.values())
    assert out.shape == xshape[:-1] + (7,)


def test_relu_gradcheck(backend):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5, 7))
    x[np.abs(x) < 1e-3] = 0.5  # keep centred differences away from the kink at 0
    _check(L.relu_forward, L.relu_backward, {"x": asarray(x)})
    out, _ = L.relu_forward(asarray(x))
    assert np.array_equal(to_numpy(out), np.maximum(x, 0))


def test_gelu_gradcheck_and_values(backend):
    rng = np.random.default_rng(7)
    x = _rand(rng, 3, 5, 7, scale=2.0)
    _check(L.gelu_forward, L.gelu_backward, {"x": x})
    out, _ = L.gelu_forward(asarray(np.array([0.0, 1.0, -1.0, 3.0])))
    # 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) evaluated independently
    ref = [0.0, 0.8411919906082768, -0.15880800939172324, 2.996362607918227]
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-12, atol=1e-15)


def test_layernorm_gradcheck_and_normalisation(backend):
    rng = np.random.default_rng(8)
    inputs = {"x": _rand(rng, 2, 3, 7, scale=3.0) + 1.5, "gamma": _rand(rng, 7), "beta": _rand(rng, 7)}
    _check(L.layernorm_forward, L.layernorm_backward, inputs)
    out, _ = L.layernorm_forward(inputs["x"], asarray(np.ones(7)), asarray(np.zeros(7)))
    o = to_numpy(out)
    np.testing.assert_allclose(o.mean(-1), 0, atol=1e-12)
    x = to_numpy(inputs["x"])
    np.testing.assert_allclose(o.var(-1), x.var(-1) / (x.var(-1) + 1e-5), rtol=1e-10)


def test_embedding_gradcheck_with_repeated_tokens(backend):
    rng = np.random.default_rng(9)
    idx = asarray(np.array([[1, 4, 1], [0, 4, 4]]))  # repeats must accumulate
    w = _rand(rng, 6, 5)
    _check(L.embedding_forward, L.embedding_backward, {"idx": idx, "w": w}, grad_names=["w"])
    dw = L.embedding_backward(asarray(np.ones((2, 3, 5))), L.embedding_forward(idx, w)[1])
    np.testing.assert_array_equal(to_numpy(dw)[:, 0], [1, 2, 0, 0, 3, 0])


def test_embedding_backward_matches_loop_and_repeats_bit_for_bit(backend):
    """dw[v] = sum of dout over the positions holding token v. The sum must equal a plain loop
    (float64: to round-off; float32: within the worst-case error of adding n_v float32 numbers
    in any order, n_v u sum|x| with u = 2^-24, which np.add.at obeys too), and a repeated call
    must give the same bits. On the GPU a scatter-add of atomic float adds fails that last
    check: its order changes between calls, which broke exact resume of prior training."""
    rng = np.random.default_rng(14)
    V, B, T, D = 37, 6, 500, 16
    idx = np.where(rng.random((B, T)) < 0.5, 3, rng.integers(0, V, (B, T)))  # token 3 fills half the rows
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    ref, abs_sum = np.zeros((V, D)), np.zeros((V, D))  # float64 loop: the exact sums of the float32 inputs
    for i, row in zip(idx.reshape(-1), dout.reshape(-1, D).astype(np.float64)):
        ref[i] += row
        abs_sum[i] += np.abs(row)
    counts = np.bincount(idx.reshape(-1), minlength=V)[:, None]  # (V, 1)
    bound = 1.01 * counts * 2.0 ** -24 * abs_sum  # (V, D) float32 summation error bound

    cache = L.EmbeddingCache(asarray(idx), (V, D))
    dw64 = L.embedding_backward(asarray(dout.astype(np.float64)), cache)
    np.testing.assert_allclose(to_numpy(dw64), ref, rtol=1e-12, atol=1e-12)
    dw = L.embedding_backward(asarray(dout), cache)
    assert dw.dtype == np.float32 and dw.shape == (V, D)
    assert (np.abs(to_numpy(dw) - ref) <= bound).all()
    old = np.zeros((V, D), np.float32)
    np.add.at(old, idx.reshape(-1), dout.reshape(-1, D))  # the scatter-add this replaces
    assert (np.abs(old - ref) <= bound).all()
    for _ in range(3):  # bit for bit on repeated calls
        assert np.array_equal(to_numpy(L.embedding_backward(asarray(dout), cache)), to_numpy(dw))
    perm = rng.permutation(B * T)  # the rows in another order: another summation order, same bound
    dwp = L.embedding_backward(asarray(dout.reshape(-1, D)[perm]),
                               L.EmbeddingCache(asarray(idx.reshape(-1)[perm]), (V, D)))
    assert (np.abs(to_numpy(dwp) - ref) <= bound).all()
    assert not to_numpy(dw)[counts[:, 0] == 0].any()  # unused tokens get exactly zero


def test_im2col_lays_out_patches_as_columns(backend):
    """Column (b, oh, ow) of im2col is the flattened (C, KH, KW) patch under output pixel (oh, ow)."""
    B, C, H, W, KH, KW, s, p = 2, 3, 7, 6, 3, 2, 2, 1
    x = np.random.default_rng(15).standard_normal((B, C, H, W))
    cols = to_numpy(conv.im2col(asarray(x), KH, KW, stride=s, pad=p))
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    OH, OW = (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1
    assert cols.shape == (C * KH * KW, B * OH * OW)
    for b in range(B):
        for i in range(OH):
            for j in range(OW):
                patch = xpad[b, :, i * s:i * s + KH, j * s:j * s + KW]
                assert np.array_equal(cols[:, (b * OH + i) * OW + j], patch.reshape(-1))


def _ce_forward(logits, targets, mask=None):
    loss, dlogits = L.softmax_cross_entropy(logits, targets, mask)
    return loss, dlogits


@pytest.mark.parametrize("use_mask", [False, True])
def test_softmax_cross_entropy_gradcheck(backend, use_mask):
    from minivq.gradcheck import numerical_gradient, rel_error
    rng = np.random.default_rng(10)
    logits = _rand(rng, 3, 4, 9, scale=2.0)
    targets = asarray(rng.integers(0, 9, (3, 4)))
    mask = asarray(rng.random((3, 4)) < 0.6) if use_mask else None
    before = to_numpy(logits).copy()
    loss, dlogits = L.softmax_cross_entropy(logits, targets, mask)
    assert dlogits.shape == logits.shape and np.array_equal(to_numpy(logits), before)
    num = numerical_gradient(lambda: float(L.softmax_cross_entropy(logits, targets, mask)[0]), logits)
    assert rel_error(dlogits, num) < TOL
    # reference: mean over unmasked positions of -log softmax[target]
    lg, t = to_numpy(logits), to_numpy(targets)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, t[..., None], -1)[..., 0]
    m = np.ones_like(nll) if mask is None else to_numpy(mask).astype(float)
    assert abs(float(loss) - (nll * m).sum() / m.sum()) < 1e-12


def test_softmax_cross_entropy_is_stable_with_huge_logits(backend):
    logits = asarray(np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]]))
    targets = asarray(np.array([1, 0]))
    loss, d = L.softmax_cross_entropy(logits, targets)
    # row 0: -log softmax = 1e4 ; row 1: log 2
    assert np.isfinite(float(loss))
    assert abs(float(loss) - (1e4 + np.log(2)) / 2) < 1e-8
    np.testing.assert_allclose(to_numpy(d), [[0.5, -0.5, 0.0], [-0.25, 0.25, 0.0]], atol=1e-12)
    lf = asarray(np.array([[80.0, -80.0, 0.0]], dtype=np.float32))  # exp(80) overflows float32
    loss32, d32 = L.softmax_cross_entropy(lf, asarray(np.array([0])))
    assert np.isfinite(float(loss32)) and np.all(np.isfinite(to_numpy(d32)))


def test_softmax_cross_entropy_rejects_empty_mask(backend):
    with pytest.raises(ValueError, match="mask"):
        L.softmax_cross_entropy(asarray(np.zeros((2, 3))), asarray(np.array([0, 1])),
                                asarray(np.zeros(2, dtype=bool)))


def test_mse_gradcheck(backend):
    from minivq.gradcheck import numerical_gradient, rel_error
    rng = np.random.default_rng(11)
    pred, target = _rand(rng, 2, 3, 5), _rand(rng, 2, 3, 5)
    loss, dpred = L.mse(pred, target)
    assert abs(float(loss) - ((to_numpy(pred) - to_numpy(target)) ** 2).mean()) < 1e-14
    num = numerical_gradient(lambda: float(L.mse(pred, target)[0]), pred)
    assert dpred.shape == pred.shape and rel_error(dpred, num) < TOL


def test_residual_block_gradcheck(backend):
    rng = np.random.default_rng(12)
    inputs = {"x": _rand(rng, 2, 3, 5, 7), "w1": _rand(rng, 4, 3, 3, 3), "b1": _rand(rng, 4),
              "w2": _rand(rng, 3, 4, 1, 1), "b2": _rand(rng, 3)}
    _check(conv.residual_block_forward, conv.residual_block_backward, inputs)


def test_layers_keep_float32(backend):
    """Training runs in float32: no layer may silently promote to float64."""
    rng = np.random.default_rng(13)
    f32 = lambda *s: asarray(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    x = f32(2, 3, 8, 8)
    out, c = conv.conv2d_forward(x, f32(4, 3, 4, 4), f32(4), stride=2, pad=1)
    grads = conv.conv2d_backward(out, c)
    out2, c2 = conv.conv_transpose2d_forward(out, f32(4, 3, 4, 4), f32(3), stride=2, pad=1)
    grads += conv.conv_transpose2d_backward(out2, c2)
    out3, c3 = L.layernorm_forward(f32(2, 5), f32(5), f32(5))
    grads += L.layernorm_backward(out3, c3)
    out4, c4 = L.gelu_forward(f32(3, 4))
    grads += (L.gelu_backward(out4, c4),)
    loss, dl = L.softmax_cross_entropy(f32(3, 4), asarray(np.array([0, 1, 2])))
    for a in (out, out2, out3, out4, dl) + tuple(grads):
        assert a.dtype == np.float32
