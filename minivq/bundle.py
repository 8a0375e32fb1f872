"""Model bundles: the folder of trained weights that python -m minivq.generate loads, and
the library function that makes and judges clips with one.

A bundle folder holds manifest.json (format, feature settings, sampling defaults, byte count
and sha256 of each file), vqvae.npz, prior_class.npz and/or prior_none.npz, classifier.npz,
and one JSON model card per weights file. ``export_bundle`` writes one from a pipeline run;
``load_bundle`` reads and cross-checks it; ``generate_clips`` samples token grids from its
prior, decodes them with its VQ-VAE, turns them into sound and asks its classifier what it hears.

Size letters: B clips, h/w token grid, M mel bands, T frames.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivq import __version__, audio, checkpoint, cli, evaluate
from minivq.classifier import load_classifier
from minivq.listener import load_listener
from minivq.sampling import sample
from minivq.transformer import PRIOR_CKPT, load_prior
from minivq.vqvae import decode_logmel, load_vqvae

BUNDLE_FORMAT = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "pretrained"  # the shipped bundle
PRIOR_FILES = {"class": "prior_class.npz", "none": "prior_none.npz"}
LISTENER_FILE = "listener.npz"  # the second judge (optional in a bundle)
SAMPLING_DEFAULTS = dict(temperature=1.0, top_k=None, top_p=None, guidance=1.0)


def prior_folder(cond, cr):
    """The sub-folder of a pipeline run that holds its prior over CR ``cr`` tokens: prior_{cond}
    at CR=16 (the name since the first pipeline, so existing runs are reused), else prior_{cond}_cr{cr}."""
    return f"prior_{cond}" if cr == 16 else f"prior_{cond}_cr{cr}"


# ----------------------------------------------------------------------------- load and use
@dataclass
class Bundle:
    vqvae: tuple        # (params, VQVAEConfig, norm)
    prior: tuple        # (params, GPTConfig, meta)
    classifier: tuple   # (params, ClassifierConfig, norm)
    features: audio.FeatureConfig
    manifest: dict
    guide: tuple = None  # (params, GPTConfig, meta) of an unconditional prior, for guidance (without one,
    #                      a prior with a null class guides itself)
    listener: tuple = None  # (params, ListenerConfig, norm) of the second judge, when the bundle ships one


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
    listener = None
    if LISTENER_FILE in manifest.get("files", {}):  # older bundles have no second judge
        listener = load_listener(folder / LISTENER_FILE)
    verify_files(folder, manifest, ["vqvae.npz", prior_file.name, "classifier.npz"]
                 + ([PRIOR_FILES["none"]] if guide is not None else [])
                 + ([LISTENER_FILE] if listener is not None else []))
    return Bundle(vq, prior, clf, feats, manifest, guide, listener)


def read_manifest(mpath):
    """Read and check a bundle's manifest.json -> dict; every problem is one ValueError naming it.
    Required: format, features (a FeatureConfig record). Optional: files {name: {bytes, sha256}},
    sampling (defaults for generate_clips), features_key."""
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


def generate_clips(bundle, digits=None, n=None, temperature=1.0, top_k=None, top_p=None, seed=0, gl_iters=64,
             guidance=1.0, speakers=None):
    """Sample token grids from the bundle's prior, decode them to log-mel, vocode them and judge
    the sound with its classifier. digits: (B,) requested digits (conditional bundle) or None with
    n samples (unconditional). Returns dict: tokens (B, h, w), logmel (B, M, T) decoder output,
    waves (B, n_samples), heard (B, M, T) log-mel of the waves, and the classifier's verdict
    (probs, pred, confidence, embed; accuracy/confusion when digits are given); when the bundle
    ships the second judge, "listener" holds its verdict on the waves (the same keys).
    guidance != 1 samples with classifier-free guidance from the bundle's unconditional prior, or,
    when the bundle has none and its conditional prior has a null class, from that prior fed
    the null class. speakers: (B,) speaker ids or names for a digit+speaker prior (sampling.sample)."""
    pparams, pcfg, _ = bundle.prior
    vparams, vcfg, vnorm = bundle.vqvae
    _check_generate_args(digits, n, temperature, top_k, top_p, seed, gl_iters, guidance)
    if digits is not None:
        digits = np.asarray(digits, dtype=np.int64).reshape(-1)
        n = len(digits)
    guide = None
    if guidance != 1.0 and digits is not None:
        if bundle.guide is not None:
            guide = bundle.guide[:2]
        elif not pcfg.null_class:  # a prior with a null class guides itself (sampling.sample, guide=None)
            raise ValueError(f"guidance {guidance} needs an unconditional prior ({PRIOR_FILES['none']}) in the bundle "
                             "or a conditional prior trained with a null class")
    tokens = sample(pparams, pcfg, n, cond=digits, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed, guide=guide, guidance=guidance, speaker=speakers)  # (B, T)
    tokens = pcfg.to_grid(tokens, vcfg.grid, vcfg.grid)  # (B, h, w)
    logmel = decode_logmel(vparams, vcfg, vnorm, tokens)  # (B, M, T)
    waves, heard = evaluate.round_trip(logmel, bundle.features, n_iter=gl_iters, seed=seed)
    verdict = evaluate.judge(bundle.classifier, heard, want=digits)
    out = {"tokens": tokens, "logmel": logmel, "waves": waves, "heard": heard, **verdict}
    if bundle.listener is not None:  # the second judge hears the same waves
        out["listener"] = evaluate.listen(bundle.listener, waves, bundle.features.sr, want=digits)
    return out


def _check_generate_args(digits, n, temperature, top_k, top_p, seed, gl_iters, guidance):
    """The checks of generate_clips()'s numbers (the same rules as the command line's)."""
    cli.check_sampling(temperature, top_k, top_p, guidance)
    cli.nonneg_int.check("seed", seed)
    cli.positive_int.check("gl_iters", gl_iters)
    if digits is None:
        cli.positive_int.check("n", n)


# ----------------------------------------------------------------------------- export
def export_bundle(out, dest, cr, conds, feat_cfg, res, data):
    """Copy a pipeline run's final weights (no optimiser state) from ``out`` into ``dest`` with
    manifest.json and one JSON card each (the model card: data, settings, metrics from ``res``).
    Returns the manifest's files record {name: {bytes, sha256}}."""
    out, dest = Path(out), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    src = {"vqvae.npz": out / f"vqvae_cr{cr}" / "vqvae.npz", "classifier.npz": out / "classifier" / "classifier.npz"}
    src.update({PRIOR_FILES[c]: out / prior_folder(c, cr) / PRIOR_CKPT for c in conds})
    common = {"data": {"name": "Free Spoken Digit Dataset (FSDD)", "path_used": str(Path(data).resolve()),
                       "license": "CC BY-SA 4.0", "credit": "Zohar Jackson and the FSDD contributors",
                       "split": "official (takes 0-4 test, 5-49 train)", "features": feat_cfg.to_dict()},
              "minivq": __version__, "pipeline_command": " ".join(["python -m minivq.pipeline"] + sys.argv[1:]),
              "pipeline_settings": res["settings"]}
    files = {}
    for name, path in src.items():
        ck = checkpoint.load(path)
        checkpoint.save(dest / name, ck["params"], config=ck["config"], extra=ck["extra"],
                        meta={k: v for k, v in ck["meta"].items() if k not in ("step_loss", "rng_state")})
        files[name] = {"bytes": (dest / name).stat().st_size, "sha256": checkpoint.file_sha256(dest / name)}
        card = {"file": name, "config": ck["config"], **common}
        card["metrics"] = _card_metrics(name, out, cr, res)
        checkpoint.write_json(dest / name.replace(".npz", ".json"), card)
    checkpoint.write_json(dest / "manifest.json", {"format": BUNDLE_FORMAT, "minivq": __version__, "files": files,
                                                   "features": feat_cfg.to_dict(), "features_key": feat_cfg.key(),
                                                   "sampling": res["settings"]["sampling"]})
    return files


