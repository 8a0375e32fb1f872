"""Lesson 09 - TopP&R: judging generated samples by the *support* of two distributions.

    python "lessons/09_topp&r.py" [--quick] [--out out/lesson09] [--embeddings PATH] [--checkpoint DIR]
                                  [--alpha A] [--outlier-fraction F]

Precision/recall for generative models ask two questions:
  fidelity  -- do the fakes lie where real data lives?          (precision)
  diversity -- do the fakes cover everywhere real data lives?   (recall)
Both need an estimate of "where the data lives", the support. PRDC (Naeem et al. 2020) takes
the union of a k-NN ball around every sample, so one stray sample adds a whole ball. TopP&R
(Kim et al., NeurIPS 2023) keeps only the *statistically significant* part:
  1. a bandwidth h from k-NN distances (k = 5 * dimension),
  2. a cosine-kernel density S(p) = sum_a cos(pi/2 |p-a|/h) over the samples a within h of p,
  3. a bootstrap confidence band c: how far S moves when the samples are resampled,
  4. the support is {S > c}; samples with S <= c are not significant and are ignored.
TopP is the share of significant fakes inside the real support, TopR the share of significant
reals inside the fake support.

This lesson
  1. writes TopP&R out on a small 2-D set and checks it against minivq.metrics.top_pr,
  2. draws the supports, bands and kept/ignored points on 2-D toy data for five cases: same
     distribution, shifted, mode collapse, outliers among the fakes, outliers among the reals,
  3. shows the band (figure) and compares TopP&R with PRDC on the same cases,
  4. scores real vs generated digits in the classifier's 32-d embedding space: the embeddings.npz
     lesson 08 writes (--embeddings PATH, default out/lesson08/embeddings.npz, 08's default --out
     seen from the current folder), else clips it generates itself with the shipped bundle
     against the real FSDD test clips (MINIVQ_FSDD); without data that part is skipped, saying why.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import cli, data, evaluate  # noqa: E402
from minivq.bundle import DEFAULT_CHECKPOINT, bundle_sampling, generate_clips, load_bundle  # noqa: E402
from minivq.metrics import cosine_kde, prdc, top_pr  # noqa: E402

SEED = 0
ALPHA = 0.1               # significance level of the confidence band (--alpha)
N_BOOT = 10               # bootstrap resamples (the library's default)
SMALL_N = 120             # points per set in the written-out example of part 1
SMALL_OUTLIERS = 3        # of them, fakes moved far away (they should be ignored)
N_POINTS = 600            # samples per set in the toy cases (--quick: QUICK_POINTS)
QUICK_POINTS = 250
MODES = 4                 # Gaussian blobs of the toy "real" distribution, on a circle
MODE_RADIUS = 3.0         # distance of the blobs from the origin
MODE_STD = 0.5            # spread of each blob
SHIFT = 1.2               # how far the "shifted" fakes move (both axes)
OUTLIER_FRACTION = 0.1    # share of points replaced by uniform noise in the outlier cases (--outlier-fraction)
OUTLIER_BOX = 8.0         # noise is drawn uniformly from [-OUTLIER_BOX, OUTLIER_BOX]^2
PRDC_K = 5                # neighbours for PRDC
GRID = 160                # grid side for the density pictures (--quick: QUICK_GRID)
QUICK_GRID = 70
DEFAULT_EMBEDDINGS = Path("out/lesson08/embeddings.npz")  # lesson 08's default --out
FALLBACK_PER_DIGIT = 30   # clips per digit generated when no embeddings file is found
QUICK_FALLBACK_PER_DIGIT = 17   # 170 >= 5*32 + 2 = 162, the fewest TopP&R takes in 32-d
FALLBACK_GL_ITERS = 32    # Griffin-Lim iterations for those clips (--quick: QUICK_FALLBACK_GL_ITERS)
QUICK_FALLBACK_GL_ITERS = 16
REAL_PER_DIGIT = 30       # real FSDD test clips per digit (the test split has 30 of each)
FSDD_ENV = "MINIVQ_FSDD"


def section(title):
    print("\n" + title + "\n" + "-" * len(title))


# ----------------------------------------------------------------------------- TopP&R, written out
def distances(a, b):
    """Euclidean distances (N, M) between the rows of a (N, D) and b (M, D)."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))


