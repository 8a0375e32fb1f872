"""Lesson 06: causal multi-head self-attention, forward and backward, written out and checked.

    python lessons/06_attention.py [--quick] [--out out/lesson06] [--heads N] [--no-mask] [--w-scale S]

On a toy sequence (5 positions, width 8, 2 heads) the lesson computes, in plain NumPy:

  forward                                        backward (dout = dL/d out given)
    qkv = x W_qkv + b_qkv  -> q, k, v (B,H,T,E)    dW_proj = ymᵀ dout, db_proj = Σ dout, dym = dout W_projᵀ
    s   = q kᵀ / sqrt(E) + M   (M = -inf above      da = dy vᵀ            dv = aᵀ dy
          the diagonal: the causal mask)            ds = a ⊙ (da − Σ_j a_j da_j)   (softmax backward)
    a   = softmax(s)  (each row sums to 1)          dq = ds k / sqrt(E)   dk = dsᵀ q / sqrt(E)
    y   = a v  -> ym = heads side by side (B,T,C)   dqkv = [dq dk dv] -> dW_qkv = xᵀ dqkv,
    out = ym W_proj + b_proj                               db_qkv = Σ dqkv, dx = dqkv W_qkvᵀ

then checks it against minivq.attention (forward, every gradient, the KV cache used for
sampling) and against finite differences. Figure: attention.png (per head: scores, attention,
d(scores), dq, dk, dv).

Try this
  --no-mask   drop the causal mask. Watch the attention above the diagonal become non-zero,
              the earlier outputs change when the LAST input changes (future leakage), and
              the KV-cache decoding (which only ever holds the past) disagree with the full
              forward: a model trained like this could not be sampled one token at a time.
  --heads N   1, 2, 4 or 8 heads over the same width 8 (E = 8 / N). With 8 heads each head has
              E = 1: every score is the product of two numbers, so a head can only rank the
              keys along a single direction (the checks still pass: the algebra is the same).
  In the figure, read ds column by column: key j collects gradient from queries t >= j only,
              so the last key hears from one query and the first from all of them. Rows where
              a is one-hot (a saturated softmax) have ds = 0: no gradient passes at all.
  --w-scale S  the spread of W_qkv (default 0.6). At 2 the scores are large and more rows of a
              turn one-hot, passing (almost) no gradient: watch the "saturated" count printed at
              the end. At 0.1 a is close to uniform averaging over the past; only query 0, which
              sees key 0 alone, stays one-hot.
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
from minivq.gradcheck import check_layer  # noqa: E402

T = 5  # positions in the toy sequence
C = 8  # model width
N_HEAD = 2  # heads (head width E = C / N_HEAD = 4); --heads changes it
W_SCALE = 0.6  # spread of W_qkv for the toy: sets how peaked the attention is (--w-scale)
SEED = 0
FD_H = 1e-6  # step of the centred finite differences (float64)
FD_PROBES = 6  # entries of each array probed by the lesson's own finite-difference check
CHECK_SHAPES = [(2, 7, 12, 3), (3, 11, 16, 4)]  # (B, T, C, H) for the library's full gradient check
QUICK_CHECK_SHAPES = [(2, 7, 12, 3)]
MAX_HEADS_SHOWN = 4  # rows of the figure


def params(rng, C, w_scale=W_SCALE):
    """float64 weights, larger than the training init so the attention is visibly peaked."""
    return {"w_qkv": rng.standard_normal((C, 3 * C)) * w_scale, "b_qkv": rng.standard_normal(3 * C) * 0.2,
            "w_proj": rng.standard_normal((C, C)) * 0.3, "b_proj": np.zeros(C)}


# ----------------------------------------------------------------------------- the lesson's attention
def split_heads(a, H):
    """(B, T, C) -> (B, H, T, E)."""
    B, T_, C_ = a.shape
    return a.reshape(B, T_, H, C_ // H).transpose(0, 2, 1, 3)


def merge_heads(a):
    """(B, H, T, E) -> (B, T, C): the heads' outputs side by side."""
    B, H, T_, E = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T_, H * E)