def add_listener(dest, src, data, command):
    """Put the second judge (a listener.npz written by ``python -m minivq.train listener``) into the
    bundle folder ``dest``: weights stored as float16 (load_listener reads them back as float32),
    a card listener.json (its trainer's metrics, the data, the command that trained it), and its
    bytes and sha256 in manifest.json. Returns the manifest's record of the file."""
    dest, src = Path(dest), Path(src)
    ck = checkpoint.load(src, kind="listener")
    checkpoint.save(dest / LISTENER_FILE, ck["params"], config=ck["config"], extra=ck["extra"], dtype=np.float16,
                    meta={"kind": "listener", **{k: v for k, v in ck["meta"].items() if k != "kind"}})
    m = checkpoint.read_json(src.parent / "metrics.json", "metrics file")
    card = {"file": LISTENER_FILE, "config": ck["config"], "minivq": __version__, "command": command,
            "data": {"name": "Free Spoken Digit Dataset (FSDD)", "path_used": str(Path(data).resolve()),
                     "license": "CC BY-SA 4.0", "credit": "Zohar Jackson and the FSDD contributors",
                     "split": "official (takes 0-4 test, 5-49 train)", "input": "recordings only (waveforms)"},
            "metrics": {k: m[k] for k in ("test_accuracy", "train_accuracy", "per_digit_accuracy", "n_params",
                                          "train_seconds", "epochs") if k in m},
            "stored_as": "float16 (read back as float32)"}
    checkpoint.write_json(dest / "listener.json", card)
    manifest = read_manifest(dest / "manifest.json")
    record = {"bytes": (dest / LISTENER_FILE).stat().st_size, "sha256": checkpoint.file_sha256(dest / LISTENER_FILE)}
    manifest.setdefault("files", {})[LISTENER_FILE] = record
    checkpoint.write_json(dest / "manifest.json", manifest)
    return record


def _card_metrics(name, out, cr, res):
    """The metrics the model card of weights file ``name`` records: its trainer's, and what the
    pipeline's evaluation measured with it."""
    if name == "classifier.npz":
        m = checkpoint.read_json(out / "classifier" / "metrics.json", "metrics file")
        return {k: m[k] for k in ("test_accuracy", "train_accuracy", "train_seconds", "epochs") if k in m}
    if name == "vqvae.npz":
        m = checkpoint.read_json(out / f"vqvae_cr{cr}" / "metrics.json", "metrics file")
        m = {k: v for k, v in m.items() if not isinstance(v, (list, dict))}
        m["classifier_accuracy_on_reconstructions"] = res["reconstruction"]["accuracy"]
        return m
    cond = "class" if "class" in name else "none"
    m = checkpoint.read_json(out / prior_folder(cond, cr) / "metrics.json", "metrics file")
    m = {k: m[k] for k in ("test_nats", "test_bits", "train_nats", "train_bits", "elapsed_s", "n_params") if k in m}
    g = res.get(f"generated_{cond}", {})
    m["classifier_accuracy_on_generations"] = g.get("accuracy")
    m["heard_entropy_bits"] = g.get("heard_entropy_bits")
    return m