def bandwidth(a, k):
    """The authors' rule: for each row i = 0 .. N-k-1 the distance to its k-th nearest row *after* it;
    h is element int(0.5 (N-k)) - 1 of those N-k distances, sorted (about their median)."""
    n = len(a)
    d = distances(a, a)                                        # (N, N)
    kth = np.array([np.sort(d[i, i + 1:])[k - 1] for i in range(n - k)])  # (N-k,)
    return np.sort(kth)[int(0.5 * (n - k)) - 1]


def density(points, queries, h, weights=None):
    """S(q) = sum_a w_a cos(pi/2 |q-a|/h) over the points a within h of q -> (Q,)."""
    d = distances(queries, points)                             # (Q, N)
    kern = np.where(d <= h, np.cos(np.pi / 2 * np.minimum(d / h, 1.0)), 0.0)  # (Q, N)
    w = np.ones(len(points)) if weights is None else weights   # (N,)
    return kern @ w


def band(a, h, rng, n_boot, alpha):
    """Density at a's own points (N,), the band c and the bootstrap deviations theta (B,)."""
    n = len(a)
    s = density(a, a, h)                                       # (N,)
    theta = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.bincount(rng.choice(n, n, replace=True), minlength=n)  # one resample, as counts
        theta[b] = np.max(np.abs(s - density(a, a, h, counts)))  # how far S moved, at the worst point
    return s, np.quantile(theta, 1 - alpha), theta


def topp_r_written_out(real, fake, alpha, seed):
    """TopP&R with the four functions above; the random draws are the library's (all real first)."""
    k = 5 * real.shape[1]
    h_r, h_f = bandwidth(real, k), bandwidth(fake, k)
    rng = np.random.RandomState(seed)
    s_r, c_r, _ = band(real, h_r, rng, N_BOOT, alpha)
    s_f, c_f, _ = band(fake, h_f, rng, N_BOOT, alpha)
    real_kept, fake_kept = s_r > c_r, s_f > c_f                # the significant points of each set
    fake_in_real = density(real, fake, h_r) > c_r              # fakes inside the real support
    real_in_fake = density(fake, real, h_f) > c_f              # reals inside the fake support
    top_p = np.sum(fake_kept & fake_in_real) / max(fake_kept.sum(), 1)
    top_r = np.sum(real_kept & real_in_fake) / max(real_kept.sum(), 1)
    return dict(k=k, h_real=h_r, h_fake=h_f, c_real=c_r, c_fake=c_f, score_fake=s_f,
                real_kept=real_kept, fake_kept=fake_kept, fidelity=top_p, diversity=top_r)


def written_out_check(alpha):
    section("1. TopP&R written out on a small 2-D set, against minivq.metrics.top_pr")
    g = np.random.RandomState(SEED + 1)
    real = blobs(g, SMALL_N, range(MODES)).astype(np.float32)   # the library computes from float32 values
    fake = blobs(g, SMALL_N, range(MODES)) + 0.3
    fake[-SMALL_OUTLIERS:] = [[OUTLIER_BOX, OUTLIER_BOX], [-OUTLIER_BOX, OUTLIER_BOX], [OUTLIER_BOX, 0.0]]
    fake = fake.astype(np.float32)
    real64, fake64 = real.astype(np.float64), fake.astype(np.float64)
    mine = topp_r_written_out(real64, fake64, alpha, SEED)
    lib = top_pr(real, fake, alpha=alpha, rng=np.random.RandomState(SEED), n_bootstrap=N_BOOT)
    print(f"{SMALL_N} real points (4 blobs), {SMALL_N} fakes (the blobs moved by 0.3, the last {SMALL_OUTLIERS} "
          f"put far away); D = 2, k = 5*D = {mine['k']}, alpha = {alpha}, {N_BOOT} resamples")
    print(f"{'':>22}{'written out':>13}{'top_pr':>13}{'|difference|':>14}")
    for key in ("h_real", "h_fake", "c_real", "c_fake", "fidelity", "diversity"):
        a, b = float(mine[key]), float(getattr(lib, key))
        print(f"{key:>22}{a:>13.6f}{b:>13.6f}{abs(a - b):>14.1e}")
    for key in ("real_kept", "fake_kept"):
        same = int(np.sum(mine[key] == getattr(lib, key)))
        print(f"{key:>22}{int(mine[key].sum()):>13d}{int(getattr(lib, key).sum()):>13d}"
              f"   same verdict for {same}/{len(mine[key])} points")
    s_out = mine["score_fake"][-SMALL_OUTLIERS:]
    print(f"The planted outliers have S = {np.array2string(s_out, precision=2)} (only their own kernel term, "
          f"cos 0 = 1) against c_fake = {mine['c_fake']:.2f}:")
    print(f"{int(mine['fake_kept'][-SMALL_OUTLIERS:].sum())} of them are kept. Also below their band: "
          f"{int(np.sum(~mine['real_kept']))} reals and {int(np.sum(~mine['fake_kept'][:-SMALL_OUTLIERS]))} "
          "other fakes, points in thin regions at the blob edges:")
    print("a point counts when the density around it is significant, however close it is to the rest.")


