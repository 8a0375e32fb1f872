"""Lesson 08: making new digits with the trained models, and judging them.

    python lessons/08_generate.py [--quick] [--out out/lesson08] [--checkpoint DIR] [--seed S]
                                  [--temperature T] [--top-k K] [--top-p P] [--guidance S]
                                  [--sweep-guidance S [S ...]] [--prior PRIOR.npz]

A digit becomes a sound in five steps:
  1. class token      the digit d is the first token of the sequence; with class_every the
                      prior also adds its embedding to every position's input, and with
                      class_norm every LayerNorm also takes a gain and bias row of digit d,
  2. transformer      draws 256 code indices one at a time, row by row of the 16 x 16 grid
                      (lesson 07); here we write the drawing itself: classifier-free guidance,
                      temperature, top-k, top-p, then one uniform per step,
  3. VQ-VAE decoder   codes -> codebook vectors -> 64 x 64 log-mel (lesson 05),
  4. vocoder          mel inversion + Griffin-Lim -> waveform (lesson 01),
  5. classifier       a CNN trained on real recordings says which digit it hears.

The lesson samples with the shipped bundle's own defaults (manifest.json "sampling": guidance 2,
temperature 0.7, nucleus 0.9), writes the sampling step out in NumPy and checks it pick for pick against
minivq.sampling, sweeps the settings, and compares real and generated clips in the classifier's
32-d embedding space. It writes embeddings.npz (arrays `fake` always, `real` and `real_ref` with
data) for  python "lessons/09_topp&r.py" --embeddings OUT/embeddings.npz  (09 finds it on its own
when both run with their default --out from the same folder).
Without MINIVQ_FSDD there are no real clips: the generated half is still shown and written.
--prior takes a conditional prior trained with a null class (python -m minivq.train prior
--p-uncond 0.1): guidance then comes from that one model fed "no digit" instead of a second prior.
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import audio, backend, cli, data, evaluate, metrics, sampling  # noqa: E402
from minivq.backend import to_numpy  # noqa: E402
from minivq.bundle import DEFAULT_CHECKPOINT, bundle_sampling, generate_clips, load_bundle  # noqa: E402
from minivq.transformer import load_prior  # noqa: E402
from minivq.vqvae import encode_logmel  # noqa: E402

SEED = 0
EMBED_PER_DIGIT = 50         # clips per digit at the reference setting for the embedding comparison
QUICK_EMBED_PER_DIGIT = 17   # 170 clips: TopP&R on 32-d embeddings needs at least 5*32 + 2 = 162
SWEEP_PER_DIGIT = 5          # clips per digit and setting in the sweep (--quick: QUICK_SWEEP_PER_DIGIT)
QUICK_SWEEP_PER_DIGIT = 2
REAL_PER_DIGIT = 30          # real test clips per digit (the FSDD test split has 30 of each)
FRECHET_SIZES = [20, 40, 85, 170, 300]  # subset sizes for the Frechet distance's bias (up to n generated)
GL_ITERS = 64                # Griffin-Lim iterations (--quick: QUICK_GL_ITERS)
QUICK_GL_ITERS = 16
GUIDANCE_SWEEP = [0.0, 1.0, 2.0, 5.0]   # guidance values tried besides the reference (--sweep-guidance)
QUICK_GUIDANCE_SWEEP = [0.0, 1.0]
TEMPERATURE_SWEEP = [1.0, 1.3]          # full run only (section 4 shows T at one step in --quick too)
TOP_K_SWEEP = [16]                      # full run only
TOP_P_SWEEP = [0.9]                     # full run only
STEP_SHOWN = 100             # the decoding step whose logits section 4 takes apart
PRDC_K = 5
GRID_COLUMNS = 5             # digits shown in token_grids.png
FSDD_ENV = "MINIVQ_FSDD"


def section(title):
    print("\n" + title + "\n" + "-" * len(title))


# ----------------------------------------------------------------------------- the sampling step, written out
def step_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """logits (N, K) float32 -> probabilities (N, K): temperature, top-k, softmax, top-p."""
    z = logits / temperature                                   # (N, K) lower T: sharper
    K = z.shape[1]
    if top_k is not None and top_k < K:
        drop = np.argsort(z, axis=1)[:, :K - top_k]            # (N, K-k) the smallest logits
        np.put_along_axis(z, drop, -np.inf, axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))               # (N, K) no overflow; -inf -> 0
    p = e / e.sum(axis=1, keepdims=True)                       # (N, K) softmax
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=1)                         # (N, K) most probable first
        ps = np.take_along_axis(p, order, axis=1)              # (N, K) sorted probabilities
        before = np.cumsum(ps, axis=1) - ps                    # (N, K) mass strictly before each
        keep = np.empty(p.shape, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, axis=1)  # the top code always stays
        p = np.where(keep, p, 0)
        p = p / p.sum(axis=1, keepdims=True)                   # renormalise the nucleus
    return p


def guided_logits(l_cond, l_uncond, s):
    """Classifier-free guidance: l = l_u + s (l_c - l_u); s=0 unconditional, s=1 conditional."""
    return l_uncond + s * (l_cond - l_uncond)


def draw_token(p, u):
    """Inverse CDF: p (N, K), u (N,) uniforms in [0, 1) -> (N,) the first code with cdf >= u."""
    cdf = np.cumsum(p, axis=1)                                 # (N, K)
    return np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), p.shape[1] - 1)


def sample_written_out(bundle, digits, setting, seed, record_step):
    """The decoding loop of sampling.sample with our step: (codes (N, 256), logits recorded at
    record_step: (l_cond (N, K), l_uncond (N, K) or None)). The transformer's one-step forward
    with its KV cache is the library's (lesson 07 wrote it out)."""
    params, cfg, _ = bundle.prior
    n, s = len(digits), setting["guidance"]
    guided = s != 1.0
    rng = backend.rng(seed)                                    # host uniforms: same on CPU and GPU
    caches = sampling.new_caches(cfg, n, params["wte"].dtype)
    tok = cfg.prefix(backend.asarray(digits), n=n)             # (N,) class tokens come first
    if guided and bundle.guide is not None:                    # a second, unconditional prior
        params_u, cfg_u, _ = bundle.guide
        tok_u = cfg_u.prefix(None, n=n)                        # (N,) the start token: no digit
    elif guided:                                               # the same prior, fed its null class
        params_u, cfg_u = params, cfg
        tok_u = backend.asarray(np.full(n, cfg.null_token))    # (N,) "no digit"
    if guided:  # written as a second pass with its own KV cache; the library runs both as one batch of 2N
        caches_u = sampling.new_caches(cfg_u, n, params_u["wte"].dtype)
    codes, recorded = np.zeros((n, cfg.context), dtype=np.int64), None
    for t in range(cfg.context):
        l_c = to_numpy(sampling.forward_step(params, cfg, tok, caches))                # (N, K)
        l_u = to_numpy(sampling.forward_step(params_u, cfg_u, tok_u, caches_u)) if guided else None
        if t == record_step:
            recorded = (l_c.copy(), None if l_u is None else l_u.copy())
        l = guided_logits(l_c, l_u, s) if guided else l_c
        p = step_probs(l, setting["temperature"], setting["top_k"], setting["top_p"])
        u = rng.random(n).astype(p.dtype)                      # one uniform per sequence and step
        codes[:, t] = draw_token(p, u)
        tok = backend.asarray(codes[:, t])                     # both priors read the drawn code
        tok_u = tok
    return codes, recorded