def attention_forward(x, p, H, causal=True):
    """x (B, T, C) -> out (B, T, C) and the intermediates the backward needs."""
    B, T_, C_ = x.shape
    E = C_ // H
    qkv = x @ p["w_qkv"] + p["b_qkv"]  # (B, T, 3C) one fused projection
    q = split_heads(qkv[..., :C_], H)  # (B, H, T, E)
    k = split_heads(qkv[..., C_:2 * C_], H)  # (B, H, T, E)
    v = split_heads(qkv[..., 2 * C_:], H)  # (B, H, T, E)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E)  # (B, H, T, T) scores: query t against key j
    if causal:
        future = np.triu(np.ones((T_, T_), bool), k=1)  # (T, T) True where key j > query t
        s = np.where(future, -np.inf, s)  # exp(-inf) = 0: the future gets exactly zero weight
    a = np.exp(s - s.max(axis=-1, keepdims=True))  # (B, H, T, T) shift by the row max: no overflow
    a /= a.sum(axis=-1, keepdims=True)  # softmax over the keys j
    y = a @ v  # (B, H, T, E) each query's weighted average of the values
    ym = merge_heads(y)  # (B, T, C)
    out = ym @ p["w_proj"] + p["b_proj"]  # (B, T, C)
    return out, dict(x=x, q=q, k=k, v=v, s=s, a=a, y=y, ym=ym, H=H)


def attention_backward(dout, c, p):
    """dout (B, T, C) -> dx (B, T, C), parameter gradients, and the inner gradients (for the figure)."""
    x, q, k, v, a, ym, H = c["x"], c["q"], c["k"], c["v"], c["a"], c["ym"], c["H"]
    C_ = x.shape[-1]
    E = C_ // H
    # output projection out = ym W_proj + b_proj
    dw_proj = ym.reshape(-1, C_).T @ dout.reshape(-1, C_)  # (C, C)
    db_proj = dout.sum(axis=(0, 1))  # (C,)
    dy = split_heads(dout @ p["w_proj"].T, H)  # (B, H, T, E)
    # y = a v
    da = dy @ v.transpose(0, 1, 3, 2)  # (B, H, T, T)
    dv = a.transpose(0, 1, 3, 2) @ dy  # (B, H, T, E)
    # a = softmax(s), row by row: da_j -> ds_j = a_j (da_j - sum_i a_i da_i)
    ds = a * (da - (a * da).sum(axis=-1, keepdims=True))  # (B, H, T, T); 0 where a = 0 (the masked future)
    # s = q kᵀ / sqrt(E)
    dq = ds @ k / math.sqrt(E)  # (B, H, T, E)
    dk = ds.transpose(0, 1, 3, 2) @ q / math.sqrt(E)  # (B, H, T, E)
    # qkv = x W_qkv + b_qkv
    dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # (B, T, 3C)
    dw_qkv = x.reshape(-1, C_).T @ dqkv.reshape(-1, 3 * C_)  # (C, 3C)
    db_qkv = dqkv.sum(axis=(0, 1))  # (3C,)
    dx = dqkv @ p["w_qkv"].T  # (B, T, C)
    grads = {"w_qkv": dw_qkv, "b_qkv": db_qkv, "w_proj": dw_proj, "b_proj": db_proj}
    return dx, grads, dict(dy=dy, da=da, ds=ds, dq=dq, dk=dk, dv=dv)


# ----------------------------------------------------------------------------- helpers
def on_device(p):
    """A parameter dict moved to the backend (what library code takes)."""
    return {k: backend.asarray(v) for k, v in p.items()}


def maxdiff(a, b):
    return float(np.abs(backend.to_numpy(a) - backend.to_numpy(b)).max())


