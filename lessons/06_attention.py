"""Lesson 06: causal multi-head self-attention, step by step.

    python lessons/06_attention.py [--quick] [--out out/lesson06]

On a tiny example (5 positions, width 8, 2 heads) we follow minivq.attention:
  1. the fused q/k/v projection and the split into heads,
  2. the scores q k^T / sqrt(E) and the causal mask (-inf above the diagonal),
  3. the softmax (each row sums to 1, the future gets exactly 0),
  4. the backward: the softmax gradient and the row-sum identity  sum_j a_j da_j = dy . y,
  5. a float64 finite-difference check of every gradient, at a size with T not a power of 2,
  6. the KV cache: decoding one position at a time gives the same outputs.
Figure: attention.png (scores, mask, probabilities per head, gradient of the scores).
"""
import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import attention as A  # noqa: E402
from minivq import backend  # noqa: E402
from minivq import layers as L  # noqa: E402
from minivq.gradcheck import check_layer  # noqa: E402

T = 5  # positions in the toy sequence
C = 8  # model width
N_HEAD = 2  # heads (head width E = C / N_HEAD = 4)
SEED = 0
CHECK_SHAPES = [(2, 7, 12, 3), (3, 11, 16, 4)]  # (B, T, C, H) for the gradient check
QUICK_CHECK_SHAPES = [(2, 7, 12, 3)]


def params(rng, C):
    """float64 weights, larger than the training init so the attention is visibly peaked."""
    return {"w_qkv": rng.standard_normal((C, 3 * C)) * 0.6, "b_qkv": rng.standard_normal(3 * C) * 0.2,
            "w_proj": rng.standard_normal((C, C)) * 0.3, "b_proj": np.zeros(C)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer gradient-check shapes")
    ap.add_argument("--out", default="out/lesson06", help="output folder")
    args = ap.parse_args()
    backend.use("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    rng = np.random.default_rng(SEED)
    E = C // N_HEAD

    print("1. projection: one matrix (C, 3C) gives queries, keys and values for every position")
    x = rng.standard_normal((1, T, C))  # (B=1, T, C)
    p = params(rng, C)
    qkv = x @ p["w_qkv"] + p["b_qkv"]  # (1, T, 3C)
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(1, T, N_HEAD, E).transpose(0, 2, 1, 3) for i in range(3))
    print(f"   x {x.shape} -> qkv {qkv.shape} -> q, k, v each {q.shape} = (B, H, T, E)")

    print(f"\n2. scores s = q k^T / sqrt(E) (E={E}) for head 0, then the causal mask")
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E)  # (1, H, T, T)
    mask = backend.to_numpy(A.causal_mask(T, dtype="float64"))  # (T, T)
    print(s[0, 0])
    print("   mask (0 = may look, -inf = future):")
    print(mask)

    print("\n3. softmax of each masked row (rows sum to 1; entries above the diagonal are exactly 0)")
    a = L.softmax(s + mask)  # (1, H, T, T)
    print(a[0, 0])
    print("   row sums:", a[0, 0].sum(-1))
    y_lib, cache = A.attention_forward(x, p, N_HEAD)
    ours = (a @ v).transpose(0, 2, 1, 3).reshape(1, T, C) @ p["w_proj"] + p["b_proj"]
    print(f"   library attention_forward agrees with these steps: max |diff| = {np.abs(y_lib - ours).max():.1e}")

    print("\n4. backward of the softmax: ds = a * (da - sum_j a_j da_j), then scaled by 1/sqrt(E)")
    dout = rng.standard_normal(y_lib.shape)
    dy = (dout @ p["w_proj"].T).reshape(1, T, N_HEAD, E).transpose(0, 2, 1, 3)  # (1, H, T, E)
    da = dy @ v.transpose(0, 1, 3, 2)  # (1, H, T, T)
    rowsum_direct = (a * da).sum(-1)  # needs the whole (T, T) product
    rowsum_trick = (dy * (a @ v)).sum(-1)  # only (T, E): what attention_backward uses
    print(f"   sum_j a_j da_j directly  : {rowsum_direct[0, 0]}")
    print(f"   as dy . y (no T x T temp): {rowsum_trick[0, 0]}")
    ds = a * (da - rowsum_direct[..., None]) / math.sqrt(E)  # (1, H, T, T)
    print("   gradient of the scores for head 0 (zero above the diagonal: the mask blocks the future):")
    print(ds[0, 0])

    print("\n5. finite-difference check (float64, centred differences, h=1e-6)")
    shapes = QUICK_CHECK_SHAPES if args.quick else CHECK_SHAPES
    for (B_, T_, C_, H_) in shapes:
        pr = params(rng, C_)
        errs = check_layer(lambda x_, w1, b1, w2, b2: A.attention_forward(
            x_, {"w_qkv": w1, "b_qkv": b1, "w_proj": w2, "b_proj": b2}, H_),
            lambda d, c: (lambda dx, g: (dx, g["w_qkv"], g["b_qkv"], g["w_proj"], g["b_proj"]))(
                *A.attention_backward(d, c)),
            {"x": rng.standard_normal((B_, T_, C_)), "w_qkv": pr["w_qkv"], "b_qkv": pr["b_qkv"],
             "w_proj": pr["w_proj"], "b_proj": pr["b_proj"]})
        print(f"   B={B_} T={T_} C={C_} H={H_}: " + ", ".join(f"d{k} {e:.1e}" for k, e in errs.items())
              + f"  -> worst {max(errs.values()):.1e} ({'OK' if max(errs.values()) < 1e-6 else 'FAIL'})")

    print("\n6. KV cache: feed one position at a time; keys/values of the past are reused")
    kv = A.new_kv_cache(1, N_HEAD, T, C, dtype="float64")
    steps = np.concatenate([A.attention_step(x[:, t:t + 1], p, N_HEAD, kv) for t in range(T)], axis=1)
    print(f"   max |cached - full| = {np.abs(steps - y_lib).max():.1e}; work per new token is O(T), not O(T^2)")

    fig, ax = plt.subplots(2, N_HEAD + 1, figsize=(3.3 * (N_HEAD + 1), 6.4))
    im = ax[0, 0].imshow(s[0, 0], cmap="coolwarm")
    ax[0, 0].set_title("head 0 scores q k^T/sqrt(E)")
    fig.colorbar(im, ax=ax[0, 0], fraction=0.046)
    ax[1, 0].imshow(np.isfinite(mask) * 1.0, cmap="gray", vmin=0, vmax=1)
    ax[1, 0].set_title("causal mask (white = visible)")
    for h in range(N_HEAD):
        im = ax[0, h + 1].imshow(a[0, h], cmap="viridis", vmin=0, vmax=1)
        ax[0, h + 1].set_title(f"head {h} attention (rows sum to 1)")
        fig.colorbar(im, ax=ax[0, h + 1], fraction=0.046)
        lim = np.abs(ds[0, h]).max()
        im = ax[1, h + 1].imshow(ds[0, h], cmap="coolwarm", vmin=-lim, vmax=lim)
        ax[1, h + 1].set_title(f"head {h} d(scores)")
        fig.colorbar(im, ax=ax[1, h + 1], fraction=0.046)
    for a_ in ax.ravel():
        a_.set_xlabel("key position s")
        a_.set_ylabel("query position t")
    fig.tight_layout()
    fig.savefig(out / "attention.png", dpi=110)
    print(f"\nsaved {out / 'attention.png'}")


if __name__ == "__main__":
    main()
