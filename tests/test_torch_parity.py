"""Forward and backward equal PyTorch's (optional: skipped when torch is not installed).
float32 to 1e-5 relative (norm-based), float64 to 1e-10."""
import numpy as np
import pytest

from minivq import layers as L
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import rel_error

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = [(np.float32, 1e-5), (np.float64, 1e-10)]


def _pair(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    return asarray(a), torch.tensor(a, requires_grad=True)


def _close(ours, theirs, tol):
    assert rel_error(to_numpy(ours), theirs.detach().numpy()) < tol


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("case", [(3, 2, 9, 7, 5, 4, 2, 1), (2, 3, 8, 8, 4, 3, 1, 1), (2, 4, 6, 5, 3, 1, 1, 0),
                                  (4, 1, 16, 12, 8, 4, 2, 1)])  # (B, C, H, W, F, K, stride, pad)
def test_conv2d_matches_torch(backend, case, dtype, tol):
    B, C, H, W, Fo, K, s, p = case
    rng = np.random.default_rng(0)
    x, tx = _pair(rng, (B, C, H, W), dtype)
    w, tw = _pair(rng, (Fo, C, K, K), dtype)
    b, tb = _pair(rng, (Fo,), dtype)
    out, cache = L.conv2d_forward(x, w, b, stride=s, pad=p)
    tout = F.conv2d(tx, tw, tb, stride=s, padding=p)
    _close(out, tout, tol)
    d, td = _pair(rng, tuple(out.shape), dtype)
    dx, dw, db = L.conv2d_backward(d, cache)
    tout.backward(td)
    for g, t in ((dx, tx), (dw, tw), (db, tb)):
        _close(g, t.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("case", [(3, 2, 9, 7, 5, 4, 2, 1), (2, 3, 8, 8, 4, 3, 1, 1), (2, 4, 5, 6, 1, 4, 2, 1),
                                  (2, 3, 5, 5, 2, 3, 2, 0)])  # (B, C, H, W, F, K, stride, pad)
def test_conv_transpose2d_matches_torch(backend, case, dtype, tol):
    B, C, H, W, Fo, K, s, p = case
    rng = np.random.default_rng(1)
    x, tx = _pair(rng, (B, C, H, W), dtype)
    w, tw = _pair(rng, (C, Fo, K, K), dtype)
    b, tb = _pair(rng, (Fo,), dtype)
    out, cache = L.conv_transpose2d_forward(x, w, b, stride=s, pad=p)
    tout = F.conv_transpose2d(tx, tw, tb, stride=s, padding=p)
    _close(out, tout, tol)
    d, td = _pair(rng, tuple(out.shape), dtype)
    dx, dw, db = L.conv_transpose2d_backward(d, cache)
    tout.backward(td)
    for g, t in ((dx, tx), (dw, tw), (db, tb)):
        _close(g, t.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_layernorm_matches_torch(backend, dtype, tol):
    rng = np.random.default_rng(2)
    x, tx = _pair(rng, (3, 5, 33), dtype)
    g, tg = _pair(rng, (33,), dtype)
    b, tb = _pair(rng, (33,), dtype)
    out, cache = L.layernorm_forward(x, g, b)
    tout = F.layer_norm(tx, (33,), tg, tb, eps=1e-5)
    _close(out, tout, tol)
    d, td = _pair(rng, (3, 5, 33), dtype)
    grads = L.layernorm_backward(d, cache)
    tout.backward(td)
    for ours, t in zip(grads, (tx, tg, tb)):
        _close(ours, t.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_gelu_tanh_matches_torch(backend, dtype, tol):
    rng = np.random.default_rng(3)
    x, tx = _pair(rng, (4, 7, 9), dtype)
    out, cache = L.gelu_forward(x)
    tout = F.gelu(tx, approximate="tanh")
    _close(out, tout, tol)
    d, td = _pair(rng, (4, 7, 9), dtype)
    tout.backward(td)
    _close(L.gelu_backward(d, cache), tx.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_cross_entropy_matches_torch(backend, dtype, tol, masked):
    rng = np.random.default_rng(4)
    logits, tl = _pair(rng, (3, 6, 11), dtype)
    tl.data *= 3
    logits = asarray(tl.detach().numpy().copy())
    t = rng.integers(0, 11, (3, 6))
    m = rng.random((3, 6)) < 0.5 if masked else np.ones((3, 6), bool)
    loss, dlogits = L.softmax_cross_entropy(logits, asarray(t), asarray(m) if masked else None)
    tt = torch.tensor(np.where(m, t, -100))  # torch: ignore_index marks masked positions
    tloss = F.cross_entropy(tl.reshape(-1, 11), tt.reshape(-1), ignore_index=-100)
    assert abs(float(loss) - tloss.item()) <= tol * abs(tloss.item())
    tloss.backward()
    _close(dlogits, tl.grad, tol)
