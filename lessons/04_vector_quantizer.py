"""Lesson 04: the vector quantiser on a 2-D toy.

Data: a mixture of 8 Gaussians on a ring. A codebook of K 2-D codes learns to cover it.
1. The straight-through gradient: a tiny linear encoder -> quantiser -> linear decoder; the
   decoder's gradient at z_q is copied to z_e unchanged (plus the commitment pull), while
   the codebook loss pulls the chosen code towards z_e.
2. A collapsed codebook: codes initialised in a small blob away from the data. Only the
   nearest one or two ever win the argmin, so only they get gradient; the rest never move.
3. The fixes, each run on the same data and started from the same bad initialisation:
   k-means initialisation, EMA updates, dead-code restart, and all three together.
Figure: final code positions over the data for each variant, and perplexity over time.

Run: python lessons/04_vector_quantizer.py [--quick] [--out DIR]
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import optim  # noqa: E402
from minivq import quantizer as Q  # noqa: E402
from minivq.backend import asarray, to_numpy, xp  # noqa: E402  (arrays on the selected device, CPU or GPU)

N_CLUSTERS = 8        # Gaussians on the ring
RING_RADIUS = 4.0     # their distance from the origin
CLUSTER_STD = 0.35    # spread of each
K = 32                # codebook size
BATCH = 256           # points per step
STEPS = 400           # training steps per variant (--quick: 120)
LR = 0.05             # Adam learning rate for the loss-trained codebook
EMA_DECAY = 0.95      # EMA decay (the toy moves fast, so shorter memory than the 0.99 default)
RESTART_AFTER = 10    # steps unused before a code is restarted
BAD_INIT_CENTRE = (-7.0, -7.0)  # where the collapsed codebook starts
SEED = 0


def sample(g, n):
    """n points of the ring mixture -> (n, 2)."""
    k = g.integers(0, N_CLUSTERS, n)
    ang = 2 * np.pi * k / N_CLUSTERS
    centres = RING_RADIUS * np.stack([np.cos(ang), np.sin(ang)], 1)
    return centres + CLUSTER_STD * g.standard_normal((n, 2))


def straight_through_demo(g):
    """One step of encoder -> quantiser -> decoder with explicit gradients."""
    x = sample(g, 5)  # (5, 2)
    W_enc, W_dec = np.eye(2) * 0.9, np.eye(2) * 1.1
    codebook = sample(g, K)  # (K, 2)
    z_e = x @ W_enc  # (5, 2)
    z_q, idx, losses, cache = Q.quantize_forward(asarray(z_e), asarray(codebook), beta=0.25)
    z_q, idx = to_numpy(z_q), to_numpy(idx)  # back to the host for the lesson's own NumPy
    x_hat = z_q @ W_dec  # (5, 2)
    dx_hat = 2 * (x_hat - x) / x.size  # d mse / d x_hat
    dz_q = dx_hat @ W_dec.T  # (5, 2)
    dz_e, dcodebook = (to_numpy(a) for a in Q.quantize_backward(asarray(dz_q), cache))
    commit = dz_e - dz_q  # the commitment term's share of dz_e
    print("1) straight-through: for each point, dL/dz_e = dL/dz_q + commitment pull 2*beta*(z_e - e)/(N*D)")
    for n in range(3):
        print(f"   point {n}: code {idx[n]:2d}  dL/dz_q = {dz_q[n].round(4)}  dL/dz_e = {dz_e[n].round(4)}  "
              f"difference = {commit[n].round(4)}  expected {(2 * 0.25 * (z_e[n] - codebook[idx[n]]) / z_e.size).round(4)}")
    used = np.unique(idx)
    print(f"   the codebook gradient is non-zero only in the {len(used)} rows that were chosen: "
          f"{np.flatnonzero(np.abs(dcodebook).sum(1)).tolist()} == {used.tolist()}")
    return z_e, z_q, dz_q


def run_variant(name, steps, kmeans_init, ema, restart, g_seed):
    """Train a codebook directly on the data (z_e = x) and return its history."""
    g = np.random.default_rng(g_seed)
    codebook = asarray(np.asarray(BAD_INIT_CENTRE) + 0.1 * g.standard_normal((K, 2)))  # (K, 2) collapsed start
    if kmeans_init:
        codebook = Q.kmeans(asarray(sample(g, BATCH)), K, iters=10, seed=SEED)
    state, adam_state = Q.init_state(codebook), {}
    ppl, snapshots = [], {}
    for step in range(steps):
        z = asarray(sample(g, BATCH))  # (BATCH, 2)
        _, idx, _, cache = Q.quantize_forward(z, codebook, codebook_loss=not ema)
        if ema:
            Q.ema_update(codebook, state, z, idx, decay=EMA_DECAY)
        else:
            _, dcb = Q.quantize_backward(xp.zeros_like(z), cache)
            optim.adam(codebook, dcb, adam_state, LR)
        if restart:
            dead = Q.restart_dead_codes(codebook, state, z, idx, after=RESTART_AFTER, seed=[SEED, step])
            if len(dead) and adam_state:
                adam_state["m"][dead] = 0
                adam_state["v"][dead] = 0
        ppl.append(Q.usage_stats(idx, K)["perplexity"])
        if step in (0, steps // 4, steps - 1):
            snapshots[step] = to_numpy(codebook).copy()  # a host copy (training updates codebook in place)
    z = asarray(sample(g, 4096))
    idx, d2 = Q.nearest_code(z, codebook)
    st = Q.usage_stats(idx, K)
    print(f"   {name:34s} perplexity {st['perplexity']:5.1f} of {K}, active {st['active']:4.0%}, "
          f"mean squared quantisation error {float(d2.mean()):.3f}")
    return {"name": name, "codebook": to_numpy(codebook), "ppl": ppl, "snapshots": snapshots, "stats": st}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"fewer steps (120 instead of {STEPS})")
    ap.add_argument("--out", default="out/lesson04", help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = 120 if args.quick else STEPS
    g = np.random.default_rng(SEED)
    z_e, z_q, dz_q = straight_through_demo(g)

    print(f"2)+3) codebooks of K={K} trained for {steps} steps from a collapsed start near {BAD_INIT_CENTRE}:")
    variants = [("codebook loss (collapses)", False, False, False),
                ("codebook loss + k-means init", True, False, False),
                ("EMA", False, True, False),
                ("codebook loss + dead-code restart", False, False, True),
                ("EMA + k-means + restart", True, True, True)]
    runs = [run_variant(n, steps, km, ema, rs, SEED + 1) for n, km, ema, rs in variants]

    data = sample(np.random.default_rng(SEED + 2), 2000)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    ax = axes[0, 0]
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.8")
    ax.scatter(z_e[:, 0], z_e[:, 1], c="C0", label="z_e")
    ax.scatter(z_q[:, 0], z_q[:, 1], c="C3", marker="x", s=60, label="z_q = nearest code")
    for a, b, d in zip(z_e, z_q, dz_q):
        ax.annotate("", xy=a - 20 * d, xytext=a, arrowprops=dict(color="C0", width=1))
        ax.annotate("", xy=b - 20 * d, xytext=b, arrowprops=dict(color="C3", width=1))
    ax.set_title("straight-through: the same (scaled) -gradient\nat z_q is applied at z_e")
    ax.legend(loc="lower left", fontsize=8)
    for ax, r in zip(axes.flat[1:], runs):
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.8")
        start = r["snapshots"][0]
        ax.scatter(start[:, 0], start[:, 1], s=12, c="C7", marker=".", label="step 0")
        cb = r["codebook"]
        hist = r["stats"]["hist"]
        ax.scatter(cb[:, 0], cb[:, 1], s=30, c=np.where(hist > 0, "C2", "C3"), edgecolors="k",
                   label="final codes (red: unused)")
        ax.set_title(f"{r['name']}\nperplexity {r['stats']['perplexity']:.1f}, active {r['stats']['active']:.0%}")
        ax.set_xlim(-9, 6.5), ax.set_ylim(-9, 6.5)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "codebooks.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        ax.plot(r["ppl"], label=r["name"])
    ax.set_xlabel("step"), ax.set_ylabel("batch perplexity (effective codes)")
    ax.set_title(f"codebook usage over time (K={K}, {N_CLUSTERS} clusters)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "usage.png", dpi=80)
    plt.close(fig)
    print(f"saved {out / 'codebooks.png'} and {out / 'usage.png'}")


if __name__ == "__main__":
    main()
