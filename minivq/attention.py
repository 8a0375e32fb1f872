"""Causal multi-head self-attention: forward, backward, and a KV cache for decoding.

Size letters: B batch, T sequence length (query positions), S key positions (S = T in
training; S = positions decoded so far when sampling), C model width (d_model),
H heads, E = C // H head width.

    qkv = x @ w_qkv + b_qkv                       one fused projection, split into q, k, v
    A   = softmax(q k^T / sqrt(E) + M)            M[t, s] = -inf where s > t (the causal mask)
    y   = A v                                     each head mixes the values it may see
    out = concat_heads(y) @ w_proj + b_proj

All heads are handled at once by batched matrix products on 4-D arrays (B, H, T, E):
there is no Python loop over heads or positions. The queries are taken in blocks of
QUERY_BLOCK rows, and a block only forms scores against the keys it may see (0 .. its last
query): the (T, T) scores above the diagonal block are never computed, stored or
exponentiated. With nb blocks that is (nb + 1) / (2 nb) of the full T x T work and memory
(56% at T = 1024, nb = 8), and the backward's (B, H, T, T)-sized temporary shrinks to one
block's (B, H, QUERY_BLOCK, T). Only the diagonal block needs the causal mask.

Parameters are a dict with keys ``w_qkv`` (C, 3C), ``b_qkv`` (3C,), ``w_proj`` (C, C),
``b_proj`` (C,); gradients come back as a dict with the same keys (``d`` is implied).
"""
import math
from typing import NamedTuple

from minivq.backend import asarray, xp
from minivq.layers import LinearCache, linear_backward, linear_forward, softmax

ATTN_KEYS = ("w_qkv", "b_qkv", "w_proj", "b_proj")  # the parameter names, in init_attention's order


QUERY_BLOCK = 128  # query rows per block (see the module docstring); a whole T <= 128 is one block


class AttentionCache(NamedTuple):
    qkv: LinearCache   # the fused projection: x (B, T, C), w_qkv (C, 3C)
    proj: LinearCache  # the output projection: merged heads ym (B, T, C), w_proj (C, C)
    q: object          # (B, H, T, E) queries, already scaled by 1/sqrt(E)
    k: object          # (B, H, T, E) keys
    v: object          # (B, H, T, E) values
    blocks: list       # [(t0, t1)] the query blocks: rows t0..t1-1, which see keys 0..t1-1
    att: list          # [(B, H, t1 - t0, t1)] attention probabilities of each block (0 above the diagonal)
    scale: float       # 1/sqrt(E)
    n_head: int        # H


def init_attention(C, rng, n_layer=1, std=0.02):
    """Initial weights for one attention layer of width C, drawn on the host from ``rng``
    (backend.rng(seed)) so a seed gives the same weights on CPU and GPU; float32 arrays on
    the current backend. The output projection is scaled by 1/sqrt(2 n_layer) (GPT-2): each
    block adds two residual branches, and this keeps the residual stream's variance flat."""
    return {
        "w_qkv": asarray((rng.standard_normal((C, 3 * C)) * std).astype("float32")),  # (C, 3C)
        "b_qkv": xp.zeros(3 * C, dtype="float32"),  # (3C,)
        "w_proj": asarray((rng.standard_normal((C, C)) * std / math.sqrt(2 * n_layer)).astype("float32")),  # (C, C)
        "b_proj": xp.zeros(C, dtype="float32"),  # (C,)
    }


