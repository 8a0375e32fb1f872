"""Causal multi-head attention: gradients, the mask, a per-head reference, the KV cache."""
import math

import numpy as np
import pytest

from minivq import attention as A
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import check_layer, rel_error

B, T, C, H = 2, 7, 12, 3  # T not a power of two, several heads


def _params(rng, scale=1.0):
    """float64 attention weights large enough that the softmax is far from uniform."""
    return {"w_qkv": asarray(rng.standard_normal((C, 3 * C)) * 0.5 * scale),
            "b_qkv": asarray(rng.standard_normal(3 * C) * 0.3),
            "w_proj": asarray(rng.standard_normal((C, C)) * 0.3),
            "b_proj": asarray(rng.standard_normal(C) * 0.1)}


def _fwd(x, w_qkv, b_qkv, w_proj, b_proj):
    return A.attention_forward(x, {"w_qkv": w_qkv, "b_qkv": b_qkv, "w_proj": w_proj, "b_proj": b_proj}, H)


def _bwd(dout, cache):
    dx, g = A.attention_backward(dout, cache)
    return dx, g["w_qkv"], g["b_qkv"], g["w_proj"], g["b_proj"]


# QUERY_BLOCK 128 keeps T = 7 in one block; 3 cuts it into blocks (0, 3), (3, 6), (6, 7) (a
# short last block); 1 makes every query row its own block
BLOCKS = [128, 3, 1]


@pytest.mark.parametrize("block", BLOCKS)
def test_attention_gradcheck(backend, block, monkeypatch):
    monkeypatch.setattr(A, "QUERY_BLOCK", block)
    rng = np.random.default_rng(0)
    x = asarray(rng.standard_normal((B, T, C)))
    errs = check_layer(_fwd, _bwd, {"x": x, **_params(rng)})
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("block", BLOCKS)
def test_matches_per_head_reference(backend, block, monkeypatch):
    """Compare with the textbook formula computed head by head with explicit loops."""
    monkeypatch.setattr(A, "QUERY_BLOCK", block)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, C))
    p = _params(rng)
    out, cache = A.attention_forward(asarray(x), p, H)
    pn = {k: to_numpy(v) for k, v in p.items()}
    qkv = x @ pn["w_qkv"] + pn["b_qkv"]
    E = C // H
    ref = np.zeros((B, T, C))
    for b in range(B):
        for h in range(H):
            q, k, v = (qkv[b, :, i * C + h * E:i * C + (h + 1) * E] for i in range(3))
            s = q @ k.T / math.sqrt(E)
            s[np.triu_indices(T, 1)] = -np.inf
            a = np.exp(s - s.max(1, keepdims=True))
            a /= a.sum(1, keepdims=True)
            ref[b, :, h * E:(h + 1) * E] = a @ v
    ref = ref @ pn["w_proj"] + pn["b_proj"]
    assert rel_error(out, ref) < 1e-12
    att = to_numpy(A.attention_probs(cache))  # (B, H, T, T)
    assert len(cache.att) == -(-T // block)
    assert np.allclose(att.sum(-1), 1.0)
    assert np.all(att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)


def test_causal_outputs_ignore_the_future(backend):
    rng = np.random.default_rng(2)
    p = _params(rng)
    x = rng.standard_normal((B, T, C))
    out0 = to_numpy(A.attention_forward(asarray(x), p, H)[0])
    for t in range(T):
        x2 = x.copy()
        x2[:, t] += rng.standard_normal((B, C))
        out1 = to_numpy(A.attention_forward(asarray(x2), p, H)[0])
        assert np.abs(out1[:, :t] - out0[:, :t]).max(initial=0.0) < 1e-12
        assert np.abs(out1[:, t] - out0[:, t]).max() > 1e-3  # position t itself does change


def test_kv_cache_step_equals_full_forward(backend):
    rng = np.random.default_rng(3)
    p = _params(rng)
    x = asarray(rng.standard_normal((B, T, C)))
    full, _ = A.attention_forward(x, p, H)
    kv = A.new_kv_cache(B, H, T, C, dtype="float64")
    steps = [to_numpy(A.attention_step(x[:, t:t + 1], p, H, kv)) for t in range(T)]
    assert rel_error(np.concatenate(steps, axis=1), full) < 1e-12
    with pytest.raises(ValueError, match="KV cache"):
        A.attention_step(x[:, :1], p, H, kv)


def test_backward_leaves_inputs_alone(backend):
    rng = np.random.default_rng(4)
    p = _params(rng)
    x = asarray(rng.standard_normal((B, T, C)))
    out, cache = A.attention_forward(x, p, H)
    dout = asarray(rng.standard_normal(out.shape))
    d0 = to_numpy(dout).copy()
    A.attention_backward(dout, cache)
    assert np.array_equal(to_numpy(dout), d0)


def test_bad_head_count():
    with pytest.raises(ValueError, match="divisible"):
        A.attention_forward(np.zeros((1, 3, 10)), {"w_qkv": np.zeros((10, 30)), "b_qkv": np.zeros(30),
                                                   "w_proj": np.zeros((10, 10)), "b_proj": np.zeros(10)}, 3)


def test_query_blocks_store_only_the_visible_keys(backend, monkeypatch):
    """Block (t0, t1) keeps probabilities over keys 0..t1-1 only: T=10 in blocks of 4 stores
    4*4 + 4*8 + 2*10 = 68 of the 100 (T, T) entries, and its backward still matches one block."""
    rng = np.random.default_rng(5)
    p = _params(rng)
    x = asarray(rng.standard_normal((B, 10, C)))
    dout = asarray(rng.standard_normal((B, 10, C)))
    monkeypatch.setattr(A, "QUERY_BLOCK", 4)
    out, cache = A.attention_forward(x, p, H)
    assert cache.blocks == [(0, 4), (4, 8), (8, 10)]
    assert [tuple(a.shape) for a in cache.att] == [(B, H, 4, 4), (B, H, 4, 8), (B, H, 2, 10)]
    dx, g = A.attention_backward(dout, cache)
    monkeypatch.setattr(A, "QUERY_BLOCK", 128)
    out1, cache1 = A.attention_forward(x, p, H)
    dx1, g1 = A.attention_backward(dout, cache1)
    assert len(cache1.att) == 1
    # the same sums in another grouping: equal to float64 round-off
    assert rel_error(out, out1) < 1e-12 and rel_error(dx, dx1) < 1e-12
    assert max(rel_error(g[k], g1[k]) for k in g) < 1e-12
