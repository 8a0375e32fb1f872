"""Lesson 05: a VQ-VAE turns each log-mel spectrogram into a grid of codebook indices.

Trains two VQ-VAEs on FSDD (small settings), one per compression ratio:
    CR=16: 64x64 log-mel -> 16x16 = 256 tokens (each token stands for a 4x4 patch)
    CR=4 : 64x64 log-mel -> 32x32 = 1,024 tokens (each token stands for a 2x2 patch)
then shows test inputs next to both reconstructions, the token grids as images (one colour
per code), and writes Griffin-Lim WAVs of input and reconstructions so you can listen to
what the compression removes. Already trained models can be shown instead (--cr16/--cr4).

Run: python lessons/05_vqvae.py --data $MINIVQ_FSDD [--quick] [--out DIR]
"""
import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import audio  # noqa: E402
from minivq import train_vqvae as T  # noqa: E402  (this lesson trains)
from minivq import vqvae as V  # noqa: E402
from minivq.data import load_features  # noqa: E402
from minivq.quantizer import usage_stats  # noqa: E402
from minivq.vqvae_report import reconstruction_stats  # noqa: E402

MAX_PER_DIGIT = 60    # training clips per digit (600 of FSDD's 2,700); test likewise capped
EPOCHS = 4            # passes over them
BATCH = 32
HIDDEN = 128          # trunk channels (the reference model)
K = 512               # codebook size
QUICK = dict(max_per_digit=12, epochs=5, batch=16, hidden=32, K=128)  # --quick: seconds, not minutes
N_SHOW = 4            # test clips in the figure
N_WAV = 2             # test clips written as WAVs
SEED = 0


def get_model(cr, feats, s, out, path):
    """Load a trained vqvae.npz (path) or train one with the lesson's settings."""
    if path:
        params, cfg, norm = V.load_vqvae(path)
        print(f"CR={cr}: loaded {path}")
        return params, cfg, norm
    cfg = V.VQVAEConfig(cr=cr, hidden=s["hidden"], K=s["K"], ch1=min(64, s["hidden"]))
    tcfg = T.TrainConfig(epochs=s["epochs"], batch_size=s["batch"], seed=SEED, log_every=30)
    print(f"CR={cr}: training {s['epochs']} epochs on {len(feats.train.x)} clips "
          f"({cfg.grid}x{cfg.grid} tokens, K={cfg.K}) ...")
    res = T.train(cfg, feats, out / f"cr{cr}", tcfg, finish=False)
    return res["params"], cfg, res["norm"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder (or set MINIVQ_FSDD)")
    ap.add_argument("--quick", action="store_true", help="tiny model, 12 clips per digit, 5 epochs")
    ap.add_argument("--out", default="out/lesson05", help="output folder")
    ap.add_argument("--cr16", default=None, help="show this trained CR=16 vqvae.npz instead of training")
    ap.add_argument("--cr4", default=None, help="show this trained CR=4 vqvae.npz instead of training")
    args = ap.parse_args()
    if not args.data:
        ap.error("no data folder: pass --data PATH or set MINIVQ_FSDD")
    s = dict(QUICK) if args.quick else dict(max_per_digit=MAX_PER_DIGIT, epochs=EPOCHS, batch=BATCH,
                                            hidden=HIDDEN, K=K)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    feats = load_features(args.data, max_per_digit=s["max_per_digit"], progress=False)
    print(f"data: {len(feats.train.x)} train / {len(feats.test.x)} test log-mels of shape {feats.train.x.shape[1:]}")

    # one clip per digit first, so the figure shows different words
    first = [int(np.flatnonzero(feats.test.digit == d)[0]) for d in range(10) if (feats.test.digit == d).any()]
    show = first[:N_SHOW]
    x = feats.test.x[show]  # (N_SHOW, 64, 64) raw log-mel
    results = {}
    for cr, path in ((16, args.cr16), (4, args.cr4)):
        params, cfg, norm = get_model(cr, feats, s, out, path)
        tokens, rec, mse, mse_raw = reconstruction_stats(params, cfg, norm, feats.test.x)
        st = usage_stats(tokens, cfg.K)
        bits = cfg.grid ** 2 * np.log2(cfg.K)
        print(f"CR={cr:2d}: {cfg.grid}x{cfg.grid} tokens = {bits:.0f} bits per clip (vs 64*64 floats); "
              f"test MSE {mse:.3f} (standardised) = {mse_raw:.2f} (log-mel units^2); "
              f"perplexity {st['perplexity']:.0f} of {cfg.K}, {st['active']:.0%} of codes used")
        results[cr] = {"tokens": tokens[show], "rec": rec[show], "mse": mse}

    fig, axes = plt.subplots(len(show), 5, figsize=(14, 2.6 * len(show)), squeeze=False)
    lo, hi = np.percentile(x, [1, 99.9])
    cols = [("input", x, "spec"), ("CR=16 recon", results[16]["rec"], "spec"), ("CR=16 tokens (16x16)",
            results[16]["tokens"], "tok"), ("CR=4 recon", results[4]["rec"], "spec"),
            ("CR=4 tokens (32x32)", results[4]["tokens"], "tok")]
    for r in range(len(show)):
        for c, (title, arr, kind) in enumerate(cols):
            ax = axes[r, c]
            if kind == "spec":
                ax.imshow(arr[r], origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            else:
                ax.imshow(arr[r], origin="lower", aspect="auto", cmap="tab20", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title)
        axes[r, 0].set_ylabel(f"digit {feats.test.digit[show[r]]}")
    fig.suptitle(f"VQ-VAE reconstructions: test MSE CR=16 {results[16]['mse']:.3f}, CR=4 {results[4]['mse']:.3f} "
                 "(standardised log-mel)")
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=80)
    plt.close(fig)

    for name, arr in (("input", x), ("cr16", results[16]["rec"]), ("cr4", results[4]["rec"])):
        waves = audio.mel_to_audio(arr[:N_WAV], feats.cfg)  # (N_WAV, n_samples)
        for i, w in enumerate(waves):
            audio.save_wav(out / f"clip{i}_{name}.wav", w, feats.cfg.sr)
    print(f"saved {out / 'reconstructions.png'} and {3 * N_WAV} WAVs (clip*_input/cr16/cr4.wav): "
          "all three go through the same Griffin-Lim, so differences are the VQ-VAE's")


if __name__ == "__main__":
    main()
