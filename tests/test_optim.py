"""Adam(W): exact single step, convergence on a convex quadratic, clipping, LR schedule."""
import math

import numpy as np
import pytest

from minivq import optim
from minivq.backend import asarray, to_numpy


def test_adam_first_steps_equal_closed_form(backend):
    rng = np.random.default_rng(0)
    w0, g1, g2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.999), 1e-8, 0.1
    w, state = asarray(w0.copy()), {}
    optim.adam(w, asarray(g1), state, lr, (b1, b2), eps, wd)
    # step 1: m_hat = g, v_hat = g^2, so the update is lr * (g / (|g| + eps) + wd * w)
    w1 = w0 - lr * (g1 / (np.abs(g1) + eps) + wd * w0)
    np.testing.assert_allclose(to_numpy(w), w1, rtol=1e-12, atol=1e-15)
    optim.adam(w, asarray(g2), state, lr, (b1, b2), eps, wd)
    m = (1 - b1) * (b1 * g1 + g2)  # m after 2 steps, unrolled
    v = (1 - b2) * (b2 * g1 ** 2 + g2 ** 2)
    w2 = w1 - lr * ((m / (1 - b1 ** 2)) / (np.sqrt(v / (1 - b2 ** 2)) + eps) + wd * w1)
    np.testing.assert_allclose(to_numpy(w), w2, rtol=1e-12, atol=1e-15)
    assert state["t"] == 2


def test_adam_converges_on_convex_quadratic(backend):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 6))
    Q = A @ A.T + 0.5 * np.eye(6)  # positive definite
    target = rng.standard_normal(6)
    params = {"x": asarray(np.zeros(6))}
    Qb, tb = asarray(Q), asarray(target)
    state = {}
    for step in range(3000):
        grads = {"x": Qb @ (params["x"] - tb)}  # f = 0.5 (x-t)^T Q (x-t)
        optim.adam_step(params, grads, state, lr=optim.lr_at(step, 0.05, 50, 3000, 1e-4))
    assert np.abs(to_numpy(params["x"]) - target).max() < 1e-3


def test_adam_step_no_decay_and_key_checks(backend):
    params = {"w": asarray(np.ones(3)), "b": asarray(np.ones(3))}
    zero = {"w": asarray(np.zeros(3)), "b": asarray(np.zeros(3))}
    state = {}
    optim.adam_step(params, zero, state, lr=0.1, weight_decay=0.5, no_decay=("b",))
    np.testing.assert_allclose(to_numpy(params["w"]), 1 - 0.1 * 0.5)  # decayed only
    np.testing.assert_allclose(to_numpy(params["b"]), 1.0)
    with pytest.raises(AssertionError, match="missing"):
        optim.adam_step(params, {"w": zero["w"]}, state, lr=0.1)
    with pytest.raises(AssertionError, match="shape"):
        optim.adam_step(params, {"w": zero["w"], "b": asarray(np.zeros(4))}, state, lr=0.1)


def test_clip_grad_norm(backend):
    grads = {"a": asarray(np.array([3.0, 0.0])), "b": asarray(np.array([[4.0]]))}
    assert optim.global_norm(grads) == pytest.approx(5.0)
    clipped, norm = optim.clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert optim.global_norm(clipped) == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_allclose(to_numpy(clipped["a"]), [0.6, 0.0])
    np.testing.assert_allclose(to_numpy(grads["a"]), [3.0, 0.0])  # input untouched
    same, norm2 = optim.clip_grad_norm(grads, 10.0)
    assert norm2 == pytest.approx(5.0) and np.array_equal(to_numpy(same["b"]), [[4.0]])


def test_lr_schedule_warmup_then_cosine():
    base, warm, total, lo = 1e-3, 10, 110, 1e-5
    lrs = [optim.lr_at(s, base, warm, total, lo) for s in range(total + 5)]
    assert lrs[0] == pytest.approx(base / warm)
    assert lrs[warm - 1] == pytest.approx(base)
    assert all(a < b for a, b in zip(lrs[:warm - 1], lrs[1:warm]))  # rising warmup
    assert lrs[warm] == pytest.approx(base)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # monotone decay
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * 0.5)))
    assert lrs[total] == pytest.approx(lo) and lrs[-1] == pytest.approx(lo)
    assert optim.lr_at(0, base, 0, total) == pytest.approx(base)