def _split_heads(a, n_head):
    """(B, T, C) -> (B, H, T, E) (a transposed view; matmul copes with the strides)."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, H, T, E)


def _merge_heads(a):
    """(B, H, T, E) -> (B, T, C) contiguous."""
    B, H, T, E = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, H * E)  # (B, T, C)


def causal_mask(T, S=None, dtype="float32"):
    """Additive mask (T, S): 0 where query t may see key s (s <= t + S - T), -inf elsewhere.
    With S > T the queries are the LAST T positions of an S-long sequence."""
    S = T if S is None else S
    t = xp.arange(T)[:, None] + (S - T)  # (T, 1) absolute query positions
    s = xp.arange(S)[None, :]  # (1, S)
    return xp.where(s > t, -xp.inf, 0.0).astype(dtype)  # (T, S)


def query_blocks(T):
    """[(t0, t1)]: the query rows 0..T-1 cut into blocks of at most QUERY_BLOCK rows."""
    return [(t0, min(t0 + QUERY_BLOCK, T)) for t0 in range(0, T, QUERY_BLOCK)]


def attention_forward(x, params, n_head):
    """x: (B, T, C), params: dict (see module doc), n_head: H dividing C -> out (B, T, C), cache."""
    B, T, C = x.shape
    if C % n_head:
        raise ValueError(f"attention: width {C} is not divisible by n_head={n_head}")
    E = C // n_head
    qkv, c_qkv = linear_forward(x, params["w_qkv"], params["b_qkv"])  # (B, T, 3C)
    q = _split_heads(qkv[..., :C], n_head)  # (B, H, T, E)
    k = _split_heads(qkv[..., C:2 * C], n_head)  # (B, H, T, E)
    v = _split_heads(qkv[..., 2 * C:], n_head)  # (B, H, T, E)
    scale = 1.0 / math.sqrt(E)
    q = q * scale  # scaling q (B, H, T, E) is T/E times cheaper than scaling the scores
    ym = xp.empty((B, T, C), dtype=qkv.dtype)  # (B, T, C) merged head outputs, filled block by block
    y = _split_heads(ym, n_head)  # (B, H, T, E) view of ym
    blocks, att = query_blocks(T), []
    for t0, t1 in blocks:
        a = q[:, :, t0:t1] @ k[:, :, :t1].transpose(0, 1, 3, 2)  # (B, H, Tb, t1) scores q k^T / sqrt(E)
        a[..., t0:] += causal_mask(t1 - t0, dtype=a.dtype)  # the diagonal block: future keys -> -inf
        softmax(a, out=a)  # (B, H, Tb, t1) probabilities, in place
        y[:, :, t0:t1] = a @ v[:, :, :t1]  # (B, H, Tb, E)
        att.append(a)
    out, c_proj = linear_forward(ym, params["w_proj"], params["b_proj"])  # (B, T, C)
    return out, AttentionCache(c_qkv, c_proj, q, k, v, blocks, att, scale, n_head)


def attention_backward(dout, cache):
    """dout: (B, T, C) -> dx (B, T, C), grads dict {w_qkv, b_qkv, w_proj, b_proj}.

    Softmax backward for one row a = softmax(s):  ds = a * (da - sum_j a_j da_j).
    The row sum needs no (T, T) temporary: with da = dy v^T and y = a v,
        sum_j a_tj da_tj = sum_j a_tj (dy_t . v_j) = dy_t . y_t
    (the identity FlashAttention uses), a dot product over E per (b, h, t).
    Block by block, as in the forward: a block's queries get their whole gradient from it,
    its keys and values (0..t1-1) add up the contributions of every block that saw them."""
    q, k, v, scale, n_head = cache.q, cache.k, cache.v, cache.scale, cache.n_head
    dym, dw_proj, db_proj = linear_backward(dout, cache.proj)  # (B, T, C)
    ym = cache.proj.x  # (B, T, C) the merged head outputs
    B, T, C = ym.shape
    dy = _split_heads(dym, n_head)  # (B, H, T, E)
    rowdot = (dym * ym).reshape(B, T, n_head, -1).sum(axis=-1).transpose(0, 2, 1)[..., None]  # (B, H, T, 1)
    dqkv = xp.zeros((B, T, 3 * C), dtype=dym.dtype)  # (B, T, 3C) written through the three views below
    dq = _split_heads(dqkv[..., :C], n_head)  # (B, H, T, E) views
    dk = _split_heads(dqkv[..., C:2 * C], n_head)
    dv = _split_heads(dqkv[..., 2 * C:], n_head)
    for (t0, t1), a in zip(cache.blocks, cache.att):
        dv[:, :, :t1] += a.transpose(0, 1, 3, 2) @ dy[:, :, t0:t1]  # (B, H, t1, E)
        ds = dy[:, :, t0:t1] @ v[:, :, :t1].transpose(0, 1, 3, 2)  # (B, H, Tb, t1) d(probabilities), fresh
        ds -= rowdot[:, :, t0:t1]
        ds *= a  # masked entries have a = 0, so no gradient flows to future keys
        # ds is now the gradient of the scores s = q_s k^T with q_s = q / sqrt(E) (the cached q)
        dq[:, :, t0:t1] = ds @ k[:, :, :t1]  # (B, H, Tb, E) gradient of q_s (scaled to q's below)
        dk[:, :, :t1] += ds.transpose(0, 1, 3, 2) @ q[:, :, t0:t1]  # (B, H, t1, E)
    dq *= scale
    dx, dw_qkv, db_qkv = linear_backward(dqkv, cache.qkv)  # (B, T, C)
    return dx, {"w_qkv": dw_qkv, "b_qkv": db_qkv, "w_proj": dw_proj, "b_proj": db_proj}


def attention_probs(cache):
    """The attention probabilities (B, H, T, T) kept by attention_forward (for figures),
    assembled from the query blocks (zeros above the diagonal, as the softmax gave them)."""
    a0 = cache.att[0]
    T = cache.blocks[-1][1]
    att = xp.zeros(a0.shape[:2] + (T, T), dtype=a0.dtype)  # (B, H, T, T)
    for (t0, t1), a in zip(cache.blocks, cache.att):
        att[:, :, t0:t1, :t1] = a
    return att


# ----------------------------------------------------------------------------- KV cache
def new_kv_cache(B, n_head, S_max, C, dtype="float32"):
    """Empty key/value buffers for decoding up to S_max positions: dict k, v (B, H, S_max, E)
    and n (positions filled so far)."""
    E = C // n_head
    return {"k": xp.zeros((B, n_head, S_max, E), dtype=dtype),  # (B, H, S_max, E)
            "v": xp.zeros((B, n_head, S_max, E), dtype=dtype),  # (B, H, S_max, E)
            "n": 0}


def attention_step(x, params, n_head, kv):
    """Decode one position: x (B, 1, C) is the newest token's input; its key and value are
    appended to ``kv`` (in place) and it attends to every position so far -> out (B, 1, C).
    Cost O(S) per token instead of recomputing the whole O(S^2) attention. No mask is
    needed: the cache only holds the past and the present."""
    B, _, C = x.shape
    E = C // n_head
    n = kv["n"]
    if n >= kv["k"].shape[2]:
        raise ValueError(f"attention_step: the KV cache holds {n} positions, its maximum")
    qkv = x @ params["w_qkv"] + params["b_qkv"]  # (B, 1, 3C)
    q = _split_heads(qkv[..., :C], n_head)  # (B, H, 1, E)
    kv["k"][:, :, n] = _split_heads(qkv[..., C:2 * C], n_head)[:, :, 0]
    kv["v"][:, :, n] = _split_heads(qkv[..., 2 * C:], n_head)[:, :, 0]
    kv["n"] = n + 1
    k, v = kv["k"][:, :, :n + 1], kv["v"][:, :, :n + 1]  # (B, H, S, E) views
    att = q @ k.transpose(0, 1, 3, 2)  # (B, H, 1, S)
    att *= 1.0 / math.sqrt(E)  # (attention_forward scales q instead: the two agree to round-off)
    softmax(att, out=att)  # (B, H, 1, S) probabilities, in place
    y = _merge_heads(att @ v)  # (B, 1, C)
    return y @ params["w_proj"] + params["b_proj"]  # (B, 1, C)
