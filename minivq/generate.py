"""Hear digits the model made: python -m minivq.generate [--digit 0-9|all] [--n N] ...

Loads a model bundle (default: the shipped weights in minivq/pretrained/), samples token grids
from the transformer prior (conditioned on the digit, or unconditionally with --uncond),
decodes them with the VQ-VAE into log-mel spectrograms, turns those into sound (mel inversion
+ Griffin-Lim), and asks the digit classifier what it hears. Writes one WAV per sample and a
PNG grid of their spectrograms, and prints a table: file, requested digit, classifier's
digit, confidence, and the digit the second judge (the listener, which hears the waveform with
its own front end) hears when the bundle ships one. The classifier is the headline judge.
--html also writes index.html in the output folder: every clip in a grid (digits x samples)
with its player, spectrogram and both judges' verdicts; it opens from disk in a browser.

A bundle folder holds manifest.json, vqvae.npz, prior_class.npz (and/or prior_none.npz)
and classifier.npz (and optionally listener.npz); ``python -m minivq.pipeline`` exports one. This file is the command line
only: loading a bundle and making clips with it are minivq/bundle.py's (``load_bundle``,
``generate_clips``), the figure is minivq/plots.py's.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from minivq import audio, cli, listening
from minivq.bundle import DEFAULT_CHECKPOINT, bundle_sampling, generate_clips, load_bundle
from minivq.plots import plot_spectrogram_grid
from minivq import outdir  # output folders: checked, locked, recorded


def parse_digits(text, n):
    """'all' -> 0..9 each n times; '7' -> n sevens. Anything else is a ValueError."""
    if text == "all":
        return np.repeat(np.arange(10), n)
    if text.isdigit() and len(text) == 1:
        return np.full(n, int(text))
    raise ValueError(f"--digit must be a single digit 0-9 or 'all', got {text!r}")


def write_html(out, a, command, sampling, res, digits, files, summary, sr):
    """OUT/index.html: the settings, the judges' agreement, the spectrogram grid and every clip
    (rows: requested digits; unconditional clips in rows of ten), linking the WAVs just written."""
    kind = "unconditional" if digits is None else "conditional"
    settings = listening.Table(["setting", "value"], [["checkpoint", a.checkpoint], ["prior", kind], ["seed", a.seed],
                                                      *[[k, v] for k, v in sampling.items()],
                                                      ["Griffin-Lim iterations", a.gl_iters]])
    caption = "classifier's digit (confidence)" if digits is None else "requested -> classifier's digit (confidence)"
    gallery = listening.gallery_from_generation(f"{len(files)} {kind} clips", res, want=digits, sr=sr, files=files)
    section = listening.Section(gallery.title, paragraphs=summary, tables=[settings],
                                figures=[listening.Figure(out / "spectrograms.png", caption)], galleries=[gallery])
    listening.write_page(out / "index.html", "minivq generate: listen to the samples", [section],
                         intro=[command])


@outdir.scoped
def main(argv=None):
    p = cli.ArgumentParser(prog="python -m minivq.generate", description=__doc__.split("\n\n")[1],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--digit", default="all", help="digit to say (0-9) or 'all' (one set per digit)")
    p.add_argument("--n", type=cli.positive_int, default=1,
                   help="samples per requested digit (total with --uncond: 10*n)")
    p.add_argument("--temperature", type=cli.positive_float, default=None,
                   help="softmax temperature (default: the bundle's, else 1)")
    p.add_argument("--top-k", type=cli.positive_int, default=None, help="keep only the k most likely codes")
    p.add_argument("--top-p", type=cli.prob, default=None, help="nucleus: smallest set with this mass")
    p.add_argument("--guidance", type=cli.nonneg_float, default=None,
                   help="classifier-free guidance scale with the bundle's unconditional prior, or the conditional "
                        "prior's own null class when the bundle has none (1: off; default: the bundle's)")
    p.add_argument("--seed", type=cli.nonneg_int, default=0, help="sampling and Griffin-Lim seed")
    p.add_argument("--out", default="samples", help="output folder for WAVs and the PNG grid")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model bundle folder")
    p.add_argument("--uncond", action="store_true", help="sample from the unconditional prior")
    p.add_argument("--gl-iters", type=cli.positive_int, default=64, help="Griffin-Lim iterations")
    p.add_argument("--html", action="store_true",
                   help="also write OUT/index.html: every clip with a player, its spectrogram and the judges' digits")
    t0 = time.perf_counter()
    try:
        a = p.parse_args(argv)  # numbers are checked by their cli types; a bad one is a ValueError
        if a.uncond and a.digit != "all":
            raise ValueError("--uncond samples without a digit; leave --digit at 'all'")
        digits = None if a.uncond else parse_digits(a.digit, a.n)
        outdir.hold(a.out, what="--out")  # writable and locked before sampling, until main returns
        bundle = load_bundle(a.checkpoint, cond="none" if a.uncond else "class")
        kw = bundle_sampling(bundle)
        kw.update({k: v for k, v in (("temperature", a.temperature), ("top_k", a.top_k), ("top_p", a.top_p),
                                     ("guidance", a.guidance)) if v is not None})
        if a.uncond:
            kw["guidance"] = 1.0
        res = generate_clips(bundle, digits, n=10 * a.n if a.uncond else None, seed=a.seed, gl_iters=a.gl_iters, **kw)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, titles, files = [], [], []
    second = res.get("listener")  # the second judge's verdict, when the bundle ships one
    for i, (w, pred, conf) in enumerate(zip(res["waves"], res["pred"], res["confidence"])):
        want = "-" if digits is None else str(digits[i])
        name = f"{'uncond' if digits is None else 'digit' + want}_{i:03d}.wav"
        audio.save_wav(out / name, w, bundle.features.sr)
        files.append(out / name)
        rows.append((name, want, int(pred), float(conf)) + ((int(second["pred"][i]),) if second else ()))
        titles.append(f"{want}->{pred} ({conf:.2f})")
    plot_spectrogram_grid(out / "spectrograms.png", res["heard"], titles,
                          suptitle="generated clips: requested -> classifier's digit (confidence)")
    print(f"{'file':<20} {'requested':>9} {'classifier':>10} {'confidence':>10}" + (f" {'listener':>8}" if second else ""))
    for name, want, pred, conf, *heard2 in rows:
        print(f"{name:<20} {want:>9} {pred:>10} {conf:>10.3f}" + "".join(f" {h:>8}" for h in heard2))
    judges = [("classifier", res)] + ([("listener (second judge)", second)] if second else [])
    summary = []
    for who, v in judges:
        if digits is not None:
            summary.append(f"{who} agrees on {int((v['pred'] == digits).sum())}/{len(digits)} clips")
        else:
            summary.append(f"{who}'s digits: {np.bincount(v['pred'], minlength=10).tolist()}")
    print("\n".join(summary))
    if a.html:
        command = " ".join(["python -m minivq.generate"] + list(sys.argv[1:] if argv is None else argv))
        write_html(out, a, command, kw, res, digits, files, summary, bundle.features.sr)
    print(f"wrote {len(rows)} WAVs{', index.html' if a.html else ''} and spectrograms.png to {out}/ "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
