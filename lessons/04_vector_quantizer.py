"""Lesson 04 - the vector quantiser, on a 2-D toy you can see.

The VQ-VAE's bottleneck replaces each encoder output z_e (D,) by the nearest of K codes:

    k = argmin_j ||z_e - e_j||^2            z_q = e_k
    forward  z_q = z_e + sg(e_k - z_e)      (sg = stop-gradient: the value is e_k ...)
    backward dL/dz_e = dL/dz_q + beta * 2 (z_e - e_k) / (N D)    (... the gradient skips the argmin)
    L_codebook = mean (sg(z_e) - e_k)^2     pulls the chosen code towards z_e
    L_commit   = beta * mean (z_e - sg(e_k))^2   pulls z_e towards its code (the second term above)
    EMA instead of L_codebook:  n_k <- d n_k + (1-d) #{z_e -> k},  s_k <- d s_k + (1-d) sum z_e,  e_k = s_k / n_k

Data: a mixture of 8 Gaussians on a ring in 2-D, so codes and encoder outputs are points.
  1. The quantiser written out in NumPy (lookup, straight-through forward/backward with the
     commitment term, codebook loss, one EMA step) and checked against minivq.quantizer.
  2. Where the gradients point: the decoder's wish at z_q is copied to z_e, the commitment term
     adds a pull towards the code, and the codebook gradient moves the code towards z_e.
  3. Collapse and its cures, all from the same bad start (every code in a blob far from the data):
     which cure fixes what, each with its measured perplexity.
  4. A tiny linear encoder -> quantiser (codebook loss) -> linear decoder trained end to end, the
     encoder learning 10x faster than the codes, to see what beta and restarts do.
Figures: codebooks.png (gradients, final codebooks) and usage.png (perplexity and drift over time).

    python lessons/04_vector_quantizer.py [--quick] [--out out/lesson04] [--beta 0.25] [--no-restart] [--ema-decay 0.95]
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import optim  # noqa: E402
from minivq import quantizer as Q  # noqa: E402
from minivq.backend import asarray, to_numpy, xp  # noqa: E402  (arrays on the selected device, CPU or GPU)

SEED = 0
N_CLUSTERS = 8        # Gaussians on the ring
RING_RADIUS = 4.0     # their distance from the origin
CLUSTER_STD = 0.35    # spread of each
K = 32                # codebook size (parts 1-3)
BATCH = 256           # points per step
STEPS, QUICK_STEPS = 400, 120   # training steps per codebook variant (part 3)
LR = 0.05             # Adam learning rate of a loss-trained codebook (part 3)
EMA_DECAY = 0.95      # EMA decay (the toy moves fast, so a shorter memory than the VQ-VAE's 0.99)
EMA_EPS = 1e-5        # the Laplace smoothing of ema_update (its default)
RESTART_AFTER = 10    # steps unused before a code is restarted
BAD_INIT_CENTRE = (-7.0, -7.0)  # where the collapsed codebook starts
BETA = 0.25           # commitment weight
E2E_K, E2E_STEPS = 16, 300      # part 4: codebook size and steps (same with --quick: it takes ~1 s)
E2E_LR_ENC, E2E_LR_CB = 0.05, 0.005  # the encoder learns 10x faster than the codes it must stay near


def sample(g, n):
    """n points of the ring mixture -> (n, 2) float64 NumPy."""
    k = g.integers(0, N_CLUSTERS, n)
    ang = 2 * np.pi * k / N_CLUSTERS
    centres = RING_RADIUS * np.stack([np.cos(ang), np.sin(ang)], 1)
    return centres + CLUSTER_STD * g.standard_normal((n, 2))


def maxerr(mine, lib):
    """Largest absolute difference between a NumPy array and a library (device) array."""
    return float(np.abs(np.asarray(mine, np.float64) - to_numpy(lib)).max())


# ----------------------------------------------------------------------------- 1. written out
def quantiser_by_hand(g, beta):
    """The quantiser in straight-line NumPy on a toy encoder -> quantiser -> decoder, checked
    against the library. Returns the largest dL/dz_e difference."""
    print("1) the quantiser written out, checked against minivq.quantizer (max |difference|)")
    x = sample(g, 64)                          # (N, 2) inputs
    W_enc, W_dec = np.eye(2) * 0.9, np.eye(2) * 1.1   # a fixed linear encoder and decoder
    codebook = sample(g, K)                    # (K, D) codes drawn from the data
    z_e = x @ W_enc                            # (N, D) encoder outputs
    N, D = z_e.shape

    # nearest-code lookup: all N x K squared distances, then the smallest per row
    d2 = ((z_e[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)   # (N, K)
    idx = d2.argmin(1)                                              # (N,)
    e = codebook[idx]                                               # (N, D) the chosen codes
    idx_lib, d2_lib = Q.nearest_code(asarray(z_e), asarray(codebook))
    print(f"   nearest code: indices differ in {int((idx != to_numpy(idx_lib)).sum())} of {N}; "
          f"squared distance error {maxerr(d2.min(1), d2_lib):.1e}")

    # forward: the value of z_e + sg(e - z_e) is e; the losses
    z_q = z_e + (e - z_e)                      # (N, D) == e
    L_codebook = ((z_e - e) ** 2).mean()       # gradient only to e
    L_commit = beta * ((z_e - e) ** 2).mean()  # gradient only to z_e
    zq_lib, _, losses, cache = Q.quantize_forward(asarray(z_e), asarray(codebook), beta=beta)
    print(f"   forward: z_q error {maxerr(z_q, zq_lib):.1e}, L_codebook {L_codebook:.5f} "
          f"(error {abs(L_codebook - losses['codebook']):.1e}), L_commit {L_commit:.5f} "
          f"(error {abs(L_commit - losses['commit']):.1e})")

    # backward: the decoder's gradient at z_q ...
    x_hat = z_q @ W_dec                        # (N, 2)
    dx_hat = 2 * (x_hat - x) / x.size          # d mean((x_hat - x)^2) / d x_hat
    dz_q = dx_hat @ W_dec.T                    # (N, D)
    # ... goes straight through to z_e, plus the commitment pull towards sg(e)
    commit = beta * 2 * (z_e - e) / (N * D)    # (N, D)
    dz_e = dz_q + commit                       # (N, D)
    # the codebook loss moves each chosen code towards the mean of its z_e (a sum over its rows)
    dcodebook = np.zeros_like(codebook)        # (K, D)
    np.add.at(dcodebook, idx, 2 * (e - z_e) / (N * D))
    dze_lib, dcb_lib = Q.quantize_backward(asarray(dz_q), cache)
    print(f"   backward: dL/dz_e error {maxerr(dz_e, dze_lib):.1e}, dL/dcodebook error {maxerr(dcodebook, dcb_lib):.1e}; "
          f"rows of dL/dcodebook that are non-zero: {int((np.abs(dcodebook).sum(1) > 0).sum())} "
          f"= codes chosen: {len(np.unique(idx))}")

    # one EMA step (codes follow the running mean of their vectors; no codebook loss)
    count, total = np.ones(K), codebook.copy()  # the state init_state starts from
    n_k = np.bincount(idx, minlength=K)         # (K,) vectors per code this step
    s_k = np.zeros_like(codebook)
    np.add.at(s_k, idx, z_e)                    # (K, D) their sum
    count = EMA_DECAY * count + (1 - EMA_DECAY) * n_k
    total = EMA_DECAY * total + (1 - EMA_DECAY) * s_k
    n = count.sum()
    smoothed = (count + EMA_EPS) / (n + K * EMA_EPS) * n   # Laplace: no division by ~0, same total
    ema_codebook = total / smoothed[:, None]
    cb_lib = asarray(codebook.copy())  # ema_update works in place (and asarray may not copy)
    Q.ema_update(cb_lib, Q.init_state(cb_lib), asarray(z_e), asarray(idx), decay=EMA_DECAY, eps=EMA_EPS)
    print(f"   one EMA step: codebook error {maxerr(ema_codebook, cb_lib):.1e}")
    return maxerr(dz_e, dze_lib)


# ----------------------------------------------------------------------------- 2. where gradients point
def straight_through_example(beta):
    """Three hand-placed encoder outputs, two codes, the toy decoder x_hat = 1.1 z_q and targets
    x = z_e / 0.9 (as in part 1); gradients from the library -> what the first panel draws."""
    z_e = np.array([[0.7, 0.5], [-0.4, -0.6], [1.3, 0.9]])  # (3, 2)
    codebook = np.array([[0.0, 0.0], [1.8, 0.2]])             # (2, 2)
    x = z_e / 0.9                                             # what the decoder should output
    z_q, idx, _, cache = Q.quantize_forward(asarray(z_e), asarray(codebook), beta=beta)
    z_q, idx = to_numpy(z_q), to_numpy(idx)
    dz_q = 2 * (1.1 * z_q - x) / x.size * 1.1                 # d mean((1.1 z_q - x)^2) / d z_q
    dz_e, dcodebook = (to_numpy(a) for a in Q.quantize_backward(asarray(dz_q), cache))
    return {"z_e": z_e, "e": z_q, "idx": idx, "codebook": codebook, "dz_q": dz_q,
            "commit": dz_e - dz_q, "dz_e": dz_e, "dcodebook": dcodebook}


# ----------------------------------------------------------------------------- 3. collapse and cures
def run_variant(name, steps, kmeans_init, ema, restart, decay, g_seed):
    """Train a codebook directly on the data (z_e = x, no encoder) from the bad start."""
    g = np.random.default_rng(g_seed)
    start = np.asarray(BAD_INIT_CENTRE) + 0.1 * g.standard_normal((K, 2))  # (K, 2) collapsed start
    codebook = asarray(start.copy())  # a copy: on the CPU asarray may return start itself
    if kmeans_init:
        codebook = Q.kmeans(asarray(sample(g, BATCH)), K, iters=10, seed=SEED)
    state, adam_state = Q.init_state(codebook), {}
    ever_used = np.zeros(K, bool)
    ppl, snapshots = [], {}
    for step in range(steps):
        z = asarray(sample(g, BATCH))  # (BATCH, 2)
        _, idx, _, cache = Q.quantize_forward(z, codebook, codebook_loss=not ema)
        if ema:
            Q.ema_update(codebook, state, z, idx, decay=decay, eps=EMA_EPS)
        else:
            _, dcb = Q.quantize_backward(xp.zeros_like(z), cache)
            optim.adam(codebook, dcb, adam_state, LR)
        if restart:
            dead = Q.restart_dead_codes(codebook, state, z, idx, after=RESTART_AFTER, seed=[SEED, step])
            if len(dead) and adam_state:
                adam_state["m"][dead] = 0
                adam_state["v"][dead] = 0
        st = Q.usage_stats(idx, K)
        if step < QUICK_STEPS:
            ever_used |= st["hist"] > 0  # codes that won a vector in the first QUICK_STEPS steps
        ppl.append(st["perplexity"])
        if step % 100 == 0 or step == steps - 1:
            snapshots[step] = to_numpy(codebook).copy()  # a host copy (training updates codebook in place)
    z = asarray(sample(g, 4096))
    idx, d2 = Q.nearest_code(z, codebook)
    st = Q.usage_stats(idx, K)
    print(f"   {name:30s} perplexity {st['perplexity']:5.1f} of {K}, active {st['active']:4.0%}, "
          f"quantisation MSE {float(d2.mean()):6.3f}")
    return {"name": name, "start": start, "codebook": to_numpy(codebook), "ppl": ppl, "snapshots": snapshots,
            "stats": st, "dead_early": ~ever_used}


def ema_dead_codes(run, decay):
    """Why EMA alone does not cure collapse: follow the codes that never won a vector."""
    never = run["dead_early"]
    t_half = math.log(EMA_EPS) / math.log(decay)
    print(f"   EMA alone: {int(never.sum())} codes won no vector in the first {QUICK_STEPS} steps. With n_k = 0 their sum and count "
          f"both shrink by {decay} a step,\n   so e_k = s_k / n_k stays where it started. Only when the "
          f"count reaches the smoothing eps={EMA_EPS:g}\n   (after ln(eps)/ln(decay) = {t_half:.0f} steps) "
          f"does e_k = s_k / (n_k + eps) slide towards the origin.")
    print("   distance of those codes from their start: " + ", ".join(
        f"step {s}: {np.linalg.norm(c[never] - run['start'][never], axis=1).mean():.2f}"
        for s, c in run["snapshots"].items()))
    n_win = int((run["stats"]["hist"][never] > 0).sum())
    print(f"   at the end {n_win} of them win vectors" + (
        ": those that slid into a cluster on their way to the origin (geometry, not a cure)." if n_win else "."))


# ----------------------------------------------------------------------------- 4. end to end
def train_end_to_end(beta, restart, steps):
    """x -> z_e = x W_enc + b_enc -> quantise (codebook loss) -> x_hat = z_q W_dec + b_dec, trained with Adam."""
    g = np.random.default_rng(SEED + 3)
    p = {"W_enc": asarray(np.eye(2) * 0.5 + 0.1 * g.standard_normal((2, 2))), "b_enc": asarray(np.zeros(2)),
         "W_dec": asarray(np.eye(2) * 2.0), "b_dec": asarray(np.zeros(2))}
    codebook = Q.kmeans(asarray(sample(g, BATCH)) @ p["W_enc"], E2E_K, seed=SEED)  # (E2E_K, 2)
    state, opt, cb_opt = Q.init_state(codebook), {}, {}
    hist = {"step": [], "recon": [], "dist": [], "norm": [], "ppl": []}
    for step in range(steps):
        x = asarray(sample(g, BATCH))                                          # (B, 2)
        z_e = x @ p["W_enc"] + p["b_enc"]                                       # (B, 2)
        z_q, idx, _, cache = Q.quantize_forward(z_e, codebook, beta=beta)
        x_hat = z_q @ p["W_dec"] + p["b_dec"]                                   # (B, 2)
        dx_hat = 2 * (x_hat - x) / x.size
        grads = {"W_dec": z_q.T @ dx_hat, "b_dec": dx_hat.sum(0)}
        dz_e, dcb = Q.quantize_backward(dx_hat @ p["W_dec"].T, cache)
        grads.update(W_enc=x.T @ dz_e, b_enc=dz_e.sum(0))
        optim.adam_step(p, grads, opt, E2E_LR_ENC)
        optim.adam(codebook, dcb, cb_opt, E2E_LR_CB)
        if restart:
            dead = Q.restart_dead_codes(codebook, state, z_e, idx, after=RESTART_AFTER, seed=[SEED, step])
            if len(dead):
                cb_opt["m"][dead] = 0
                cb_opt["v"][dead] = 0
        hist["step"].append(step)
        hist["recon"].append(float(((x_hat - x) ** 2).mean()))
        hist["dist"].append(float(((z_e - z_q) ** 2).sum(1).mean()))
        hist["norm"].append(float(xp.sqrt((z_e * z_e).sum(1)).mean()))
        hist["ppl"].append(Q.usage_stats(idx, E2E_K)["perplexity"])
    z_e = to_numpy(asarray(sample(g, 2000)) @ p["W_enc"] + p["b_enc"])
    return hist, z_e, to_numpy(codebook)


# ----------------------------------------------------------------------------- figures
def arrow(ax, at, vec, colour, label=None, width=1.2):
    ax.annotate("", xy=at + vec, xytext=at, arrowprops=dict(color=colour, width=width, headwidth=3 + 3 * width, alpha=0.8))
    if label:
        ax.plot([], [], color=colour, label=label)


def save_figures(out, st, runs, e2e, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = sample(np.random.default_rng(SEED + 2), 2000)
    fig, axes = plt.subplots(2, 4, figsize=(18, 9), constrained_layout=True)
    # straight-through: arrows are -gradients (the way a step moves things), one common scale
    ax = axes[0, 0]
    ze, e, cb = st["z_e"], st["e"], st["codebook"]
    scale = 0.6 / np.abs(np.concatenate([st["dz_e"], st["dz_q"], st["dcodebook"]])).max()
    ax.scatter(cb[:, 0], cb[:, 1], c="C3", marker="x", s=80, label="codes e")
    ax.scatter(ze[:, 0], ze[:, 1], c="C0", s=30, label="z_e (dotted: to its code)")
    for n in range(len(ze)):
        first = n == 0
        ax.plot(*np.stack([ze[n], e[n]]).T, ":", c="0.5", lw=0.8)
        arrow(ax, ze[n], -scale * st["dz_q"][n], "C0", "-dL/dz_q (decoder, copied)" if first else None, 3)
        arrow(ax, ze[n], -scale * st["commit"][n], "C1", "-commitment (towards e)" if first else None, 1.5)
        arrow(ax, ze[n], -scale * st["dz_e"][n], "k", "-dL/dz_e = sum (reaches z_e)" if first else None, 0.6)
    for k in np.unique(st["idx"]):
        arrow(ax, cb[k], -scale * st["dcodebook"][k], "C3", "-dL/de (codebook loss)" if k == st["idx"][0] else None)
    ax.set_xlim(-1.2, 2.6), ax.set_ylim(-1.2, 2.0)
    ax.set_aspect("equal")
    ax.set_title(f"straight-through, beta={args.beta}\n(-gradients, all x{scale:.1f})")
    ax.set_xlabel("dim 0"), ax.set_ylabel("dim 1")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    for ax, r in zip(axes.flat[1:7], runs):
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.85")
        ax.scatter(r["start"][:, 0], r["start"][:, 1], s=12, c="C7", marker=".", label="step 0")
        cb, used = r["codebook"], r["stats"]["hist"] > 0
        ax.scatter(cb[used, 0], cb[used, 1], s=30, c="C2", edgecolors="k", label="final code, used")
        ax.scatter(cb[~used, 0], cb[~used, 1], s=30, c="C3", edgecolors="k", label="final code, unused")
        ax.set_title(f"{r['name']}\nperplexity {r['stats']['perplexity']:.1f}, active {r['stats']['active']:.0%}")
        ax.set_xlim(-9, 6.5), ax.set_ylim(-9, 6.5)
        ax.set_xlabel("dim 0"), ax.set_ylabel("dim 1")
        ax.legend(loc="upper left", fontsize=7)
    hist, z_e, cb = e2e
    ax = axes[1, 3]
    ax.scatter(z_e[:, 0], z_e[:, 1], s=2, c="C0", alpha=0.3, label="z_e of the data")
    ax.scatter(cb[:, 0], cb[:, 1], s=40, c="C3", marker="x", label="codes")
    ax.set_aspect("equal", "datalim")
    ax.set_title(f"end to end, beta={args.beta}, restart={not args.no_restart}\n"
                 f"final mean |z_e - e|^2 = {hist['dist'][-1]:.2f}")
    ax.set_xlabel("z_e dim 0"), ax.set_ylabel("z_e dim 1")
    ax.legend(loc="upper left", fontsize=7)
    fig.savefig(out / "codebooks.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), constrained_layout=True)
    for r in runs:
        axes[0].plot(r["ppl"], label=r["name"])
    t_eps = math.log(EMA_EPS) / math.log(args.ema_decay)
    if t_eps < len(runs[0]["ppl"]):
        axes[0].axvline(t_eps, c="0.5", ls=":", label="unused EMA counts reach eps")
    axes[0].set_xlabel("step"), axes[0].set_ylabel("batch perplexity (effective codes)")
    axes[0].set_title(f"codebook usage from the bad start (K={K}, {N_CLUSTERS} clusters)")
    axes[0].legend(fontsize=7)
    axes[1].plot(hist["step"], hist["dist"], label="mean |z_e - e|^2 (commitment distance)")
    axes[1].plot(hist["step"], hist["norm"], label="mean |z_e| (encoder output scale)")
    axes[1].plot(hist["step"], hist["recon"], label="reconstruction MSE")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step"), axes[1].set_ylabel("value")
    axes[1].set_title(f"end to end: beta={args.beta}, restart={not args.no_restart}")
    axes[1].legend(fontsize=7)
    fig.savefig(out / "usage.png", dpi=80)
    plt.close(fig)
    print(f"saved {out / 'codebooks.png'} and {out / 'usage.png'}")


# ----------------------------------------------------------------------------- run
def main(argv=None):
    ap = argparse.ArgumentParser(description="The vector quantiser on a 2-D toy.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per codebook variant instead of {STEPS}")
    ap.add_argument("--out", default="out/lesson04", help="output folder")
    ap.add_argument("--beta", type=float, default=BETA, help="commitment weight (parts 1, 2 and 4)")
    ap.add_argument("--no-restart", action="store_true", help="part 4 without dead-code restarts")
    ap.add_argument("--ema-decay", type=float, default=EMA_DECAY, help="EMA decay of the part-3 EMA variants")
    args = ap.parse_args(argv)
    if args.beta < 0 or not 0 < args.ema_decay < 1:
        ap.error("--beta must be >= 0 and --ema-decay in (0, 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = QUICK_STEPS if args.quick else STEPS
    print(__doc__[:__doc__.index("Data:")].rstrip() + "\n")  # the idea and its equations
    quantiser_by_hand(np.random.default_rng(SEED), args.beta)

    print("2) where the gradients point (three hand-placed z_e, two codes; codebooks.png, first panel):")
    st = straight_through_example(args.beta)
    for n in range(len(st["z_e"])):
        print(f"   z_e {st['z_e'][n]} -> code {st['idx'][n]} at {st['e'][n]}: -dL/dz_q {(-st['dz_q'][n]).round(3)}, "
              f"-commitment {(-st['commit'][n]).round(3)}, sum reaching z_e {(-st['dz_e'][n]).round(3)}")
    print(f"   codebook: -dL/de = {(-st['dcodebook']).round(3).tolist()} (each code towards the mean of its z_e)")
    print("   the commitment arrow points from z_e to its code; the codebook arrow from the code to its z_e's")
    print(f"3) codebooks of K={K} trained on the data for {steps} steps from a collapsed start near {BAD_INIT_CENTRE}:")
    variants = [("codebook loss (collapses)", False, False, False),
                ("EMA alone", False, True, False),
                ("codebook loss + k-means init", True, False, False),
                ("codebook loss + restart", False, False, True),
                ("EMA + restart", False, True, True),
                ("EMA + k-means + restart", True, True, True)]
    runs = [run_variant(n, steps, km, ema, rs, args.ema_decay, SEED + 1) for n, km, ema, rs in variants]
    ema_dead_codes(runs[1], args.ema_decay)
    print("   only a code that wins vectors gets a gradient or an EMA update: k-means puts every code where\n"
          "   the data is, restarts move the losers onto current vectors; EMA changes how winners move, not who wins.")

    restart = not args.no_restart
    print(f"4) end to end (linear encoder, {E2E_K} codes, linear decoder; encoder lr {E2E_LR_ENC} vs codebook lr "
          f"{E2E_LR_CB}), beta={args.beta}, restart={restart}:")
    e2e = train_end_to_end(args.beta, restart, E2E_STEPS)
    hist = e2e[0]
    for s in (0, E2E_STEPS // 3, 2 * E2E_STEPS // 3, E2E_STEPS - 1):
        print(f"   step {s:3d}: reconstruction MSE {hist['recon'][s]:7.3f}, mean |z_e - e|^2 {hist['dist'][s]:8.3f}, "
              f"mean |z_e| {hist['norm'][s]:6.2f}, perplexity {hist['ppl'][s]:4.1f} of {E2E_K}")
    save_figures(out, st, runs, e2e, args)

    print("\nWhat to notice: the decoder's gradient passes the argmin unchanged (straight-through); the\n"
          "commitment term is the only force that keeps z_e near its code. A code nobody picks never moves\n"
          "towards the data, under the codebook loss and under EMA alike: collapse is cured by where codes\n"
          "start (k-means) or by moving losers (restarts), not by EMA.")
    print("Try this:\n"
          f"  --beta 0      part 4: nothing pulls z_e back to its code, the encoder (lr {E2E_LR_ENC} vs {E2E_LR_CB})\n"
          "                runs ahead: mean |z_e| and |z_e - e|^2 grow; try --beta 1 for the opposite.\n"
          "  --beta 0 --no-restart   the codes cannot keep up at all: |z_e - e|^2 explodes and perplexity drops.\n"
          f"  --ema-decay 0.99 (full run)   dead EMA codes now wait ln({EMA_EPS:g})/ln(0.99) = "
          f"{math.log(EMA_EPS) / math.log(0.99):.0f} steps before sliding:\n"
          "                EMA alone stays collapsed for the whole run.\n"
          "  BAD_INIT_CENTRE = (-7.0, -2.9) (between two clusters), full run: most dead EMA codes slide to the\n"
          "                origin, where no point is nearest them; fewer are rescued by a passing cluster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
