"""Lesson 08: making new digits with a trained model, and judging them.

    python lessons/08_generate.py [--quick] [--out out/lesson08] [--checkpoint DIR] [--seed S]

The whole generation path, each step a library call:
  1. class token      the digit d becomes the first token of the sequence (the prior's "prompt"),
  2. transformer      samples 256 code indices one at a time in raster order (row by row of a
                      16 x 16 grid); a KV cache keeps the keys/values of earlier positions, so
                      each new token costs one query against the cache (minivq.sampling.sample),
  3. VQ-VAE decoder   looks the codes up in the codebook and upsamples the 16 x 16 grid of
                      vectors to a 64 x 64 log-mel spectrogram (vqvae.decode_logmel),
  4. vocoder          log-mel -> linear magnitude (mel inversion) -> phase by Griffin-Lim ->
                      waveform (evaluate.round_trip, which also re-featurises the sound),
  5. classifier       a CNN trained on real recordings says which digit it hears
                      (evaluate.judge).
How the next code is drawn changes what comes out. We sweep a few sampling settings:
temperature (divide the logits: < 1 sharper, > 1 flatter), top-k (keep the k most likely
codes), top-p (keep the smallest set holding probability p). Every setting uses the same
seed, so the uniforms are the same and only the filtering differs.

With real clips, the last section also compares real and generated clips in the classifier's
embedding space (TopP&R, PRDC and Frechet distance; see lesson 09).
Figures: generated_vs_real.png, token_grids.png, sampling_settings.png; WAVs: digitD.wav
(one per digit, reference setting). With MINIVQ_FSDD set, embeddings.npz (real and generated
classifier embeddings) is written too, for  python "lessons/09_topp&r.py" --checkpoint OUT.
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
from minivq import audio, data, evaluate, metrics  # noqa: E402
from minivq.bundle import DEFAULT_CHECKPOINT, SAMPLING_DEFAULTS, generate_clips, load_bundle  # noqa: E402
from minivq.plots import plot_spectrogram_grid  # noqa: E402
from minivq.vqvae import encode_logmel  # noqa: E402

SEED = 0
PER_DIGIT = 5              # generated clips per digit and setting (--quick: QUICK_PER_DIGIT)
QUICK_PER_DIGIT = 2
REAL_PER_DIGIT = 5         # real test clips per digit for the comparison (--quick: QUICK_REAL_PER_DIGIT)
QUICK_REAL_PER_DIGIT = 2
GL_ITERS = 64              # Griffin-Lim iterations (--quick: QUICK_GL_ITERS)
QUICK_GL_ITERS = 32
# (label, temperature, top_k, top_p); the first row is the reference setting used for the
# spectrogram figure and the WAVs (the library's defaults: plain sampling at temperature 1).
SETTINGS = [
    ("T=1.0", SAMPLING_DEFAULTS["temperature"], SAMPLING_DEFAULTS["top_k"],
     SAMPLING_DEFAULTS["top_p"]),
    ("T=0.7", 0.7, None, None),
    ("T=1.3", 1.3, None, None),
    ("top-k 16", 1.0, 16, None),
    ("top-k 64", 1.0, 64, None),
    ("top-p 0.9", 1.0, None, 0.9),
]
QUICK_SETTINGS = ["T=1.0", "T=0.7", "top-p 0.9"]
GRID_COLUMNS = 5           # samples per row in token_grids.png
FSDD_ENV = "MINIVQ_FSDD"


def section(title):
    print("\n" + title + "\n" + "-" * len(title))


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
    head = f"{'setting':<22}" + " ".join(f"{name:>{len(fmt.format(0))}}" for _, name, fmt in COLUMNS)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['label']:<22}" + " ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS))


def load_real(bundle, per_digit):
    """Real test clips (x (N, M, T), digits (N,)) from MINIVQ_FSDD, or None when it is unset."""
    root = os.environ.get(FSDD_ENV)
    if not root:
        return None
    feats = data.load_features(root, split="official", max_per_digit=per_digit, cfg=bundle.features,
                               progress=False)
    order = np.argsort(feats.test.digit, kind="stable")
    return feats.test.x[order], feats.test.digit[order]  # (N, M, T), (N,)


def first_per_digit(digits):
    """Index of the first clip of each digit 0-9 present in digits (N,)."""
    return [int(np.flatnonzero(digits == d)[0]) for d in range(10) if np.any(digits == d)]


def plot_generated_vs_real(path, ref, real, want):
    """One column per digit: real test clip, decoder output, what the classifier heard."""
    gi = first_per_digit(want)
    mels, titles = [], []
    if real is not None:
        rx, rd = real
        ri = first_per_digit(rd)
        mels += [rx[i] for i in ri]
        titles += [f"real {rd[i]}" for i in ri]
    mels += [ref["logmel"][i] for i in gi]
    titles += [f"generated {want[i]}" for i in gi]
    mels += [ref["heard"][i] for i in gi]
    titles += [f"heard {want[i]}->{ref['pred'][i]} ({ref['confidence'][i]:.2f})" for i in gi]
    rows = "real test clip / " if real is not None else ""
    plot_spectrogram_grid(path, np.stack(mels), titles, ncols=len(gi),
                          suptitle=f"rows: {rows}decoder output / after Griffin-Lim "
                                   "(requested->classifier's digit, confidence)")


def plot_token_grids(path, results, want, K):
    """Sampled 16 x 16 code grids (raster order: row 0 left to right is tokens 0..15)."""
    gi = first_per_digit(want)[:GRID_COLUMNS]
    fig, axes = plt.subplots(len(results), len(gi), figsize=(1.7 * len(gi), 1.9 * len(results)),
                             squeeze=False)
    for r, (label, res) in enumerate(results.items()):
        for c, i in enumerate(gi):
            g = res["tokens"][i]  # (h, w)
            ax = axes[r, c]
            ax.imshow(g, cmap="nipy_spectral", vmin=0, vmax=K - 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"digit {want[i]}: {len(np.unique(g))} codes", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"sampled code grids (colour = code index 0..{K - 1})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_settings(path, rows):
    """The sweep table as bar charts, one panel per measure."""
    panels = [("agreement", "classifier agrees with request"), ("confidence", "mean confidence"),
              ("heard_entropy", "entropy of heard digits (bits)"), ("codes_per_grid", "distinct codes per grid")]
    labels = [r["label"] for r in rows]
    colours = ["0.6" if r["label"].startswith("real") else "C0" for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        ax.bar(range(len(rows)), [r[key] for r in rows], color=colours)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].axhline(0.1, color="k", lw=0.8, ls=":")  # chance: one digit in ten
    axes[1].set_ylim(0, 1)
    axes[2].axhline(np.log2(10), color="k", lw=0.8, ls="--")  # all ten digits heard equally often
    fig.suptitle("sampling settings (grey: real test clips for reference)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples, settings and Griffin-Lim iterations")
    ap.add_argument("--out", default="out/lesson08", help="output folder")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                    help="model bundle folder (manifest.json, vqvae.npz, prior_class.npz, classifier.npz)")
    ap.add_argument("--seed", type=int, default=SEED, help="sampling and Griffin-Lim seed")
    args = ap.parse_args()
    t_start = time.perf_counter()
    per_digit = QUICK_PER_DIGIT if args.quick else PER_DIGIT
    real_per_digit = QUICK_REAL_PER_DIGIT if args.quick else REAL_PER_DIGIT
    gl_iters = QUICK_GL_ITERS if args.quick else GL_ITERS
    settings = [s for s in SETTINGS if not args.quick or s[0] in QUICK_SETTINGS]

    try:
        bundle = load_bundle(args.checkpoint, cond="class")
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        print(f"error: cannot load the model bundle: {e}", file=sys.stderr)
        return 1
    try:
        real = load_real(bundle, real_per_digit)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: cannot read the real clips from {FSDD_ENV}: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vparams, vcfg, vnorm = bundle.vqvae
    pcfg = bundle.prior[1]
    K = vcfg.K

    section("1. the model bundle")
    print(f"   {args.checkpoint}")
    print(f"   prior: {pcfg.n_layer} blocks, width {pcfg.d_model}, {pcfg.n_head} heads, context {pcfg.context} "
          f"tokens, {pcfg.n_code} codes, conditioned on the digit ({pcfg.cond})")
    print(f"   VQ-VAE: {vcfg.grid} x {vcfg.grid} grid of codes from a codebook of K={K} vectors of size {vcfg.D}")
    print(f"   features: {bundle.features.n_mels} mel bands x {bundle.features.n_frames} frames "
          f"at {bundle.features.sr} Hz")

    section("2. the path from a digit to a sound")
    print("   digit d -> class token (the first token of the sequence)")
    print(f"   -> transformer draws {pcfg.context} codes one by one, row by row of the {vcfg.grid} x {vcfg.grid} "
          "grid; the KV cache keeps earlier keys/values so each step is one query")
    print(f"   -> VQ-VAE decoder: codes -> codebook vectors -> {bundle.features.n_mels} x "
          f"{bundle.features.n_frames} log-mel")
    print(f"   -> mel inversion + Griffin-Lim ({gl_iters} iterations) -> {bundle.features.n_samples} samples of audio")
    print("   -> featurised again exactly like a recording -> classifier: which digit is heard?")

    want = np.repeat(np.arange(10), per_digit)  # (B,) requested digits
    section(f"3. sampling sweep: {per_digit} clip(s) per digit, {len(settings)} settings, seed {args.seed}")
    rows, results = [], {}
    for label, temperature, top_k, top_p in settings:
        t0 = time.perf_counter()
        res = generate_clips(bundle, want, temperature=temperature, top_k=top_k, top_p=top_p,
                                seed=args.seed, gl_iters=gl_iters)
        results[label] = res
        rows.append(summarise(label, res, res["tokens"], K, want))
        print(f"   {label:<10} temperature={temperature}, top_k={top_k}, top_p={top_p}: "
              f"{len(want)} clips in {time.perf_counter() - t0:.1f} s")

    if real is None:
        print(f"\n   note: {FSDD_ENV} is not set, so there are no real clips to compare with; "
              f"set {FSDD_ENV}=/path/to/fsdd to add them")
    else:
        rx, rd = real
        # The same measures on real test recordings: straight from the file (the classifier's
        # home ground) and after the same Griffin-Lim round trip the generated clips went through,
        # which is the best a perfect prior + decoder could score here.
        rtok = encode_logmel(vparams, vcfg, vnorm, rx)  # (N, h, w) the codes the encoder picks
        real_verdict = evaluate.judge(bundle.classifier, rx, want=rd)
        rows.append(summarise("real (recording)", real_verdict, rtok, K, rd))
        _, rheard = evaluate.round_trip(rx, bundle.features, n_iter=gl_iters, seed=args.seed)
        rows.append(summarise("real (Griffin-Lim)", evaluate.judge(bundle.classifier, rheard, want=rd), rtok, K, rd))

    section("4. what the classifier hears, per setting")
    print("   agree: share of clips heard as the requested digit; conf: mean top probability;")
    print(f"   H(heard): entropy of the heard digits (log2 10 = {np.log2(10):.2f} when all ten are heard equally);")
    print("   digit score: exp(E KL(p(y|x) || p(y))), up to 10; codes/grid: distinct codes in one 256-token grid;")
    print(f"   code ppl: perplexity of code usage over all grids of the setting (max K={K}); codes used: of K.\n")
    print_table(rows)
    print("\n   Lower temperature / smaller top-k or top-p concentrate the draws on likely codes: fewer distinct")
    print("   codes per grid and usually clearer digits; higher temperature spreads them out (more variety,")
    print("   more noise). A weakly trained model shows little of this; the trend is what to look for.")

    section("5. figures and sound")
    ref_label = settings[0][0]
    ref = results[ref_label]
    plot_generated_vs_real(out / "generated_vs_real.png", ref, real, want)
    plot_token_grids(out / "token_grids.png", results, want, K)
    plot_settings(out / "sampling_settings.png", rows)
    for i in first_per_digit(want):
        audio.save_wav(out / f"digit{want[i]}.wav", ref["waves"][i], bundle.features.sr)
    print(f"   generated_vs_real.png  one column per digit ({ref_label}): "
          f"{'real / ' if real is not None else ''}decoder output / heard")
    print(f"   token_grids.png        code grids of {min(GRID_COLUMNS, 10)} digits under each setting")
    print("   sampling_settings.png  the table above as bars")
    print(f"   digit0.wav .. digit9.wav  one clip per digit ({ref_label})")
    if real is not None:
        np.savez(out / "embeddings.npz", real=real_verdict["embed"], fake=ref["embed"])
        print("   embeddings.npz         classifier embeddings of real and generated clips; try")
        print(f"                          python \"lessons/09_topp&r.py\" --checkpoint {out}")
        section(f"6. real vs generated ({ref_label}) in the classifier's embedding space")
        dm = evaluate.distribution_metrics(real_verdict["embed"], ref["embed"], seed=args.seed)
        for key in ("fidelity", "diversity", "top_f1", "precision", "recall", "density", "coverage", "frechet"):
            if dm.get(key) is not None:
                print(f"   {key:<10} {dm[key]:.3f}")
        for key in ("top_pr_note", "prdc_note"):
            if key in dm:
                print(f"   note: {dm[key]} (raise PER_DIGIT and REAL_PER_DIGIT for more clips)")
    print(f"\ndone in {time.perf_counter() - t_start:.1f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