def with_prior(bundle, path):
    """The bundle with the conditional prior read from ``path``; a prior with a null class guides
    itself, so the bundle's separate unconditional prior is dropped for it."""
    prior = load_prior(path)
    pcfg, vcfg = prior[1], bundle.vqvae[1]
    if pcfg.cond != "class" or (pcfg.n_code, pcfg.context) != (vcfg.K, vcfg.grid ** 2):
        raise ValueError(f"--prior {path}: need a class-conditional prior over {vcfg.grid ** 2} tokens of {vcfg.K} "
                         f"codes (the bundle's VQ-VAE), got cond={pcfg.cond!r}, {pcfg.context} tokens of "
                         f"{pcfg.n_code} codes")
    return dataclasses.replace(bundle, prior=prior, guide=None if pcfg.null_class else bundle.guide)


# ----------------------------------------------------------------------------- judging
def token_stats(tokens, K):
    """Diversity of sampled grids (B, h, w): codes used per grid and over the whole set."""
    per_grid = [metrics.codebook_usage(g, K)["active"] for g in tokens]
    usage = metrics.codebook_usage(tokens, K)
    return {"codes_per_grid": float(np.mean(per_grid)), "perplexity": usage["perplexity"],
            "active": usage["active"]}


def summarise(label, verdict, tokens, K, want):
    """One table row: does the classifier hear the requested digit, how sure, how varied."""
    row = {"label": label,
           "agreement": metrics.accuracy(verdict["pred"], want),
           "confidence": float(np.mean(verdict["confidence"])),
           "heard_entropy": evaluate.entropy_bits(np.bincount(verdict["pred"], minlength=10)),
           "digit_score": metrics.digit_score(verdict["probs"])}
    row.update(token_stats(tokens, K))
    return row