# ----------------------------------------------------------------------------- toy cases
def blobs(g, n, modes):
    """n points (n, 2) from equal-weight Gaussian blobs at the given mode indices of the circle."""
    angles = 2 * np.pi * np.arange(MODES) / MODES
    centres = MODE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (MODES, 2)
    which = np.asarray(modes)[np.arange(n) % len(modes)]
    return centres[which] + MODE_STD * g.normal(size=(n, 2))  # (n, 2)


def with_outliers(g, a, fraction):
    """A copy of a (n, 2) with a fraction of its rows replaced by uniform noise; (copy, their indices)."""
    a = a.copy()
    idx = g.permutation(len(a))[:int(fraction * len(a))]
    a[idx] = g.uniform(-OUTLIER_BOX, OUTLIER_BOX, size=(len(idx), 2))
    return a, idx


def toy_cases(n, seed, fraction):
    """{name: (real (n, 2), fake (n, 2), what it shows)}; the outlier cases reuse the arrays of
    'same' and 'shifted' with some rows replaced, so they differ from those by the outliers only."""
    g = np.random.RandomState(seed)
    real = blobs(g, n, range(MODES))
    same = blobs(g, n, range(MODES))
    shifted = blobs(g, n, range(MODES)) + SHIFT
    collapsed = blobs(g, n, [0, 1])
    fake_out, fake_idx = with_outliers(g, same, fraction)
    real_out, real_idx = with_outliers(g, real, fraction)
    cases = {"same": (real, same, "a fresh draw from the real distribution"),
             "shifted": (real, shifted, f"every fake moved by ({SHIFT}, {SHIFT})"),
             "mode collapse": (real, collapsed, "fakes come from 2 of the 4 modes only"),
             "fake outliers": (real, fake_out, f"'same' with {fraction:.0%} of the fakes replaced by uniform noise"),
             "real outliers": (real_out, shifted, f"'shifted' with {fraction:.0%} of the REALS replaced by noise")}
    return cases, {"fake outliers": fake_idx, "real outliers": real_idx}


def score_all(cases, alpha):
    section("2. TopP&R and PRDC on 2-D toy data")
    print(f"alpha = {alpha}; k = 5*D = 10 neighbours for the bandwidth; S and c are unnormalised kernel sums")
    results = {}
    for name, (real, fake, what) in cases.items():
        r = top_pr(real, fake, alpha=alpha, rng=np.random.RandomState(SEED))
        results[name] = (r, prdc(real, fake, k=PRDC_K))
        print(f"{name:>13}: {what}")
        print(f"{'':>13}  h_real {r.h_real:.3f}  h_fake {r.h_fake:.3f}  band c_real {r.c_real:.2f}  "
              f"c_fake {r.c_fake:.2f}  kept reals {r.real_kept.sum()}/{len(real)}  "
              f"kept fakes {r.fake_kept.sum()}/{len(fake)}")
    return results


