"""The whole pipeline on real data, then the paper's evaluation:

    python -m minivq.pipeline --data PATH --out DIR [--cr 16] [--no-uncond] [--quick] [--export DIR]

Stages, each in its own sub-folder of OUT, each reused when already finished with the same
settings and resumed when interrupted (a re-run picks up where the last one stopped):
  classifier/      digit classifier on the real training split
  vqvae_crCR/      VQ-VAE, then tokens.npz of the train/test clips
  prior_class/     class-conditional transformer prior over those tokens (at --cr 4: prior_class_cr4/)
  prior_none/      unconditional prior, the guide of classifier-free guidance; skipped with
                   --no-uncond (at --cr 4: prior_none_cr4/)
Evaluation (report.md, results.json, figures in OUT): classifier accuracy and confidence on
real test clips, on their Griffin-Lim round trips, on VQ-VAE reconstructions, and on
generated clips (N per digit); TopP&R, PRDC and Frechet distance on classifier embeddings;
for the unconditional prior the histogram of heard digits and its entropy.
report.html (open it from disk in a browser) shows the same with a few generated clips to hear.
--export DIR writes the model bundle python -m minivq.generate loads (with model cards).

This file holds the stage records and the order of the work; the work itself is elsewhere:
the trainers (train_*.py), judging clips (evaluate.py), making clips and exporting the bundle
(bundle.py), figures (plots.py) and report.md (report.py).
"""
import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli, evaluate, listening, metrics, plots
from minivq import classifier as C
from minivq import listener as Li
from minivq import data as D
from minivq import train_classifier as TC  # trainers: only to train the stages
from minivq import train_listener as TL
from minivq import train_prior as TP
from minivq import train_vqvae as TV
from minivq import vqvae as V
from minivq.audio import save_wav
from minivq.bundle import (LISTENER_FILE, SAMPLING_DEFAULTS, Bundle, add_listener, export_bundle, generate_clips,
                           prior_folder)
from minivq.data import LoadInterrupted
from minivq.progress import fmt_time
from minivq.report import write_report
from minivq.transformer import PRIOR_CKPT, GPTConfig, load_prior
from minivq import outdir  # output folders: checked, locked, recorded

# The sampling the pipeline judges and exports by default: the best measured on FSDD with both
# judges (README, "Which sampling settings"): guidance 2 with a 6-epoch guide, temperature 0.7,
# nucleus 0.9. Without the guide (--no-uncond) guidance falls back to 1 (off).
BEST_SAMPLING = dict(guidance=2.0, temperature=0.7, top_p=0.9)

# uncond_epochs: the unconditional prior serves as the guide of classifier-free guidance, which
# samples from l_u + s (l_c - l_u). A guide trained half as long as the conditional prior adds
# the conditional model's extra sharpness to the class signal in l_c - l_u, and was the better
# guide on FSDD (see README, "Measured results"); it also saves a third of the prior time.
QUICK = dict(max_per_digit=30, clf_epochs=3, listener_epochs=2, vq_epochs=2, prior_epochs=2, uncond_epochs=2, d_model=64, n_layer=2,
             order=GPTConfig().order, class_every=True, n_per_digit=20, warmup=5, prior_patience=None,
             class_norm=False)
FULL = dict(max_per_digit=None, clf_epochs=20, listener_epochs=TL.TrainConfig().epochs, vq_epochs=TV.TrainConfig().epochs,
            prior_epochs=TP.TrainConfig().epochs, uncond_epochs=TP.TrainConfig().epochs // 2,
            d_model=GPTConfig().d_model, n_layer=GPTConfig().n_layer, order=GPTConfig().order, class_every=True,
            n_per_digit=100, warmup=None, prior_patience=None, class_norm=False)
