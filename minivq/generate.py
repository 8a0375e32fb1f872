"""Hear digits the model made: python -m minivq.generate [--digit 0-9|all] [--n N] ...

Loads a model bundle (default: the shipped weights in minivq/pretrained/), samples token grids
from the transformer prior (conditioned on the digit, or unconditionally with --uncond),
decodes them with the VQ-VAE into log-mel spectrograms, turns those into sound (mel inversion
+ Griffin-Lim), and asks the digit classifier what it hears. Writes one WAV per sample and a
PNG grid of their spectrograms, and prints a table: file, requested digit, classifier's
digit, confidence.

A bundle folder holds manifest.json, vqvae.npz, prior_class.npz (and/or prior_none.npz)
and classifier.npz; ``python -m minivq.pipeline`` exports one.
"""
import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivq import audio, checkpoint, cli, evaluate
from minivq.classifier import load_classifier
from minivq.sampling import sample
from minivq.transformer import load_prior
from minivq.vqvae import decode_logmel, load_vqvae
from minivq import outdir  # output folders: checked, locked, recorded

BUNDLE_FORMAT = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "pretrained"
PRIOR_FILES = {"class": "prior_class.npz", "none": "prior_none.npz"}
SAMPLING_DEFAULTS = dict(temperature=1.0, top_k=None, top_p=None, guidance=1.0)


@dataclass
class Bundle:
    vqvae: tuple        # (params, VQVAEConfig, norm)
    prior: tuple        # (params, GPTConfig, meta)
    classifier: tuple   # (params, ClassifierConfig, norm)
    features: audio.FeatureConfig
    manifest: dict
    guide: tuple = None  # (params, GPTConfig, meta) of an unconditional prior, for guidance