COLUMNS = [("agreement", "agree", "{:>7.2f}"), ("confidence", "conf", "{:>6.2f}"),
           ("heard_entropy", "H(heard) bits", "{:>13.2f}"), ("digit_score", "digit score", "{:>11.2f}"),
           ("codes_per_grid", "codes/grid", "{:>10.1f}"), ("perplexity", "code ppl", "{:>8.1f}"),
           ("active", "codes used", "{:>10d}")]


def print_table(rows):
    head = f"   {'setting':<28}" + " ".join(f"{name:>{len(fmt.format(0))}}" for _, name, fmt in COLUMNS)
    print(head)
    print("   " + "-" * (len(head) - 3))
    for r in rows:
        print(f"   {r['label']:<28}" + " ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS))


def describe(setting):
    """'s=3, T=0.7, top-p 0.9' for a setting dict."""
    parts = [f"s={setting['guidance']:g}", f"T={setting['temperature']:g}"]
    if setting["top_k"] is not None:
        parts.append(f"top-k {setting['top_k']}")
    if setting["top_p"] is not None:
        parts.append(f"top-p {setting['top_p']:g}")
    return ", ".join(parts)


def sweep_settings(ref, guidance_values, quick):
    """The reference setting first, then one knob changed at a time (--quick: guidance only)."""
    out = [ref] + [{**ref, "guidance": float(s)} for s in guidance_values]
    if not quick:
        out += [{**ref, "temperature": t} for t in TEMPERATURE_SWEEP]
        out += [{**ref, "top_k": k} for k in TOP_K_SWEEP] + [{**ref, "top_p": p} for p in TOP_P_SWEEP]
    unique = []
    for s in out:
        if s not in unique:
            unique.append(s)
    return unique


def load_real(bundle, train_per_digit):
    """Real FSDD clips from MINIVQ_FSDD, or None when it is unset: test x (N, M, T) sorted by
    digit, their digits (N,), and train_per_digit train clips of each digit (N', M, T)."""
    root = os.environ.get(FSDD_ENV)
    if not root:
        return None
    feats = data.load_features(root, split="official", max_per_digit=max(REAL_PER_DIGIT, train_per_digit),
                               cfg=bundle.features, progress=False)
    test = first_per_digit(feats.test.digit, REAL_PER_DIGIT)   # digit by digit
    train = first_per_digit(feats.train.digit, train_per_digit)
    return feats.test.x[test], feats.test.digit[test], feats.train.x[train]


def first_per_digit(digits, n=1):
    """Indices of the first n clips of each digit 0-9 present in digits (N,)."""
    return [int(i) for d in range(10) for i in np.flatnonzero(digits == d)[:n]]


# ----------------------------------------------------------------------------- figures
def plot_mel_rows(path, rows, digits, suptitle):
    """rows: [(row label, (10, M, T) log-mels)]; one column per digit, one colour scale, colour bar."""
    vmax = max(float(np.max(m)) for _, m in rows)
    vmin = min(float(np.min(m)) for _, m in rows)
    fig, axes = plt.subplots(len(rows), len(digits), figsize=(1.45 * len(digits) + 0.8, 1.55 * len(rows) + 0.6),
                             squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.9, bottom=0.03, top=0.86, wspace=0.08, hspace=0.08)
    for r, (label, mels) in enumerate(rows):
        for c, d in enumerate(digits):
            ax = axes[r, c]
            im = ax.imshow(mels[c], origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"digit {d}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.colorbar(im, cax=fig.add_axes([0.92, 0.1, 0.012, 0.7]), label="log-mel (log magnitude)")
    fig.suptitle(suptitle, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_token_grids(path, results, want, K):
    """Sampled 16 x 16 code grids (raster order: grid row 0, the lowest mel bands, is tokens 0..15)."""
    gi = first_per_digit(want)[:GRID_COLUMNS]
    fig, axes = plt.subplots(len(results), len(gi), figsize=(1.7 * len(gi) + 1.0, 1.8 * len(results) + 0.4),
                             squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.86, bottom=0.03, top=0.88, wspace=0.1, hspace=0.3)
    for r, (label, res) in enumerate(results.items()):
        for c, i in enumerate(gi):
            g = res["tokens"][i]  # (h, w)
            ax = axes[r, c]
            im = ax.imshow(g, cmap="nipy_spectral", vmin=0, vmax=K - 1, interpolation="nearest", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"digit {want[i]}: {len(np.unique(g))} codes", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.colorbar(im, cax=fig.add_axes([0.89, 0.1, 0.02, 0.7]), label="code index")
    fig.suptitle("sampled code grids, one row per setting, drawn like the log-mels: time to the right, mel bands\n"
                 "up; token 0 is bottom left and the prior fills the grid row by row (raster order)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_step(path, curves, step):
    """Probabilities of the 60 most likely codes of one step (sorted by the conditional model)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8), constrained_layout=True)
    order = np.argsort(-curves[1][1])[:60]
    for label, p in curves:
        ax.plot(np.arange(len(order)), p[order], marker=".", ms=3, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1.1)
    ax.set_xlabel("code, ranked by the conditional prior's probability (s=1, T=1)")
    ax.set_ylabel("probability (filtered codes, p = 0, fall off the bottom)", fontsize=8)
    ax.set_title(f"one decoding step (position {step}, digit 0) under guidance and the filters", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_settings(path, rows):
    """The sweep table as bar charts, one panel per measure."""
    panels = [("agreement", "classifier agrees with request"), ("confidence", "mean confidence"),
              ("heard_entropy", "entropy of heard digits (bits)"), ("codes_per_grid", "distinct codes per grid")]
    labels = [r["label"] for r in rows]
    colours = ["0.6" if r["label"].startswith("real") else "C0" for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), constrained_layout=True)
    for ax, (key, title) in zip(axes, panels):
        ax.bar(range(len(rows)), [r[key] for r in rows], color=colours)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        ax.set_title(title, fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].axhline(0.1, color="k", lw=0.8, ls=":")  # chance: one digit in ten
    axes[1].set_ylim(0, 1)
    axes[2].axhline(np.log2(10), color="k", lw=0.8, ls="--")  # all ten digits heard equally often
    fig.suptitle("sampling settings (grey: real test clips for reference; dotted: chance; dashed: log2 10)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the lesson
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer clips, settings and Griffin-Lim iterations")
    ap.add_argument("--out", default="out/lesson08", help="output folder")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                    help="model bundle folder (manifest.json, vqvae.npz, prior_class.npz, classifier.npz)")
    ap.add_argument("--seed", type=cli.nonneg_int, default=SEED, help="sampling and Griffin-Lim seed")
    ap.add_argument("--temperature", type=cli.positive_float, default=None,
                    help="reference temperature (default: the bundle's)")
    ap.add_argument("--top-k", type=cli.positive_int, default=None, help="reference top-k (default: the bundle's)")
    ap.add_argument("--top-p", type=cli.prob, default=None, help="reference top-p (default: the bundle's)")
    ap.add_argument("--guidance", type=cli.nonneg_float, default=None,
                    help="reference guidance scale s (default: the bundle's; 1 = conditional prior alone)")
    ap.add_argument("--prior", default=None,
                    help="a conditional prior.npz to use instead of the bundle's (one trained with --p-uncond guides "
                         "itself through its null class, and the bundle's unconditional prior is then left out)")
    ap.add_argument("--sweep-guidance", type=cli.nonneg_float, nargs="+", default=None,
                    help=f"guidance values to sweep (default {GUIDANCE_SWEEP}, --quick {QUICK_GUIDANCE_SWEEP})")
    args = ap.parse_args()
    t_start = time.perf_counter()
    q = args.quick
    embed_per_digit = QUICK_EMBED_PER_DIGIT if q else EMBED_PER_DIGIT
    sweep_per_digit = QUICK_SWEEP_PER_DIGIT if q else SWEEP_PER_DIGIT
    gl_iters = QUICK_GL_ITERS if q else GL_ITERS

    try:
        bundle = load_bundle(args.checkpoint, cond="class")
        if args.prior:
            bundle = with_prior(bundle, args.prior)
        real = load_real(bundle, embed_per_digit)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vparams, vcfg, vnorm = bundle.vqvae
    params, pcfg, _ = bundle.prior
    K = vcfg.K
    defaults = bundle_sampling(bundle)
    ref = {k: (defaults[k] if getattr(args, k) is None else getattr(args, k))
           for k in ("temperature", "top_k", "top_p", "guidance")}
    guidance_values = args.sweep_guidance if args.sweep_guidance is not None else (
        QUICK_GUIDANCE_SWEEP if q else GUIDANCE_SWEEP)
    if bundle.guide is None and not pcfg.null_class:  # nothing to guide with
        print("note: this bundle has no prior_none.npz and its prior has no null class, so guidance is off "
              "(s = 1) throughout")
        ref["guidance"], guidance_values = 1.0, []

    section("1. the model bundle and its sampling defaults")
    print(f"   {args.checkpoint}" + (f", with the conditional prior of --prior {args.prior}" if args.prior else ""))
    print(f"   prior: {pcfg.n_layer} blocks, width {pcfg.d_model}, {pcfg.n_head} heads, {pcfg.context} code tokens "
          f"of {pcfg.n_code} codes, conditioned on the digit (class_every={pcfg.class_every}, "
          f"class_norm={pcfg.class_norm})")
    if bundle.guide is not None:
        print(f"   a second, unconditional prior (no digit, a start token instead) for guidance: "
              f"{bundle.guide[1].n_layer} blocks, width {bundle.guide[1].d_model}")
    elif pcfg.null_class:
        print(f"   no second prior: guidance comes from this prior fed its null class (token {pcfg.null_token}, "
              "'no digit'),")
        print("   which it learned by seeing a random fraction of its training sequences with the digit replaced")
        print("   (python -m minivq.train prior --p-uncond 0.1): one model is both p(z | d) and p(z)")
    print(f"   VQ-VAE: {vcfg.grid} x {vcfg.grid} codes from K={K} vectors of size {vcfg.D}; "
          f"features {bundle.features.n_mels} mels x {bundle.features.n_frames} frames at {bundle.features.sr} Hz")
    print(f"   bundle defaults (manifest.json 'sampling'): {describe(defaults)}")
    print(f"   reference setting of this run:               {describe(ref)}"
          + ("  (changed by a flag)" if ref != {k: defaults[k] for k in ref} else ""))

    section("2. how the digit enters the prior")
    wte, wpe = to_numpy(params["wte"]), to_numpy(params["wpe"])      # (V, C), (1 + 256, C)
    class_ids = to_numpy(pcfg.prefix(backend.asarray(np.arange(10))))  # (10,) token ids of digits 0-9
    norm = lambda a: float(np.mean(np.linalg.norm(a, axis=1)))  # noqa: E731
    print("   The sequence is [class token of d, code_1, ..., code_256]. The input of position t is")
    print("       x_t = wte[token_t] + wpe[t] + wte[class_d]        (class_every: the last term at every t)")
    print("   so every position reads the digit straight from its input, not only through attention back")
    print("   to position 0 (at t = 0 the token is the class token, so its embedding is in there twice).")
    if not pcfg.class_every:
        print("   This prior has class_every=False: the last term is absent, and the digit reaches later")
        print("   positions only through attention to position 0.")
    if pcfg.class_norm:  # a prior trained with --class-norm: the digit also sets every LayerNorm
        cg = np.stack([to_numpy(params[k]) for k in params if k.endswith(".cg")])  # (n_norms, n_class + 1, C)
        print(f"   class_norm: each of its {len(cg)} LayerNorms computes (g + cg[d]) * xhat + (b + cb[d]), so the digit")
        print("   also rescales the features inside every block; the digits' gain rows differ from the shared gain by")
        print(f"   {float(np.abs(cg[:, :10]).mean()):.3f} on average (the shared gains average "
              f"{float(np.mean([np.abs(to_numpy(params[k])).mean() for k in params if k.endswith('.g')])):.3f}).")
    else:
        print("   (A prior trained with --class-norm would also set every LayerNorm's gain and bias by the digit.)")
    print(f"   Sizes of the three terms here (mean Euclidean norm): code rows wte[0..{K - 1}] {norm(wte[:K]):.2f}, "
          f"positions wpe {norm(wpe):.2f},")
    print(f"   class rows wte[{class_ids[0]}..{class_ids[-1]}] {norm(wte[class_ids]):.2f}, i.e. "
          f"{norm(wte[class_ids]) / norm(wte[:K]):.2f} times a code row: the digit is no rounding error in x_t.")

    section("3. the sampling loop, written out, against minivq.sampling.sample")
    print("   At each of the 256 steps, for every sequence:")
    print("     l_c = logits of the conditional prior (sees the digit), l_u = of the unconditional prior, or of")
    print("           the same prior fed its null class instead of the digit (a prior trained with a null class)")
    print("     l   = l_u + s (l_c - l_u)        classifier-free guidance: p ~ p_u (p_c / p_u)^s")
    print("     l   = l / T                      temperature (T < 1 sharper, T > 1 flatter)")
    print("     top-k: all but the k largest l set to -inf;  p = softmax(l)")
    print("     top-p: keep the most probable codes until their mass reaches P (the top one always), renormalise")
    print("     u ~ U[0, 1) (one host uniform), code = first i with cumsum(p)_i >= u;  feed it to both priors")
    loop_digits = np.arange(10)
    t0 = time.perf_counter()
    codes_inline, (l_c, l_u) = sample_written_out(bundle, loop_digits, ref, args.seed, STEP_SHOWN)
    t_inline = time.perf_counter() - t0
    t0 = time.perf_counter()
    codes_lib = sampling.sample(params, pcfg, len(loop_digits), cond=loop_digits, seed=args.seed,
                                temperature=ref["temperature"], top_k=ref["top_k"], top_p=ref["top_p"],
                                guide=None if bundle.guide is None else bundle.guide[:2], guidance=ref["guidance"])
    t_lib = time.perf_counter() - t0
    same = codes_inline == codes_lib                               # (10, 256)
    print(f"   one sequence per digit, {describe(ref)}, seed {args.seed}: identical picks "
          f"{int(same.sum())}/{same.size} (written out {t_inline:.1f} s, library {t_lib:.1f} s)")
    if not same.all():
        print(f"   first difference at step {int(np.argmax(~same.all(axis=0)))}: a probability that differs in "
              "its last bit can move a draw that sits on a cdf boundary, and the sequence goes its own way after")

    section(f"4. one step taken apart (position {STEP_SHOWN}, the 10 sequences above)")
    if l_u is None:
        print("   (guidance off (s = 1): the guidance rows below use the conditional logits for both)")
        l_u = l_c
    cases = [("unconditional, s=0", 0.0, 1.0, None, None), ("conditional, s=1", 1.0, 1.0, None, None),
             (f"guided, s={ref['guidance']:g}", ref["guidance"], 1.0, None, None),
             (f"s={ref['guidance']:g}, T={ref['temperature']:g}", ref["guidance"], ref["temperature"], None, None),
             (f"s={ref['guidance']:g}, T={ref['temperature']:g}, top-k 16", ref["guidance"], ref["temperature"], 16,
              None),
             (f"s={ref['guidance']:g}, T={ref['temperature']:g}, top-p 0.9", ref["guidance"], ref["temperature"],
              None, 0.9)]
    u = backend.rng(args.seed).random(len(l_c)).astype(np.float32)  # (10,) the same uniforms for every row
    print(f"   {'setting':<30}{'H(p) bits':>10}{'max p':>8}{'codes p>0':>10}{'max |p - library|':>19}"
          f"{'same draw':>10}")
    curves = []
    for label, s, temp, k, top_p in cases:
        lg = guided_logits(l_c, l_u, s)                                            # (10, K)
        p = step_probs(lg, temp, k, top_p)                                         # (10, K)
        p_lib = sampling.filter_logits(backend.asarray(lg), temp, k, top_p)        # (10, K) on the device
        err = float(np.max(np.abs(p - to_numpy(p_lib))))
        picks = draw_token(p, u) == to_numpy(sampling.draw(p_lib, backend.asarray(u)))
        nz = p > 0
        h = float(np.mean(-np.sum(np.where(nz, p * np.log2(np.where(nz, p, 1)), 0), axis=1)))
        print(f"   {label:<30}{h:>10.2f}{p.max(axis=1).mean():>8.2f}{nz.sum(axis=1).mean():>10.1f}{err:>19.1e}"
              f"{int(picks.sum()):>7d}/{len(picks)}")
        curves.append((label, p[0]))
    print("   (means over the 10 sequences; H(p): entropy of the distribution the code is drawn from)")
    print("   Guidance s > 1 pushes the logits further in the direction the digit moved them, which usually")
    print("   also sharpens p; lower T sharpens it again; top-k and top-p cut the long tail of unlikely codes")
    print("   to zero so a single unlucky draw cannot pick one. Read the numbers above for how much each does.")

    want = np.repeat(np.arange(10), sweep_per_digit)  # (B,) requested digits
    settings = sweep_settings(ref, guidance_values, q)
    section(f"5. sampling sweep: {sweep_per_digit} clip(s) per digit, {len(settings)} settings, seed {args.seed}, "
            f"Griffin-Lim {gl_iters} iterations")
    n_fake = 10 * embed_per_digit
    fake_digits = np.repeat(np.arange(10), embed_per_digit)
    t0 = time.perf_counter()
    gen = generate_clips(bundle, fake_digits, seed=args.seed, gl_iters=gl_iters, **ref)  # also for section 7
    print(f"   {'reference: ' + describe(ref):<40} {n_fake} clips in {time.perf_counter() - t0:.1f} s; the first "
          f"{sweep_per_digit} of each digit make its row")
    rows, results = [], {}
    for i, st in enumerate(settings):
        label = ("reference: " if i == 0 else "") + describe(st)
        t0 = time.perf_counter()
        if i == 0:
            pick = np.array(first_per_digit(fake_digits, sweep_per_digit))   # ordered like want
            res = {key: v[pick] if isinstance(v, np.ndarray) and len(v) == n_fake else v for key, v in gen.items()}
        else:
            res = generate_clips(bundle, want, seed=args.seed, gl_iters=gl_iters, **st)
            print(f"   {label:<40} {len(want)} clips in {time.perf_counter() - t0:.1f} s")
        results[label] = res
        rows.append(summarise(label, res, res["tokens"], K, want))
    if real is not None:
        rx, rd, _ = real
        sub = np.array(first_per_digit(rd, sweep_per_digit))   # as many real clips per digit as generated
        rtok = encode_logmel(vparams, vcfg, vnorm, backend.asarray(rx[sub]))  # (n, h, w) the encoder's codes
        rtok = to_numpy(rtok)
        rows.append(summarise("real (recording)", evaluate.judge(bundle.classifier, rx[sub], want=rd[sub]),
                              rtok, K, rd[sub]))
        _, rheard = evaluate.round_trip(rx[sub], bundle.features, n_iter=gl_iters, seed=args.seed)
        rows.append(summarise("real (after Griffin-Lim)", evaluate.judge(bundle.classifier, rheard, want=rd[sub]),
                              rtok, K, rd[sub]))
    print("\n   agree: share heard as the requested digit (chance 0.10); conf: mean top probability;")
    print(f"   H(heard): entropy of the heard digits (log2 10 = {np.log2(10):.2f} when all ten are heard equally);")
    print("   digit score: exp(E KL(p(y|x) || p(y))), up to 10; codes/grid: distinct codes in one 256-code grid;")
    print(f"   code ppl: perplexity of code usage over all grids of the setting (max K={K}); codes used: of K.\n")
    print_table(rows)
    by_label = {r["label"]: r for r in rows}
    ref_row = rows[0]
    print()
    for s in (0.0, 1.0):
        other = by_label.get(describe({**ref, "guidance": s}))
        if other is not None and s != ref["guidance"]:
            print(f"   s={s:g} -> s={ref['guidance']:g}: agreement {other['agreement']:.2f} -> "
                  f"{ref_row['agreement']:.2f}, "
                  f"codes per grid {other['codes_per_grid']:.1f} -> {ref_row['codes_per_grid']:.1f}"
                  + ("  (s=0 ignores the digit: agreement near chance is expected)" if s == 0 else ""))
    if real is None:
        print(f"\n   ({FSDD_ENV} is not set: no real rows to compare with)")
    print(f"\n   With {len(want)} clips per row one clip moves agreement by {1 / len(want):.2f}: "
          "small differences are noise.")

    section("6. figures and sound")
    ref_label = next(iter(results))
    ref_res = results[ref_label]
    gi = first_per_digit(want)
    mel_rows = []
    if real is not None:
        mel_rows.append(("real test clip", real[0][first_per_digit(real[1])]))
    mel_rows += [("decoder output", ref_res["logmel"][gi]), ("after Griffin-Lim", ref_res["heard"][gi])]
    plot_mel_rows(out / "generated_vs_real.png", mel_rows, list(range(10)),
                  f"{describe(ref)}: the classifier heard "
                  + " ".join(f"{want[i]}->{ref_res['pred'][i]}" for i in gi))
    plot_token_grids(out / "token_grids.png", results, want, K)
    plot_settings(out / "sampling_settings.png", rows)
    plot_step(out / "sampling_step.png", curves, STEP_SHOWN)
    for i in gi:
        audio.save_wav(out / f"digit{want[i]}.wav", ref_res["waves"][i], bundle.features.sr)
    print(f"   {out / 'generated_vs_real.png'}  one column per digit ({describe(ref)})")
    print(f"   {out / 'token_grids.png'}  code grids of {GRID_COLUMNS} digits under each setting")
    print(f"   {out / 'sampling_settings.png'}  the table above as bars")
    print(f"   {out / 'sampling_step.png'}  the distributions of section 4 for digit 0")
    print(f"   {out / 'digit0.wav'} .. digit9.wav  one clip per digit ({describe(ref)})")

    section(f"7. real vs generated in the classifier's 32-d embedding space ({n_fake} generated clips)")
    fake = gen["embed"]                                                # (n_fake, E)
    print(f"   the {n_fake} clips of section 5 at {describe(ref)}; the classifier agrees with the request for "
          f"{gen['accuracy']:.2f} of them")
    saved = {"fake": fake, "fake_digits": fake_digits, "setting": json.dumps(ref),
             "checkpoint": str(Path(args.checkpoint).resolve())}
    if real is None:
        print(f"   {FSDD_ENV} is not set, so there are no real clips: TopP&R, PRDC and the Frechet distance compare")
        print(f"   two sets and are skipped here. Set {FSDD_ENV}=/path/to/fsdd to see them.")
    else:
        rx, rd, rtrain = real
        real_emb = evaluate.judge(bundle.classifier, rx)["embed"]        # (N, E) test clips
        ref_emb = evaluate.judge(bundle.classifier, rtrain)["embed"]     # (n_fake, E) train clips
        saved.update(real=real_emb, real_digits=rd, real_ref=ref_emb)
        E = fake.shape[1]
        k = 5 * E
        print(f"   real: {len(real_emb)} test clips. Reference: {len(ref_emb)} train clips, as many as generated,")
        print("   scored the same way; the classifier was trained on them, so real-vs-real is an optimistic floor.")
        print(f"   TopP&R in {E}-d uses k = 5*{E} = {k} neighbours: its bandwidth rests on the N - k = "
              f"{len(real_emb) - k} (real) and {n_fake - k} (generated)")
        print("   rows that have k later neighbours (lesson 09 writes the rule out); few rows, a coarse estimate.")
        keys = ["TopP", "TopR", "TopF1", "precision", "recall", "density", "coverage", "Frechet"]
        print(f"\n   {'':<26}" + "".join(f"{k_:>10}" for k_ in keys))
        for name, b in [("real test vs generated", fake), ("real test vs real train", ref_emb)]:
            r = metrics.top_pr(real_emb, b, rng=np.random.RandomState(args.seed))
            p = metrics.prdc(real_emb, b, k=PRDC_K)
            vals = [r.fidelity, r.diversity, r.top_f1, p["precision"], p["recall"], p["density"], p["coverage"],
                    metrics.frechet_distance(real_emb, b)]
            print(f"   {name:<26}" + "".join(f"{v:>10.3f}" for v in vals))
        sizes = [n for n in FRECHET_SIZES if n < n_fake] + [n_fake]
        pick = np.random.RandomState(args.seed).permutation(len(ref_emb))
        fds = [metrics.frechet_distance(real_emb, ref_emb[pick[:n]]) for n in sizes]
        print(f"\n   Frechet distance fits a Gaussian to each set: {E} means and {E * (E + 1) // 2} covariance "
              f"entries in {E}-d.")
        print("   Real test clips against random subsets of real train clips (the same two distributions at every")
        print("   size), for a growing number n of train clips:")
        print("   " + "   ".join(f"n={n}: {fd:.1f}" for n, fd in zip(sizes, fds)))
        print("   Same two distributions, yet the number changes with n: the estimate is biased (roughly in")
        print(f"   proportion to 1/n), and with n <= {E} the covariance is singular. Compare Frechet distances only")
        print("   at equal sizes and with many more clips than dimensions: both rows of the table above compare")
        print(f"   {len(real_emb)} test clips with {n_fake} clips.")
    np.savez(out / "embeddings.npz", **saved)
    print(f"\n   wrote {out / 'embeddings.npz'}: arrays {', '.join(sorted(saved))}")
    print(f"   next: python \"lessons/09_topp&r.py\" --embeddings {out / 'embeddings.npz'}")

    section("Try this")
    print("   1. python lessons/08_generate.py --quick --guidance 1   guidance off, the conditional prior alone:")
    print("      compare agree, conf and codes/grid with the default run, and the embedding scores of section 7.")
    print("   2. python lessons/08_generate.py --quick --sweep-guidance 0 1 2 4 8   s=0 ignores the digit (agree near")
    print("      0.1). Does agreement keep rising with s? Guidance extrapolates past both priors: look for the s")
    print("      where agreement peaks and what codes/grid and the sound (digitN.wav with --guidance 8) do beyond it.")
    print("   3. python lessons/08_generate.py --quick --temperature 1.5 --top-p 0.8   a flat distribution, then its")
    print("      tail cut off: watch section 4's 'codes p>0' and how agreement holds up in section 5. (The full run")
    print("      also sweeps T = 1 and 1.3, top-k 16 and top-p 0.9 one at a time.)")
    print("   4. In step_probs, remove the line that renormalises the nucleus: section 4's max |p - library| is no")
    print("      longer 0 for the top-p row, yet every pick stays the same. Why? (see u * cdf[:, -1:] in draw_token)")
    print("   5. Guidance from one model: python -m minivq.train prior --tokens minivq/pretrained/tokens.npz --out")
    print("      out/prior_null --p-uncond 0.1 --epochs 4, then python lessons/08_generate.py --quick --prior")
    print("      out/prior_null/prior.npz. Section 1 says where l_u comes from now (the null class); compare")
    print("      section 5's agreement at s = 1 and s = 3 with the shipped pair of priors.")
    print(f"\ndone in {time.perf_counter() - t_start:.1f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