# prior_patience: early stopping of the conditional prior on its test bits (None: every epoch; the
# FSDD prior still improves at epoch 12, README "How the conditional prior scales"). For richer
# data, raise prior_epochs and set it (--prior-epochs 40 --prior-patience 3).
# class_norm: the conditional prior's LayerNorms also conditioned on the digit (GPTConfig.class_norm;
# --class-norm). Recorded in the stage record only when on, like patience.


def log(msg):
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stage(folder, settings, final):
    """'done' when ``final`` exists and was made with ``settings``; 'resume' when a partial run
    with the same settings is there; 'fresh' otherwise (a run with other settings is set aside)."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = folder / "stage.json"
    same = rec.is_file() and checkpoint.read_json(rec, "stage record") == settings
    if same and final.is_file():
        return "done"
    if rec.is_file() and not same:
        old = folder.with_name(folder.name + f".old{int(time.time())}")
        log(f"{folder} was made with other settings; moving it to {old}")
        shutil.move(str(folder), old)
        folder.mkdir(parents=True)
    checkpoint.write_json(rec, settings)
    return "resume" if same else "fresh"


def merge_settings(base, overrides=None, n_per_digit=None, kind="pipeline"):
    """A copy of the settings ``base`` with ``overrides`` applied (unknown keys: ValueError) and
    n_per_digit, when given, as the number of generated clips per digit."""
    S = dict(base)
    unknown = set(overrides or {}) - set(S)
    if unknown:
        raise ValueError(f"unknown {kind} settings {sorted(unknown)}; known: {sorted(S)}")
    S.update(overrides or {})
    if n_per_digit:
        S["n_per_digit"] = int(n_per_digit)
    return S


@outdir.scoped
def run_pipeline(data, out, cr=16, uncond=False, quick=False, seed=0, n_per_digit=None, export=None,
                 sampling=None, overrides=None, latents=False):
    """Train (or reuse) every stage, evaluate, write report.md/results.json; returns results.
    overrides: replaces entries of the QUICK/FULL settings (e.g. a smaller subset for tests).
    latents: also compute TopP&R between real and generated token grids in the VQ latent space."""
    S = merge_settings(QUICK if quick else FULL, overrides, n_per_digit, "pipeline")
    sampling = {**SAMPLING_DEFAULTS, **(sampling or {})}
    out = Path(out)
    outdir.hold(out, export)  # writable folders, locked until run_pipeline returns
    times, t_all = {}, time.perf_counter()

    feats, data_id, digits, times["features"] = load_data(data, S, seed)

    # 1. the judges: the classifier, then the listener (the second judge)
    t = time.perf_counter()
    clf = classifier_stage(out, feats, S, data_id, seed, "stage 1/4")
    times["classifier"] = time.perf_counter() - t
    t = time.perf_counter()
    listener, waves_te = listener_stage(out, data, S, data_id, seed, "stage 1b/4")
    times["listener"] = time.perf_counter() - t

    # 2. VQ-VAE + tokens
    t = time.perf_counter()
    vq = vqvae_stage(out, cr, feats, S, data_id, seed, "stage 2/4")
    times["vqvae"] = time.perf_counter() - t

    # 3. priors (their settings name the exact tokens they learn, so a retrained VQ-VAE retrains them)
    priors = {}
    for cond in ["class"] + (["none"] if uncond else []):
        t = time.perf_counter()
        priors[cond] = prior_stage(out, cr, cond, S, S["prior_epochs" if cond == "class" else "uncond_epochs"],
                                   data_id, seed, "stage 3/4")
        times[f"prior_{cond}"] = time.perf_counter() - t

    # 4. evaluation
    t = time.perf_counter()
    log("stage 4/4 evaluation")
    gallery = {}  # a few clips of each prior for report.html
    res = judge_all(feats, clf, vq, priors, out, S["n_per_digit"], seed, sampling, latents=latents, digits=digits,
                    listener=listener, recordings=waves_te, gallery=gallery)
    times["evaluation"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t_all
    res["wall_seconds"] = times
    res["settings"] = {"cr": cr, "quick": quick, "seed": seed, **S, "sampling": sampling}
    res["train_seconds"] = _train_seconds(out, cr, priors)
    checkpoint.write_json(out / "results.json", res)
    write_report(out / "report.md", res)
    listening.write_pipeline_page(out, gallery)  # report.html: report.md's tables, the figures, clips to hear
    log(f"done in {fmt_time(times['total'])}: {out / 'report.md'}")
    if export:
        files = export_bundle(out, export, cr, list(priors), feats.cfg, res, data)
        files[LISTENER_FILE] = add_listener(export, out / "listener" / "listener.npz", data,
                                            " ".join(["python -m minivq.pipeline"] + sys.argv[1:]))
        log(f"exported bundle to {Path(export)} ({sum(f['bytes'] for f in files.values()) / 1e6:.1f} MB)")
    return res


# ----------------------------------------------------------------------------- stages
# Each trains (or reuses, or resumes) one stage in its own sub-folder of ``out`` and returns the
# trained model; ``label`` heads its log line ("stage 2/4 VQ-VAE (CR=16): done"). The pipeline
# and python -m minivq.experiments call the same functions, so one folder can hold both's stages
# (priors: bundle.prior_folder, keyed by CR).
def load_data(data, S, seed):
    """Features of the official split -> (feats, data_id, digits, seconds): data_id is the part
    of every stage record that names the data; digits those with training clips."""
    t = time.perf_counter()
    feats = D.load_features(data, split="official", max_per_digit=S["max_per_digit"])
    secs = time.perf_counter() - t
    data_id = {"root": str(Path(data).resolve()), "features": feats.cfg.key(), "max_per_digit": S["max_per_digit"],
               "n_train": len(feats.train.x), "n_test": len(feats.test.x), "seed": seed}
    log(f"data: {len(feats.train.x)} train / {len(feats.test.x)} test clips ({fmt_time(secs)})")
    digits = check_coverage(feats)
    bs = S.get("prior_batch", TP.TrainConfig().batch_size)
    if len(feats.train.x) < bs:  # checked now, not after the classifier and VQ-VAE have trained
        raise ValueError(f"data folder {feats.root}: only {len(feats.train.x)} training clips, fewer than the "
                         f"{bs} sequences of one prior training batch; the pipeline needs at least {bs}")
    return feats, data_id, digits, secs


def classifier_stage(out, feats, S, data_id, seed, label, target="digit"):
    """out/classifier: the digit classifier on the real training split -> (params, cfg, norm).
    target "speaker": out/speaker_classifier, the same recipe trained to name the speaker."""
    d = out / ("classifier" if target == "digit" else f"{target}_classifier")
    record = {"stage": "classifier", "epochs": S["clf_epochs"], **data_id}
    if target != "digit":
        record["target"] = target
    st = _stage(d, record, d / "classifier.npz")
    log(f"{label} {'' if target == 'digit' else target + ' '}classifier: {st}")
    if st != "done":
        TC.train(feats, d, tcfg=TC.TrainConfig(epochs=S["clf_epochs"], seed=seed, target=target),
                 resume=st == "resume")
    return C.load_classifier(d / "classifier.npz")


def listener_stage(out, data, S, data_id, seed, label):
    """out/listener: the second judge, which hears the waveform through its own front end and is
    trained on recordings only -> (listener, test recordings as load_split reads them)."""
    d = out / "listener"
    st = _stage(d, {"stage": "listener", "epochs": S["listener_epochs"], **data_id}, d / "listener.npz")
    log(f"{label} listener (second judge): {st}")
    waves_tr, waves_te = TL.load_split(data, "official", max_per_digit=S["max_per_digit"], verbose=False)
    if st != "done":
        TL.train(waves_tr, waves_te, d, tcfg=TL.TrainConfig(epochs=S["listener_epochs"], seed=seed), verbose=False)
    return Li.load_listener(d / "listener.npz"), waves_te


def vqvae_stage(out, cr, feats, S, data_id, seed, label):
    """out/vqvae_cr{cr}: the VQ-VAE, then tokens.npz of the train/test clips -> (params, cfg, norm)."""
    d = out / f"vqvae_cr{cr}"
    vcfg = V.VQVAEConfig(cr=cr)
    tcfg = TV.TrainConfig(epochs=S["vq_epochs"], seed=seed)
    if S["warmup"] is not None:
        tcfg.warmup = S["warmup"]
    st = _stage(d, {"stage": "vqvae", "vqvae": vcfg.to_dict(), "train": tcfg.to_dict(), **data_id}, d / "tokens.npz")
    log(f"{label} VQ-VAE (CR={cr}): {st}")
    if st != "done":
        TV.train(vcfg, feats, d, tcfg, resume=st == "resume" and (d / "last.npz").is_file())
    return V.load_vqvae(d / "vqvae.npz")


def prior_stage(out, cr, cond, S, epochs, data_id, seed, label, batch_size=None, speakers=(), folder=None):
    """out/prior_folder(cond, cr) (or out/folder): a transformer prior over the tokens of
    out/vqvae_cr{cr}, trained ``epochs`` passes in batches of ``batch_size`` sequences (None: the
    trainer's default), also conditioned on the voice when ``speakers`` names them ->
    (params, cfg, meta). Its record names the exact tokens, so a retrained VQ-VAE retrains it."""
    vq_dir, d = out / f"vqvae_cr{cr}", out / (folder or prior_folder(cond, cr))
    tokens_id = hashlib.sha256((vq_dir / "tokens.npz").read_bytes()).hexdigest()[:16]
    pcfg = GPTConfig(cond=cond, d_model=S["d_model"], n_layer=S["n_layer"], order=S["order"],
                     class_every=S["class_every"] and cond == "class", speakers=tuple(speakers),
                     class_norm=S.get("class_norm", False) and cond == "class")
    ptcfg = TP.TrainConfig(epochs=epochs, seed=seed)
    if S.get("prior_patience") is not None and cond == "class":
        ptcfg.patience = S["prior_patience"]
    if batch_size is not None:
        ptcfg.batch_size = batch_size
    if S["warmup"] is not None:
        ptcfg.warmup = S["warmup"]
    train_rec = ptcfg.to_dict()
    if train_rec["patience"] is None:  # named only when set: folders made before it existed stay reusable
        del train_rec["patience"]
    st = _stage(d, {"stage": "prior", "model": pcfg.to_dict(), "train": train_rec, "vqvae": str(vq_dir),
                    "tokens": tokens_id, **data_id}, d / "metrics.json")
    log(f"{label} prior cond={cond}" + (f" (CR={cr})" if cr != 16 else "") + f": {st}")
    if st != "done":
        # Ctrl-C: the trainer saves its state and raises (a KeyboardInterrupt); a re-run resumes
        TP.train(vq_dir / "tokens.npz", d, pcfg, ptcfg, resume=st == "resume" and (d / PRIOR_CKPT).is_file())
    return load_prior(d / PRIOR_CKPT)


def _train_seconds(out, cr, priors):
    """Training time of each stage as recorded by its trainer (survives reuse and resume)."""
    ts = {}
    m = out / "classifier" / "metrics.json"
    ts["classifier"] = checkpoint.read_json(m, "metrics file").get("train_seconds")
    m = out / f"vqvae_cr{cr}" / "metrics.json"
    ts["vqvae"] = checkpoint.read_json(m, "metrics file").get("train_seconds")
    for cond in priors:
        ts[f"prior_{cond}"] = checkpoint.read_json(out / prior_folder(cond, cr) / "metrics.json",
                                                   "metrics file").get("elapsed_s")
    return ts


def check_coverage(feats):
    """Clips per digit in each split, logged before any training; returns the digits with
    training clips (those the priors learn and the evaluation generates).

    A digit with test clips but no training clips stops the run (ValueError): the classifier
    that judges every stage would never have heard it. Digits with training clips only are
    generated but have no real clips to compare with; digits with no clips are left out."""
    n_tr = np.bincount(np.asarray(feats.train.digit, np.int64), minlength=10)  # (10,)
    n_te = np.bincount(np.asarray(feats.test.digit, np.int64), minlength=10)  # (10,)
    log(f"coverage, clips per digit 0-9: train {n_tr.tolist()}, test {n_te.tolist()}")
    unheard = np.flatnonzero((n_te > 0) & (n_tr == 0))
    if unheard.size:
        raise ValueError(f"data folder {feats.root}: digit(s) {unheard.tolist()} have test clips but no training "
                         "clips, so the classifier that judges every stage cannot learn them; add training clips "
                         "of those digits or remove their test clips")
    no_test = np.flatnonzero((n_tr > 0) & (n_te == 0)).tolist()
    absent = np.flatnonzero((n_tr == 0) & (n_te == 0)).tolist()
    if no_test:
        log(f"  digit(s) {no_test} have no test clips: generated, but without real clips to compare with")
    if absent:
        log(f"  digit(s) {absent} have no clips at all: not trained, generated or evaluated")
    return np.flatnonzero(n_tr > 0).tolist()


def judge_all(feats, clf, vq, priors, out, n_per_digit, seed, sampling, latents=False, digits=None,
              listener=None, recordings=None, gallery=None):
    """Judge real, round-trip, reconstructed and generated clips; conditional generations are
    n_per_digit of each digit in ``digits`` (default 0-9; the pipeline passes those with training
    clips), and the figure shows the digits that have both a test clip and generations.
    listener: the second judge, which hears the waves of every set (the real set: ``recordings``,
    the test recordings as load_split reads them); its verdicts go under "listener" in each set.
    gallery: a dict that receives, per prior, a listening.Gallery of a few of its clips (3 per
    digit of the conditional prior, 10 of the unconditional one) for report.html."""
    fc = feats.cfg
    gen_digits = list(range(10)) if digits is None else [int(dg) for dg in digits]
    x_te, y_te = feats.test.x, np.asarray(feats.test.digit)
    r = {"clips_per_digit": {"train": np.bincount(np.asarray(feats.train.digit, np.int64), minlength=10).tolist(),
                             "test": np.bincount(y_te.astype(np.int64), minlength=10).tolist()},
         "generated_digits": gen_digits}
    def second(key, waves, want):  # the listener's verdict on the same sounds, beside the classifier's
        if listener is not None:
            r[key]["listener"] = evaluate.summarise(evaluate.listen(listener, waves, fc.sr, want=want))
            log(f"    listener (second judge): accuracy {r[key]['listener'].get('accuracy', float('nan')):.4f}")

    real = evaluate.judge(clf, x_te, want=y_te)
    r["real"] = evaluate.summarise(real)
    log(f"  real test clips: accuracy {real['accuracy']:.4f}")
    if recordings is not None:
        second("real", recordings["waves"], recordings["digit"])
    gl_waves, gl = evaluate.round_trip(x_te, fc, seed=seed)
    gl = evaluate.judge(clf, gl, want=y_te)
    r["griffin_lim"] = evaluate.summarise(gl)
    log(f"  Griffin-Lim round trips: accuracy {gl['accuracy']:.4f}")
    second("griffin_lim", gl_waves, y_te)
    vparams, vcfg, vnorm = vq
    real_tokens = V.encode_logmel(vparams, vcfg, vnorm, x_te)  # (N, h, w)
    if "class" in priors:  # how much the conditional prior's likelihood depends on the digit
        r["prior_as_classifier"] = evaluate.prior_as_classifier(priors["class"], real_tokens, y_te)
        log(f"  prior as classifier of the test token grids: accuracy {r['prior_as_classifier']['accuracy']:.4f}, "
            f"I(digit; grid) >= {r['prior_as_classifier']['mi_bits_lower_bound']:.3f} bits")
    rec_mel = V.decode_logmel(vparams, vcfg, vnorm, real_tokens)
    rec_waves, rec = evaluate.round_trip(rec_mel, fc, seed=seed)
    rec = evaluate.judge(clf, rec, want=y_te)
    r["reconstruction"] = evaluate.summarise(rec)
    r["reconstruction"]["mse_standardised"] = float(np.mean(((rec_mel - x_te) / vnorm["std"]) ** 2))
    r["reconstruction"]["metrics"] = evaluate.distribution_metrics(real["embed"], rec["embed"], seed)
    log(f"  VQ-VAE reconstructions: accuracy {rec['accuracy']:.4f}")
    second("reconstruction", rec_waves, y_te)
    plots.plot_confusion(out / "confusion_real.png", real["confusion"], f"real test clips: {real['accuracy']:.3f}")
    samples = out / "samples"
    samples.mkdir(exist_ok=True)
    for cond, prior in priors.items():
        bundle = Bundle(vq, prior, clf, fc, {}, guide=priors.get("none") if cond == "class" else None,
                        listener=listener)
        want_digits = np.repeat(gen_digits, n_per_digit) if cond == "class" else None  # (n,)
        kw = dict(sampling) if cond == "class" else {**sampling, "guidance": 1.0}
        g = generate_clips(bundle, want_digits, n=10 * n_per_digit, seed=seed, **kw)
        if gallery is not None:
            gallery[cond] = listening.gallery_from_generation(
                f"{'conditional' if cond == 'class' else 'unconditional'} prior (prior_{cond}): generated clips",
                g, want_digits, keep=3 if cond == "class" else 10, sr=fc.sr)
        s = evaluate.summarise(g)
        s["metrics"] = evaluate.distribution_metrics(real["embed"], g["embed"], seed)
        hist = np.bincount(g["pred"], minlength=10)
        s["heard_histogram"] = hist.tolist()
        s["heard_entropy_bits"] = evaluate.entropy_bits(hist)
        s["digit_score"] = float(metrics.digit_score(g["probs"]))
        if latents:
            s["latent_top_pr"] = evaluate.latent_top_pr(vparams["codebook"], real_tokens, g["tokens"], seed)
        r[f"generated_{cond}"] = s
        if "listener" in g:
            s["listener"] = evaluate.summarise(g["listener"])
            if cond == "none":
                s["listener"]["heard_histogram"] = np.bincount(g["listener"]["pred"], minlength=10).tolist()
        tag = "conditional" if cond == "class" else "unconditional"
        if cond == "class":
            plots.plot_confusion(out / "confusion_generated.png", g["confusion"],
                                 f"conditional generations: {g['accuracy']:.3f}")
            log(f"  conditional generations: accuracy {g['accuracy']:.4f}"
                + (f" (listener {g['listener']['accuracy']:.4f})" if "listener" in g else ""))
            plots.plot_real_vs_generated(out / "real_vs_generated.png", x_te, y_te, g["heard"], g["pred"],
                                         gen_digits, n_per_digit)
        else:
            log(f"  unconditional generations: heard-digit entropy {s['heard_entropy_bits']:.3f} bits")
        for i in range(0, len(g["waves"]), max(1, n_per_digit // 2)):
            want = "u" if want_digits is None else want_digits[i]
            save_wav(samples / f"{tag}_{want}_{i:04d}_heard{g['pred'][i]}.wav", g["waves"][i], fc.sr)
    return r


@outdir.scoped
def run_command(body):
    """Run a command line's ``body()`` and return its exit status: 0 when done, 2 with one line
    on standard error for bad input, 130 when interrupted (a re-run of the same command resumes)."""
    try:
        body()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except LoadInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def main(argv=None):
    p = cli.ArgumentParser(prog="python -m minivq.pipeline", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="FSDD folder (default $MINIVQ_FSDD)")
    p.add_argument("--out", default="out/pipeline", help="working folder (re-runs reuse/resume it)")
    p.add_argument("--force", action="store_true",
                   help="write OUT even when it holds a run with other settings or another run's files")
    p.add_argument("--cr", type=int, choices=(4, 16), default=16, help="VQ-VAE compression ratio")
    p.add_argument("--uncond", action=argparse.BooleanOptionalAction, default=True,
                   help="also train and evaluate an unconditional prior, the guide of classifier-free guidance "
                        "(--no-uncond: the conditional prior alone, sampled without guidance)")
    p.add_argument("--quick", action="store_true", help="smoke run: 30 clips per digit, tiny models, few epochs")
    p.add_argument("--seed", type=cli.nonneg_int, default=0, help="seed for every stage")
    p.add_argument("--n-per-digit", type=cli.positive_int, default=None,
                   help="generated clips per digit (default 100; quick 20)")
    p.add_argument("--export", default=None, help="also write a model bundle for python -m minivq.generate here")
    p.add_argument("--guidance", type=cli.nonneg_float, default=None,
                   help=f"classifier-free guidance scale for conditional generations (needs the unconditional prior; "
                        f"1: off; default {BEST_SAMPLING['guidance']:g}, or 1 with --no-uncond)")
    p.add_argument("--temperature", type=cli.positive_float, default=BEST_SAMPLING["temperature"],
                   help="sampling temperature for generations")
    p.add_argument("--top-p", type=cli.prob, default=BEST_SAMPLING["top_p"],
                   help="nucleus sampling: keep the smallest set of codes with this probability (1: off)")
    p.add_argument("--prior-epochs", type=cli.positive_int, default=None,
                   help=f"epochs of the conditional prior (default {FULL['prior_epochs']}; quick {QUICK['prior_epochs']})")
    p.add_argument("--prior-patience", type=cli.positive_int, default=None,
                   help="early stopping of the conditional prior: stop after this many epochs without lower test "
                        "bits and keep the best epoch (default: off; for data richer than FSDD raise --prior-epochs "
                        "and set this)")
    p.add_argument("--class-norm", action="store_true",
                   help="condition every LayerNorm of the conditional prior on the digit too (adaptive LayerNorm)")
    p.add_argument("--latent-metrics", action="store_true",
                   help="also TopP&R of generated vs real token grids in the VQ latent space (projected to 32-d)")
    def body():
        a = p.parse_args(argv)  # a bad option is a cli.UsageError (a ValueError)
        data = a.data or os.environ.get("MINIVQ_FSDD")
        if not data:
            raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
        outdir.claim(a.out, "pipeline", a)  # writable, locked, not another run's files (see minivq/outdir.py)
        if a.cr != 16:
            log("note: generation needs a prior over this CR's token grid; priors are sized from tokens.npz")
        if a.guidance is None:
            a.guidance = BEST_SAMPLING["guidance"] if a.uncond else 1.0
        if a.guidance != 1.0 and not a.uncond:
            raise ValueError("--guidance needs the unconditional prior: leave out --no-uncond")
        run_pipeline(data, a.out, cr=a.cr, uncond=a.uncond, quick=a.quick, seed=a.seed,
                     n_per_digit=a.n_per_digit, export=a.export,
                     sampling={"guidance": a.guidance, "temperature": a.temperature,
                               "top_p": None if a.top_p == 1.0 else a.top_p}, latents=a.latent_metrics,
                     overrides={k: v for k, v in (("prior_epochs", a.prior_epochs), ("prior_patience", a.prior_patience),
                                                  ("class_norm", a.class_norm or None)) if v is not None})
    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
