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

Voice: ``--prior PATH`` samples from a prior.npz of your own instead of the bundle's conditional
prior (it must model the bundle's VQ-VAE tokens); with a digit+speaker prior (``python -m
minivq.train prior --speaker``) ``--speaker NAME`` (or ``all``) asks for that voice, and
``--speaker-judge PATH`` (a classifier trained with ``--target speaker``) reports which speaker
it hears in each clip:
    python -m minivq.generate --digit 7 --speaker theo --prior runs/prior_speaker/prior.npz

A bundle folder holds manifest.json, vqvae.npz, prior_class.npz (and/or prior_none.npz)
and classifier.npz (and optionally listener.npz); ``python -m minivq.pipeline`` exports one. This file is the command line
only: loading a bundle and making clips with it are minivq/bundle.py's (``load_bundle``,
``generate_clips``), the figure is minivq/plots.py's.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from minivq import audio, cli, evaluate, listening
from minivq.bundle import DEFAULT_CHECKPOINT, bundle_sampling, generate_clips, load_bundle
from minivq.classifier import load_classifier
from minivq.transformer import load_prior
from minivq.plots import plot_spectrogram_grid
from minivq import outdir  # output folders: checked, locked, recorded


def parse_digits(text, n):
    """'all' -> 0..9 each n times; '7' -> n sevens. Anything else is a ValueError."""
    if text == "all":
        return np.repeat(np.arange(10), n)
    if text.isdigit() and len(text) == 1:
        return np.full(n, int(text))
    raise ValueError(f"--digit must be a single digit 0-9 or 'all', got {text!r}")