def finite_difference_check(x, p, H, causal, dout, dx, grads, rng):
    """Centred differences of L = sum(out * dout) for FD_PROBES random entries of x and of each
    parameter -> {name: relative error ||numerical - analytic|| / (||numerical|| + ||analytic||)
    over the probed entries} (a norm ratio: an entry whose gradient is 0 does not divide by 0)."""
    arrays = {"x": x, **p}
    analytic = {"x": dx, **grads}
    errs = {}
    for name, arr in arrays.items():
        num, ana = [], []
        for i in rng.choice(arr.size, size=min(FD_PROBES, arr.size), replace=False):
            old = arr.flat[i]
            arr.flat[i] = old + FD_H
            lp = (attention_forward(x, p, H, causal)[0] * dout).sum()
            arr.flat[i] = old - FD_H
            lm = (attention_forward(x, p, H, causal)[0] * dout).sum()
            arr.flat[i] = old
            num.append((lp - lm) / (2 * FD_H))
            ana.append(analytic[name].flat[i])
        num, ana = np.array(num), np.array(ana)
        errs[name] = float(np.linalg.norm(num - ana) / max(np.linalg.norm(num) + np.linalg.norm(ana), 1e-300))
    return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one shape for the library's full gradient check")
    ap.add_argument("--out", default="out/lesson06", help="output folder")
    ap.add_argument("--heads", type=int, default=N_HEAD, help=f"attention heads (must divide the width {C})")
    ap.add_argument("--no-mask", action="store_true", help="drop the causal mask in the lesson's attention")
    ap.add_argument("--w-scale", type=float, default=W_SCALE, help="spread of the toy's W_qkv (peakedness)")
    args = ap.parse_args()
    if args.heads < 1 or C % args.heads:
        ap.error(f"--heads must divide the width {C}: 1, 2, 4 or 8")
    H, causal = args.heads, not args.no_mask
    E = C // H
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    rng = np.random.default_rng(SEED)
    print(__doc__[__doc__.index("On a toy"):__doc__.index("Try this")].rstrip() + "\n")
    print(f"backend: {backend.device()} (MINIVQ_DEVICE); the lesson's own arrays are NumPy float64, the "
          "library's go through minivq.backend")
    print(f"toy: T={T} positions, width C={C}, H={H} heads of E={E}; "
          f"causal mask {'ON' if causal else 'OFF (--no-mask)'}")

    # ---- 1. forward
    x = rng.standard_normal((1, T, C))  # (B=1, T, C)
    p = params(rng, C, args.w_scale)
    y, c = attention_forward(x, p, H, causal)
    print("\n1. forward. x (1, T, C) -> qkv (1, T, 3C) -> q, k, v each (B, H, T, E) =", c["q"].shape)
    print(f"   scores s = q kᵀ / sqrt({E}) of head 0, masked (-inf = a future key):")
    print(c["s"][0, 0])
    print("   attention a = softmax(s) of head 0 (row t: how query t spreads its weight over keys j):")
    print(c["a"][0, 0])
    print("   row sums:", c["a"][0, 0].sum(-1), f"; weight above the diagonal: {np.triu(c['a'][0], 1).sum():.3g}")

    y_lib, cache = A.attention_forward(backend.asarray(x), on_device(p), H)  # the library always masks
    note = "" if causal else "  (large: the library always masks, the lesson's run here does not)"
    print(f"   vs minivq.attention.attention_forward: max |out diff| = {maxdiff(y, y_lib):.1e}, "
          f"max |a diff| = {maxdiff(c['a'], A.attention_probs(cache)):.1e}{note}")

    # ---- 2. backward
    dout = rng.standard_normal(y.shape)  # (1, T, C) stands for dL/d out from the layers above
    dx, grads, g = attention_backward(dout, c, p)
    print("\n2. backward, given dout = dL/d out (random here)")
    print("   da = dy vᵀ (how the loss changes with each attention weight), head 0:")
    print(g["da"][0, 0])
    print("   ds = a ⊙ (da − Σ_j a_j da_j), head 0 (zero above the diagonal: no gradient reaches the future):")
    print(g["ds"][0, 0])
    print("   each row of ds sums to 0 (softmax is unchanged by adding a constant to a row):",
          g["ds"][0, 0].sum(-1))
    rowsum = (c["a"] * g["da"]).sum(-1)  # (B, H, T) needs the (T, T) product
    print(f"   the row sum Σ_j a_j da_j equals dy·y (no T x T temporary; what the library uses): "
          f"max |diff| = {np.abs(rowsum - (g['dy'] * c['y']).sum(-1)).max():.1e}")
    print("   dq = ds k / sqrt(E), head 0 (T, E):")
    print(g["dq"][0, 0])
    print("   dk = dsᵀ q / sqrt(E), head 0 (T, E):")
    print(g["dk"][0, 0])
    print("   dv = aᵀ dy, head 0 (T, E):")
    print(g["dv"][0, 0])
    dx_lib, grads_lib = A.attention_backward(backend.asarray(dout), cache)
    errs = {"dx": maxdiff(dx, dx_lib), **{f"d{k}": maxdiff(grads[k], grads_lib[k]) for k in grads}}
    print("   vs minivq.attention.attention_backward, max |diff|: "
          + ", ".join(f"{k} {e:.1e}" for k, e in errs.items()) + note)

    # ---- 3. finite differences
    print(f"\n3. finite differences (float64, centred, h={FD_H:g})")
    fd = finite_difference_check(x, p, H, causal, dout, dx, grads, rng)
    print(f"   the lesson's backward, {FD_PROBES} random entries per array, relative error: "
          + ", ".join(f"d{k} {e:.1e}" for k, e in fd.items())
          + f" ({'OK' if max(fd.values()) < 1e-6 else 'FAIL'})")
    for (B_, T_, C_, H_) in (QUICK_CHECK_SHAPES if args.quick else CHECK_SHAPES):
        pr = on_device(params(rng, C_))
        errs = check_layer(lambda x_, w1, b1, w2, b2: A.attention_forward(
            x_, {"w_qkv": w1, "b_qkv": b1, "w_proj": w2, "b_proj": b2}, H_),
            lambda d, cc: (lambda dx_, gr: (dx_, gr["w_qkv"], gr["b_qkv"], gr["w_proj"], gr["b_proj"]))(
                *A.attention_backward(d, cc)),
            {"x": backend.asarray(rng.standard_normal((B_, T_, C_))), **pr}, h=FD_H)
        worst = max(errs.values())
        print(f"   the library, every entry, B={B_} T={T_} C={C_} H={H_}: "
              + ", ".join(f"d{k} {e:.1e}" for k, e in errs.items())
              + f" -> worst {worst:.1e} ({'OK' if worst < 1e-6 else 'FAIL'})")

    # ---- 4. causality and the KV cache
    print("\n4. causality")
    x2 = x.copy()
    x2[:, -1] += 1.0  # change only the LAST position's input
    leak = np.abs(attention_forward(x2, p, H, causal)[0][:, :-1] - y[:, :-1]).max()
    print(f"   change the last input by 1: the earlier outputs move by at most {leak:.1e} "
          + ("(none: position t never sees t+1..)" if leak == 0 else
             "(FUTURE LEAKAGE: earlier positions read later ones)"))
    kv = A.new_kv_cache(1, H, T, C, dtype="float64")
    xd, pd = backend.asarray(x), on_device(p)
    steps = [backend.to_numpy(A.attention_step(xd[:, t:t + 1], pd, H, kv)) for t in range(T)]
    cached = np.concatenate(steps, axis=1)  # (1, T, C)
    gap = np.abs(cached - y).max()
    print(f"   KV cache (minivq.attention.attention_step, one position at a time, keys/values of the past kept): "
          f"max |cached - full forward| = {gap:.1e}")
    print("   " + ("they agree: decoding one token at a time costs O(T) per token instead of O(T^2), same answer"
                    if gap < 1e-9 else "they DISAGREE: without the mask the full forward let each position read "
                                       "the future, which a left-to-right decoder cannot do"))

    # ---- figure
    shown = min(H, MAX_HEADS_SHOWN)
    fig, ax = plt.subplots(shown, 6, figsize=(20, 3.0 * shown + 0.6), squeeze=False, constrained_layout=True)
    cmap_scores = plt.get_cmap("RdBu_r").copy()
    cmap_scores.set_bad("0.3")  # masked (-inf) scores drawn dark grey
    for h in range(shown):
        s_h = np.where(np.isfinite(c["s"][0, h]), c["s"][0, h], np.nan)
        panels = [(s_h, "scores q kᵀ/√E (grey = masked)", cmap_scores, "key position j"),
                  (c["a"][0, h], "attention a = softmax(s)", "viridis", "key position j"),
                  (g["ds"][0, h], "ds = a ⊙ (da − Σ a⊙da)", "RdBu_r", "key position j"),
                  (g["dq"][0, h], "dq = ds k / √E", "RdBu_r", "head dim e"),
                  (g["dk"][0, h], "dk = dsᵀ q / √E", "RdBu_r", "head dim e"),
                  (g["dv"][0, h], "dv = aᵀ dy", "RdBu_r", "head dim e")]
        for j, (img, title, cmap, xlabel) in enumerate(panels):
            if cmap == "viridis":
                lim = dict(vmin=0, vmax=1)
            else:  # diverging: centred on 0
                m = np.nanmax(np.abs(img))
                lim = dict(vmin=-m, vmax=m)
            im = ax[h, j].imshow(img, cmap=cmap, aspect="auto", interpolation="nearest", **lim)
            ax[h, j].set_title(f"head {h}: {title}", fontsize=9)
            ax[h, j].set_xticks(range(img.shape[1]))
            ax[h, j].set_xlabel(xlabel)
            ax[h, j].set_ylabel("query position t" if j < 3 else ("key position j" if j == 4 else "position t"))
            fig.colorbar(im, ax=ax[h, j])
    fig.suptitle(f"causal multi-head attention on a toy sequence (T={T}, C={C}, H={H}"
                 + ("" if causal else ", NO MASK") + f"{'' if shown == H else f'; first {shown} heads'})")
    fig.savefig(out / "attention.png", dpi=100)

    print("\nWhat to notice")
    print("  - the mask is applied to the scores (-inf) before the softmax, so the future gets weight exactly 0 and,")
    print("    in the backward, ds is exactly 0 there too: no gradient flows from a query to a later key.")
    print("  - the softmax backward only needs a and da: ds = a ⊙ (da − Σ a⊙da); the 1/√E scale reappears in dq "
          "and dk.")
    peaked = c["a"].max(-1) > 0.99  # (B, H, T) rows that put (almost) all weight on one key
    print(f"  - {int(peaked.sum())} of {peaked.size} attention rows are saturated (max weight > 0.99); their ds is at "
          "most "
          f"{np.abs(g['ds']).max(-1)[peaked].max() if peaked.any() else 0:.1e}, against {np.abs(g['ds']).max():.2f} "
          "overall: a saturated softmax passes almost no gradient (one reason the scores are scaled by 1/√E: it "
          "keeps their spread independent of the head width at initialisation).")
    print(f"  - the key bias gets no gradient at all (max |db_k| = {np.abs(grads['b_qkv'][C:2 * C]).max():.1e}): adding "
          "b to every key adds q·b to a whole row of scores, and the softmax ignores a constant per row.")
    print("  - all heads are one batched matmul on (B, H, T, E) arrays: no loop over heads or positions.")
    print("\n" + __doc__[__doc__.index("Try this"):].rstrip())
    print(f"\nwrote {out / 'attention.png'}")


if __name__ == "__main__":
    main()