def load_bundle(folder, cond="class"):
    """Load and cross-check a model bundle; every problem is one clear ValueError/FileNotFoundError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath} is missing: {folder} is not a minivq model bundle "
                                "(python -m minivq.pipeline --export DIR writes one)")
    manifest = read_manifest(mpath)
    prior_file = folder / PRIOR_FILES[cond]
    if not prior_file.is_file():
        other = "without --uncond" if cond == "none" else "with --uncond"
        raise FileNotFoundError(f"{prior_file} is missing: this bundle has no {'unconditional' if cond == 'none' else 'conditional'} "
                                f"prior (try {other})")
    vq = load_vqvae(folder / "vqvae.npz")
    prior = load_prior(prior_file)
    clf = load_classifier(folder / "classifier.npz")
    vcfg, pcfg = vq[1], prior[1]
    if pcfg.n_code != vcfg.K or pcfg.context != vcfg.grid ** 2:
        raise ValueError(f"checkpoint versions do not match: the prior in {prior_file} models {pcfg.context} tokens "
                         f"of {pcfg.n_code} codes, the VQ-VAE makes {vcfg.grid ** 2} tokens of {vcfg.K} codes")
    if pcfg.cond != cond:
        raise ValueError(f"{prior_file} was trained with cond={pcfg.cond!r}, expected {cond!r}")
    feats = audio.FeatureConfig.from_dict(manifest["features"])
    if feats.key() != manifest.get("features_key", feats.key()):
        raise ValueError(f"{mpath}: feature settings do not match their recorded key")
    ccfg = clf[1]
    if (ccfg.n_mels, ccfg.n_frames) != (feats.n_mels, feats.n_frames) or vcfg.in_size != feats.n_mels:
        raise ValueError(f"checkpoint versions do not match: classifier expects {ccfg.n_mels}x{ccfg.n_frames}, "
                         f"VQ-VAE {vcfg.in_size}x{vcfg.in_size}, features are {feats.n_mels}x{feats.n_frames}")
    guide = None
    if cond == "class" and (folder / PRIOR_FILES["none"]).is_file():
        guide = load_prior(folder / PRIOR_FILES["none"])
        if (guide[1].n_code, guide[1].context, guide[1].order) != (pcfg.n_code, pcfg.context, pcfg.order):
            raise ValueError(f"checkpoint versions do not match: {PRIOR_FILES['none']} and {PRIOR_FILES['class']} "
                             "model different token grids or read them in different orders")
    verify_files(folder, manifest, ["vqvae.npz", prior_file.name, "classifier.npz"]
                 + ([PRIOR_FILES["none"]] if guide is not None else []))
    return Bundle(vq, prior, clf, feats, manifest, guide)


def read_manifest(mpath):
    """Read and check a bundle's manifest.json -> dict; every problem is one ValueError naming it.
    Required: format, features (a FeatureConfig record). Optional: files {name: {bytes, sha256}},
    sampling (defaults for generate), features_key."""
    manifest = checkpoint.read_json(mpath, what="bundle manifest")
    if not isinstance(manifest, dict):
        raise ValueError(f"{mpath} must hold a JSON object (format, features, files, ...), "
                         f"got a {type(manifest).__name__}")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{mpath} has bundle format {manifest.get('format')}; this minivq reads format {BUNDLE_FORMAT}")
    if not isinstance(manifest.get("features"), dict):
        raise ValueError(f"{mpath} lacks 'features', the feature settings the models were trained on "
                         "(an object such as {\"sr\": 8000, \"n_mels\": 64, ...})")
    try:
        audio.FeatureConfig.from_dict(manifest["features"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{mpath}: 'features' is not a valid feature record ({e})")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise ValueError(f"{mpath}: 'files' must map file names to {{\"bytes\": ..., \"sha256\": ...}}")
    sampling = manifest.get("sampling", {})
    if not isinstance(sampling, dict) or set(sampling) - set(SAMPLING_DEFAULTS):
        raise ValueError(f"{mpath}: 'sampling' must be an object with some of {sorted(SAMPLING_DEFAULTS)}")
    try:
        cli.check_sampling(**{**SAMPLING_DEFAULTS, **sampling})
    except ValueError as e:
        raise ValueError(f"{mpath}: bad sampling default: {e}")
    return manifest


def verify_files(folder, manifest, names):
    """Check that each file of ``names`` in ``folder`` is the one the manifest recorded: its
    byte count and sha256 (when recorded; manifests before sha256 have byte counts only)."""
    folder = Path(folder)
    files = manifest.get("files")
    if not files:  # a manifest that records no files (hand-made bundles): nothing to compare
        return
    for name in names:
        path, rec = folder / name, files.get(name)
        if rec is None:
            raise ValueError(f"{path} is not listed in {folder / 'manifest.json'}: it does not belong to this bundle")
        if "bytes" in rec and path.stat().st_size != rec["bytes"]:
            raise ValueError(f"{path} has {path.stat().st_size} bytes, the manifest records {rec['bytes']}: "
                             "it does not belong to this bundle (re-export the bundle or restore the file)")
        if "sha256" in rec and checkpoint.file_sha256(path) != str(rec["sha256"]).lower():
            raise ValueError(f"{path} does not match the sha256 in {folder / 'manifest.json'}: it does not belong "
                             "to this bundle (re-export the bundle or restore the file)")


def bundle_sampling(bundle):
    """Sampling defaults of a bundle: SAMPLING_DEFAULTS updated by its manifest's 'sampling'."""
    return {**SAMPLING_DEFAULTS, **bundle.manifest.get("sampling", {})}