def draw_supports(cases, results, grid_side, out):
    """Row 1: real level set {S_X > c_X} with the fakes; row 2: fake level set with the reals."""
    fig, axes = plt.subplots(2, len(cases), figsize=(3.9 * len(cases), 8.2), constrained_layout=True)
    for col, (name, (real, fake, _)) in enumerate(cases.items()):
        r = results[name][0]
        lim = np.abs(np.r_[real, fake]).max() + 0.5           # zoom to the points of this case
        ticks = np.linspace(-lim, lim, grid_side)
        gx, gy = np.meshgrid(ticks, ticks)
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)      # (G, 2)
        rows = [(real, r.h_real, r.c_real, fake, r.fake_kept, r.score_fake_on_real > r.c_real,
                 "fakes", f"TopP {r.fidelity:.3f}", "real support"),
                (fake, r.h_fake, r.c_fake, real, r.real_kept, r.score_real_on_fake > r.c_fake,
                 "reals", f"TopR {r.diversity:.3f}", "fake support")]
        for row, (base, h, c, other, kept, inside, who, score, support) in enumerate(rows):
            ax = axes[row, col]
            dens = cosine_kde(base, grid, h).reshape(grid_side, grid_side)  # (grid, grid)
            if dens.max() > c:
                ax.contourf(gx, gy, dens, levels=[c, dens.max() + 1], colors=["#cfe3f7"])
                ax.contour(gx, gy, dens, levels=[c], colors=["#3b7dd8"], linewidths=1.2)
            ax.scatter(*other[kept & inside].T, s=6, c="#1a9850", label=f"kept {who}, inside")
            ax.scatter(*other[kept & ~inside].T, s=10, c="#d73027", label=f"kept {who}, outside")
            ax.scatter(*other[~kept].T, s=10, c="0.55", marker="x", label=f"{who} below own band (ignored)")
            ax.set_title(f"{name}: {support} (blue)\n{score}", fontsize=9)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xlabel("x1", fontsize=8)
            ax.set_ylabel("x2", fontsize=8)
            if col == 0:
                ax.legend(loc="lower left", fontsize=6)
    fig.suptitle("TopP&R: blue = {S > c}, where the kernel density is above its confidence band")
    fig.savefig(out / "supports.png", dpi=100)
    plt.close(fig)