def with_prior(bundle, path):
    """The bundle with its conditional prior replaced by the prior checkpoint at ``path`` (any
    class-conditional prior over the bundle's VQ-VAE tokens, e.g. a digit+speaker prior)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prior {path} does not exist (python -m minivq.train prior writes OUT/prior.npz)")
    prior = load_prior(path)
    pcfg, vcfg = prior[1], bundle.vqvae[1]
    if pcfg.cond != "class":
        raise ValueError(f"--prior {path} is unconditional (cond='none'); pass a class-conditional prior")
    if (pcfg.n_code, pcfg.context) != (vcfg.K, vcfg.grid ** 2):
        raise ValueError(f"--prior {path} models {pcfg.context} tokens of {pcfg.n_code} codes, the bundle's VQ-VAE "
                         f"makes {vcfg.grid ** 2} tokens of {vcfg.K} codes")
    guide = bundle.guide
    if guide is not None and guide[1].order != pcfg.order:
        guide = None  # the bundle's unconditional prior reads the grid in another order: it cannot guide this one
    return dataclasses.replace(bundle, prior=prior, guide=guide)


def speaker_plan(pcfg, speaker, digits, prior_name):
    """--speaker NAME|all and the requested digits -> (digits, speaker names) one per clip: each
    digit with each asked-for speaker (in the prior's order for 'all'). (digits, None) without
    --speaker. One-line ValueErrors: a prior without speakers, an unknown name (listing the known
    ones), or a speaker prior asked without --speaker."""
    if speaker is None:
        if pcfg.speakers:
            raise ValueError(f"the prior {prior_name} is conditioned on the speaker: pass --speaker NAME "
                             f"(one of {', '.join(pcfg.speakers)}) or --speaker all")
        return digits, None
    if not pcfg.speakers:
        raise ValueError(f"--speaker {speaker}: the prior {prior_name} has no speaker condition (train one with "
                         "python -m minivq.train prior --speaker and pass it with --prior PATH)")
    names = list(pcfg.speakers) if speaker == "all" else [speaker]
    if speaker != "all" and speaker not in pcfg.speakers:
        raise ValueError(f"--speaker: unknown speaker {speaker!r}; the prior knows {', '.join(pcfg.speakers)}")
    n_each = len(digits) // len(np.unique(digits))  # samples per digit
    d = np.repeat(np.unique(digits), len(names) * n_each)  # digit-major: every speaker for each digit
    s = np.tile(np.repeat(names, n_each), len(np.unique(digits)))  # (B,)
    return d, s


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
    p.add_argument("--prior", default=None,
                   help="a prior.npz to sample from instead of the bundle's conditional prior (e.g. a digit+speaker "
                        "prior from python -m minivq.train prior --speaker)")
    p.add_argument("--speaker", default=None,
                   help="the voice, for a digit+speaker prior: a speaker name the prior knows, or 'all' (every "
                        "speaker for each digit)")
    p.add_argument("--speaker-judge", default=None,
                   help="a speaker classifier (python -m minivq.train classifier --target speaker) that reports "
                        "which speaker it hears")
    p.add_argument("--html", action="store_true",
                   help="also write OUT/index.html: every clip with a player, its spectrogram and the judges' digits")
    t0 = time.perf_counter()
    try:
        a = p.parse_args(argv)  # numbers are checked by their cli types; a bad one is a ValueError
        if a.uncond and a.digit != "all":
            raise ValueError("--uncond samples without a digit; leave --digit at 'all'")
        digits = None if a.uncond else parse_digits(a.digit, a.n)
        if a.uncond and (a.speaker is not None or a.prior is not None):
            raise ValueError("--uncond samples the bundle's unconditional prior; --speaker and --prior need a "
                             "conditional one")
        outdir.hold(a.out, what="--out")  # writable and locked before sampling, until main returns
        bundle = load_bundle(a.checkpoint, cond="none" if a.uncond else "class")
        if a.prior is not None:
            bundle = with_prior(bundle, a.prior)
        speakers = None
        if not a.uncond:
            digits, speakers = speaker_plan(bundle.prior[1], a.speaker, digits, a.prior or "of the bundle")
        judge_s = None
        if a.speaker_judge is not None:
            if speakers is None:
                raise ValueError("--speaker-judge needs --speaker (and a digit+speaker prior)")
            judge_s = load_classifier(a.speaker_judge)
            if not judge_s[1].labels:
                raise ValueError(f"--speaker-judge {a.speaker_judge} is a digit classifier, not a speaker classifier "
                                 "(train one with python -m minivq.train classifier --target speaker)")
        kw = bundle_sampling(bundle)
        kw.update({k: v for k, v in (("temperature", a.temperature), ("top_k", a.top_k), ("top_p", a.top_p),
                                     ("guidance", a.guidance)) if v is not None})
        if a.uncond:
            kw["guidance"] = 1.0
        res = generate_clips(bundle, digits, n=10 * a.n if a.uncond else None, seed=a.seed, gl_iters=a.gl_iters,
                             speakers=speakers, **kw)
        heard_s = None if judge_s is None else evaluate.judge_speaker(judge_s, res["heard"], want=speakers)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, titles, files = [], [], []
    second = res.get("listener")  # the second judge's verdict, when the bundle ships one
    for i, (w, pred, conf) in enumerate(zip(res["waves"], res["pred"], res["confidence"])):
        want = "-" if digits is None else str(digits[i])
        voice = "" if speakers is None else f"_{speakers[i]}"
        name = f"{'uncond' if digits is None else 'digit' + want}{voice}_{i:03d}.wav"
        audio.save_wav(out / name, w, bundle.features.sr)
        files.append(out / name)
        rows.append((name, want, int(pred), float(conf)) + ((int(second["pred"][i]),) if second else ())
                    + ((str(heard_s["names"][i]),) if heard_s else ()))
        titles.append(f"{want}->{pred} ({conf:.2f})" + ("" if heard_s is None else f" {heard_s['names'][i]}"))
    plot_spectrogram_grid(out / "spectrograms.png", res["heard"], titles,
                          suptitle="generated clips: requested -> classifier's digit (confidence)")
    width = max(20, *(len(r[0]) for r in rows))
    print(f"{'file':<{width}} {'requested':>9} {'classifier':>10} {'confidence':>10}" + (f" {'listener':>8}" if second else "")
          + (f" {'speaker heard':>13}" if heard_s else ""))
    for name, want, pred, conf, *heard2 in rows:
        print(f"{name:<{width}} {want:>9} {pred:>10} {conf:>10.3f}" + "".join(f" {h:>8}" for h in heard2[:1 if second else 0])
              + "".join(f" {h:>13}" for h in heard2[1 if second else 0:]))
    judges = [("classifier", res)] + ([("listener (second judge)", second)] if second else [])
    summary = []
    for who, v in judges:
        if digits is not None:
            summary.append(f"{who} agrees on {int((v['pred'] == digits).sum())}/{len(digits)} clips")
        else:
            summary.append(f"{who}'s digits: {np.bincount(v['pred'], minlength=10).tolist()}")
    if heard_s is not None:
        summary.append(f"speaker classifier hears the requested speaker in {int((heard_s['names'] == speakers).sum())}"
                       f"/{len(speakers)} clips")
    print("\n".join(summary))
    if a.html:
        command = " ".join(["python -m minivq.generate"] + list(sys.argv[1:] if argv is None else argv))
        write_html(out, a, command, kw, res, digits, files, summary, bundle.features.sr)
    print(f"wrote {len(rows)} WAVs{', index.html' if a.html else ''} and spectrograms.png to {out}/ "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