def generate(bundle, digits=None, n=None, temperature=1.0, top_k=None, top_p=None, seed=0, gl_iters=64,
             guidance=1.0):
    """Sample and judge clips. digits: (B,) requested digits (conditional bundle) or None with
    n samples (unconditional). Returns dict: tokens (B, h, w), logmel (B, M, T) decoder output,
    waves (B, n_samples), heard (B, M, T) log-mel of the waves, and the classifier's verdict
    (probs, pred, confidence, embed; accuracy/confusion when digits are given).
    guidance != 1 samples with classifier-free guidance from the bundle's unconditional prior."""
    pparams, pcfg, _ = bundle.prior
    vparams, vcfg, vnorm = bundle.vqvae
    _check_generate_args(digits, n, temperature, top_k, top_p, seed, gl_iters, guidance)
    if digits is not None:
        digits = np.asarray(digits, dtype=np.int64).reshape(-1)
        n = len(digits)
    guide = None
    if guidance != 1.0 and digits is not None:
        if bundle.guide is None:
            raise ValueError(f"guidance {guidance} needs an unconditional prior ({PRIOR_FILES['none']}) in the bundle")
        guide = bundle.guide[:2]
    tokens = sample(pparams, pcfg, n, cond=digits, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed, guide=guide, guidance=guidance)  # (B, T)
    tokens = pcfg.to_grid(tokens, vcfg.grid, vcfg.grid)  # (B, h, w)
    logmel = decode_logmel(vparams, vcfg, vnorm, tokens)  # (B, M, T)
    waves, heard = evaluate.round_trip(logmel, bundle.features, n_iter=gl_iters, seed=seed)
    verdict = evaluate.judge(bundle.classifier, heard, want=digits)
    return {"tokens": tokens, "logmel": logmel, "waves": waves, "heard": heard, **verdict}


def _check_generate_args(digits, n, temperature, top_k, top_p, seed, gl_iters, guidance):
    """The checks of generate()'s numbers (the same rules as the command line's)."""
    cli.check_sampling(temperature, top_k, top_p, guidance)
    cli.nonneg_int.check("seed", seed)
    cli.positive_int.check("gl_iters", gl_iters)
    if digits is None:
        cli.positive_int.check("n", n)


def parse_digits(text, n):
    """'all' -> 0..9 each n times; '7' -> n sevens. Anything else is a ValueError."""
    if text == "all":
        return np.repeat(np.arange(10), n)
    if text.isdigit() and len(text) == 1:
        return np.full(n, int(text))
    raise ValueError(f"--digit must be a single digit 0-9 or 'all', got {text!r}")


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
                   help="classifier-free guidance scale with the bundle's unconditional prior (1: off; "
                        "default: the bundle's)")
    p.add_argument("--seed", type=cli.nonneg_int, default=0, help="sampling and Griffin-Lim seed")
    p.add_argument("--out", default="samples", help="output folder for WAVs and the PNG grid")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model bundle folder")
    p.add_argument("--uncond", action="store_true", help="sample from the unconditional prior")
    p.add_argument("--gl-iters", type=cli.positive_int, default=64, help="Griffin-Lim iterations")
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
        res = generate(bundle, digits, n=10 * a.n if a.uncond else None, seed=a.seed, gl_iters=a.gl_iters, **kw)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, titles = [], []
    for i, (w, pred, conf) in enumerate(zip(res["waves"], res["pred"], res["confidence"])):
        want = "-" if digits is None else str(digits[i])
        name = f"{'uncond' if digits is None else 'digit' + want}_{i:03d}.wav"
        audio.save_wav(out / name, w, bundle.features.sr)
        rows.append((name, want, int(pred), float(conf)))
        titles.append(f"{want}->{pred} ({conf:.2f})")
    evaluate.plot_spectrogram_grid(out / "spectrograms.png", res["heard"], titles,
                                   suptitle="generated clips: requested -> classifier's digit (confidence)")
    print(f"{'file':<20} {'requested':>9} {'classifier':>10} {'confidence':>10}")
    for name, want, pred, conf in rows:
        print(f"{name:<20} {want:>9} {pred:>10} {conf:>10.3f}")
    if digits is not None:
        print(f"classifier agrees on {int((res['pred'] == digits).sum())}/{len(digits)} clips")
    else:
        print(f"classifier's digits: {np.bincount(res['pred'], minlength=10).tolist()}")
    print(f"wrote {len(rows)} WAVs and spectrograms.png to {out}/ in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