def draw_band(cases, results, alpha, out):
    """What the band is: the spread of S under resampling, and where it cuts the scores."""
    r = results["fake outliers"][0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, scores, theta, c, title in [(axes[0], r.score_real, r.theta_real, r.c_real, "real set"),
                                        (axes[1], r.score_fake, r.theta_fake, r.c_fake, "fake set (with outliers)")]:
        ax.hist(scores, bins=50, color="0.7")
        ax.axvline(c, color="#d73027", label=f"band c = quantile(theta, {1 - alpha:.2f}) = {c:.2f}")
        ax.plot(theta, np.zeros_like(theta), "|", color="#3b7dd8", markersize=18,
                label="theta_b = max |S - S_boot| per resample")
        ax.set_title(f"{title}: {np.sum(scores > c)} of {len(scores)} points above the band", fontsize=10)
        ax.set_xlabel("kernel sum S at each point (unnormalised density)")
        ax.set_ylabel("points")
        ax.legend(fontsize=8)
    fig.savefig(out / "band.png", dpi=110)
    plt.close(fig)
    print("\nThe band (fake outliers case, figure band.png) is the (1 - alpha) quantile of how far the")
    print("density moves, at its worst point, when the set is resampled with replacement:")
    print(f"real: theta = {np.array2string(np.sort(r.theta_real), precision=2)} -> c = {r.c_real:.2f}")
    print(f"fake: theta = {np.array2string(np.sort(r.theta_fake), precision=2)} -> c = {r.c_fake:.2f}")


def compare_table(results, outlier_idx, fraction, out):
    section("3. TopP&R vs PRDC on the same cases")
    keys = ["TopP", "TopR", "TopF1", "precision", "recall", "density", "coverage"]
    print(f"{'case':>13} " + " ".join(f"{k:>9}" for k in keys))
    rows = {}
    for name, (r, p) in results.items():
        rows[name] = [r.fidelity, r.diversity, r.top_f1, p["precision"], p["recall"], p["density"], p["coverage"]]
        print(f"{name:>13} " + " ".join(f"{v:9.3f}" for v in rows[name]))
    print("Each case against the one it was built from (finite samples never score 1.0 on TopP&R):")
    for name, base in (("shifted", "same"), ("mode collapse", "same"), ("fake outliers", "same"),
                       ("real outliers", "shifted")):
        print(f"{name + ' - ' + base:>24} " + " ".join(f"{v - b:+9.3f}" for v, b in zip(rows[name], rows[base])))
    print("Mode collapse shows in TopR and in PRDC recall/coverage; TopP and PRDC precision say the fakes")
    print("that exist are good. In 2-D with k = 10 the real support is tight, so TopP&R sees a shift of about")
    print("two blob widths as no significant overlap at all.")

    d_topp = rows["real outliers"][0] - rows["shifted"][0]
    d_prec = rows["real outliers"][3] - rows["shifted"][3]
    r_ro = results["real outliers"][0]
    n_ro = len(outlier_idx["real outliers"])
    print(f"\nOutliers among the REALS ({n_ro} of them; the fakes are exactly those of 'shifted'): PRDC precision "
          f"moves by {d_prec:+.3f},")
    print(f"TopP by {d_topp:+.3f}. An isolated real point has a large k-NN ball, so PRDC's real support grows "
          "by patches")
    print(f"the fakes can fall into; TopP&R keeps {int(r_ro.real_kept[outlier_idx['real outliers']].sum())} of "
          f"the {n_ro} outlying reals (S above c_real = {r_ro.c_real:.2f}), so its support stays on the blobs.")
    print("Here TopP&R is the " + ("more robust of the two." if abs(d_topp) < abs(d_prec) else
                                   "LESS robust of the two, in this draw."))

    d_topp = rows["fake outliers"][0] - rows["same"][0]
    d_prec = rows["fake outliers"][3] - rows["same"][3]
    r_fo, r_same = results["fake outliers"][0], results["same"][0]
    idx = outlier_idx["fake outliers"]
    print(f"\nOutliers among the FAKES ({len(idx)} = {fraction:.0%} of 'same' replaced by noise): PRDC precision "
          f"moves by {d_prec:+.3f}: every")
    kept_strays = int(r_fo.fake_kept[idx].sum())
    print(f"stray fake outside the real balls counts as a miss. TopP moves by {d_topp:+.3f}; it keeps "
          f"{kept_strays} of the {len(idx)} strays")
    print("(the others have S <= c_fake), so " + ("the noise itself hardly enters it" if kept_strays <= len(idx) // 4
                                                  else "part of the noise enters it")
          + "; the strays also change the fake bandwidth")
    print(f"({r_same.h_fake:.3f} -> {r_fo.h_fake:.3f}) and band ({r_same.c_fake:.2f} -> {r_fo.c_fake:.2f}) and "
          f"with them which blob fakes are significant")
    print(f"({int(r_same.fake_kept.sum())} -> {int(r_fo.fake_kept.sum())} kept), and TopP moves through that. "
          f"Here TopP moved {'less' if abs(d_topp) < abs(d_prec) else 'MORE'} than PRDC precision.")
    print("So TopP is not a count of bad fakes, and TopP&R's robustness is about the support estimate:")
    print("outliers in the set that defines a support (the reals, for TopP) do not inflate it, as in the case above.")

    fig, ax = plt.subplots(figsize=(11, 4.2), constrained_layout=True)
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax.bar(np.arange(len(rows)) + i * width, [v[i] for v in rows.values()], width, label=k)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
    ax.set_xticklabels(list(rows))
    ax.axhline(1.0, color="0.4", lw=0.8)
    ax.set_ylabel("score")
    ax.set_title("TopP&R (first three bars) and PRDC (last four) on the toy cases", fontsize=10)
    ax.legend(ncol=len(keys), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.savefig(out / "topp_r_vs_prdc.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- digit embeddings
def read_embeddings(path):
    """{name: array} from lesson 08's embeddings.npz; `fake` is required."""
    with np.load(path, allow_pickle=False) as z:
        emb = {k: z[k] for k in z.files}
    if "fake" not in emb:
        raise ValueError(f"{path} must hold an array 'fake' (and 'real' when it had data); it has {sorted(emb)}")
    return emb


def real_embeddings(bundle, n_ref):
    """Classifier embeddings of real FSDD clips from MINIVQ_FSDD: {real (N, E) test clips, real_digits,
    real_ref (n_ref, E) train clips, n_ref / 10 of each digit}."""
    feats = data.load_features(os.environ[FSDD_ENV], split="official", max_per_digit=REAL_PER_DIGIT,
                               cfg=bundle.features, progress=False)
    train = [i for d in range(10) for i in np.flatnonzero(feats.train.digit == d)[:n_ref // 10]]
    return {"real": evaluate.judge(bundle.classifier, feats.test.x)["embed"], "real_digits": feats.test.digit,
            "real_ref": evaluate.judge(bundle.classifier, feats.train.x[train])["embed"]}


def digit_embeddings(args, alpha):
    section("4. real vs generated digits in the classifier's 32-d embedding space")
    explicit = args.embeddings is not None
    path = Path(args.embeddings) if explicit else DEFAULT_EMBEDDINGS
    if path.is_dir():
        path = path / DEFAULT_EMBEDDINGS.name
    if explicit and not path.is_file():
        raise ValueError(f"--embeddings {args.embeddings}: no such file (lesson 08 writes OUT/embeddings.npz)")
    if path.is_file():
        emb = read_embeddings(path)
        print(f"read {path}: " + ", ".join(f"{k} {v.shape}" for k, v in emb.items() if v.ndim == 2))
        recorded = str(emb.get("checkpoint", ""))                  # the bundle lesson 08 used
        checkpoint = recorded if recorded and Path(recorded).is_dir() else args.checkpoint
        if "real" not in emb:
            print(f"it holds no `real` array (lesson 08 ran without data); real clips come from {FSDD_ENV}")
            if not os.environ.get(FSDD_ENV):
                print(f"{FSDD_ENV} is not set either: with no real clips there is nothing to compare the generated")
                print(f"ones with, so this part is skipped. Set {FSDD_ENV}=/path/to/fsdd and run again.")
                return
            emb.update(real_embeddings(load_bundle(checkpoint), len(emb["fake"])))
    else:
        print(f"no {path} (run lessons/08_generate.py from this folder first, or pass --embeddings PATH)")
        if not os.environ.get(FSDD_ENV):
            print(f"and {FSDD_ENV} is not set: generated clips alone have nothing to be compared with, and")
            print(f"generating them would take time for nothing, so this part is skipped. Set {FSDD_ENV}=/path/to/fsdd")
            print("to have it generate clips and compare them with the real test clips.")
            return
        per_digit = QUICK_FALLBACK_PER_DIGIT if args.quick else FALLBACK_PER_DIGIT
        bundle = load_bundle(args.checkpoint)
        setting = bundle_sampling(bundle)
        t0 = time.perf_counter()
        digits = np.repeat(np.arange(10), per_digit)
        gl_iters = QUICK_FALLBACK_GL_ITERS if args.quick else FALLBACK_GL_ITERS
        gen = generate_clips(bundle, digits, seed=SEED, gl_iters=gl_iters, **setting)
        print(f"so it generates {len(digits)} clips with {args.checkpoint} at the bundle's defaults (guidance "
              f"{setting['guidance']:g}, temperature {setting['temperature']:g}, top-k {setting['top_k']}, top-p "
              f"{setting['top_p']}) in {time.perf_counter() - t0:.1f} s; the classifier agrees with the requested "
              f"digit for {gen['accuracy']:.2f} of them")
        emb = {"fake": gen["embed"], "fake_digits": digits, **real_embeddings(bundle, len(digits))}
    real, fake = emb["real"], emb["fake"]
    need = 5 * real.shape[1] + 2
    if min(len(real), len(fake)) < need:
        print(f"TopP&R in {real.shape[1]}-d needs at least 5*{real.shape[1]} + 2 = {need} points per set; "
              f"got {len(real)} real and {len(fake)} generated, so this part is skipped (lesson 08 writes")
        print(f"{10 * QUICK_FALLBACK_PER_DIGIT} generated clips with --quick, more without).")
        return
    pairs = [("real test vs generated", fake)]
    if "real_ref" in emb:
        pairs.append(("real test vs real train", emb["real_ref"]))
    print(f"{'':<26}{'TopP':>8}{'TopR':>8}{'TopF1':>8}{'prec':>8}{'recall':>8}{'dens':>8}{'cover':>8}"
          f"{'h_r':>8}{'h_f':>8}{'kept r':>9}{'kept f':>9}")
    for name, b in pairs:
        r = top_pr(real, b, alpha=alpha, rng=np.random.RandomState(SEED))
        p = prdc(real, b, k=PRDC_K)
        print(f"{name:<26}{r.fidelity:>8.3f}{r.diversity:>8.3f}{r.top_f1:>8.3f}{p['precision']:>8.3f}"
              f"{p['recall']:>8.3f}{p['density']:>8.3f}{p['coverage']:>8.3f}{r.h_real:>8.2f}{r.h_fake:>8.2f}"
              f"{int(r.real_kept.sum()):>5d}/{len(real):<3d}{int(r.fake_kept.sum()):>5d}/{len(b)}")
        if name.endswith("generated"):
            res = r
    if "real_ref" in emb:
        print("(real train clips were the classifier's training data: that row is an optimistic reference)")
    if "fake_digits" in emb:
        fd = np.asarray(emb["fake_digits"])
        inside = res.fake_kept & (res.score_fake_on_real > res.c_real)
        print("per requested digit: significant generated clips inside the real support / significant ones")
        print("  " + "  ".join(f"{d}: {int(inside[fd == d].sum())}/{int(res.fake_kept[fd == d].sum())}"
                               for d in range(10)))
    print(f"With k = {res.k} the bandwidths rest on N - k = {len(real) - res.k} real and {len(fake) - res.k} generated "
          "rows; more clips make them steadier.")
    if res.diversity > 0.99 and res.h_fake > res.h_real:
        print(f"TopR is {res.diversity:.3f} with h_fake {res.h_fake:.1f} > h_real {res.h_real:.1f}: a wide fake "
              "bandwidth gives a generous fake")
        print("support that covers the reals; compare TopR with the reference row before reading much into it.")


# ----------------------------------------------------------------------------- the lesson
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_POINTS} toy points, a {QUICK_GRID}^2 grid, "
                         f"{10 * QUICK_FALLBACK_PER_DIGIT} generated clips")
    ap.add_argument("--out", default="out/lesson09", help="folder for the figures")
    ap.add_argument("--embeddings", default=None,
                    help=f"lesson 08's embeddings.npz (arrays fake, real) or its folder "
                         f"(default: {DEFAULT_EMBEDDINGS})")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                    help="model bundle for generating clips when no embeddings file is found")
    ap.add_argument("--alpha", type=cli.prob, default=ALPHA, help="significance level of the confidence band")
    ap.add_argument("--outlier-fraction", type=cli.prob, default=OUTLIER_FRACTION,
                    help="share of points replaced by noise in the outlier cases")
    args = ap.parse_args()
    if not args.alpha < 1:
        sys.exit("error: --alpha must be below 1")
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(__doc__.split("\n\n")[2])

    written_out_check(args.alpha)
    n = QUICK_POINTS if args.quick else N_POINTS
    cases, outlier_idx = toy_cases(n, SEED, args.outlier_fraction)
    results = score_all(cases, args.alpha)
    draw_supports(cases, results, QUICK_GRID if args.quick else GRID, out)
    draw_band(cases, results, args.alpha, out)
    compare_table(results, outlier_idx, args.outlier_fraction, out)
    try:
        digit_embeddings(args, args.alpha)
    except (ValueError, FileNotFoundError, OSError) as e:
        sys.exit(f"error: {e}")

    section("Try this")
    print('1. python "lessons/09_topp&r.py" --quick --outlier-fraction 0.3   more outliers: does PRDC precision in')
    print("   'real outliers' keep climbing while TopP stays put? At what fraction do the outliers start to form")
    print("   significant clusters of their own (kept reals/fakes in section 2)?")
    print('2. python "lessons/09_topp&r.py" --quick --alpha 0.5   the band is a lower quantile of theta: how many')
    print("   points are kept now (section 2), how do the supports in supports.png change, and does 'shifted' overlap?")
    print("3. python lessons/08_generate.py --quick --guidance 8, then this lesson from the same folder: which")
    print("   digits fall outside the real support (section 4's per-digit line) when guidance is pushed too far?")
    print("4. In bandwidth(), take the median of the k-th distances to ALL other points (the library's")
    print("   bandwidth='knn'): the check in section 1 now disagrees; by how much does h move?")
    print(f"\nfigures: {out / 'supports.png'}, {out / 'band.png'}, {out / 'topp_r_vs_prdc.png'}")
    print(f"done in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
