"""Reproduce a paper's study in one command, every stage trained, reused and judged in one folder.

    python -m minivq.experiments paper --data PATH --out DIR [--quick] [--seed 0] [--n-per-digit N] [--voice]

``paper`` is VQalAttent's 2x2 study (Rodriguez & Kokalj-Filipovic, arXiv 2411.14642): the
transformer prior over VQ-VAE tokens at two compression ratios, each unconditional and
class-conditional. Names as the paper writes them, and the settings we give them:

    T1   unconditional      CR=4   32 x 32 = 1,024 tokens per clip
    T2   unconditional      CR=16  16 x 16 =   256 tokens per clip
    TC1  class-conditional  CR=4
    TC2  class-conditional  CR=16

The paper names T1/T2 unconditional and TC1/TC2 conditional; that subscript 1 is CR=4 and 2 is
CR=16 is our reading (the order in which it lists the ratios), not a sentence of the paper.

One folder holds everything, each stage in its own sub-folder and reused when finished with
the same settings, resumed when interrupted (the pipeline's stages: minivq/pipeline.py):
  classifier/  listener/          the two judges, trained once on real clips
  vqvae_cr16/  vqvae_cr4/         the VQ-VAEs, each with tokens.npz
  prior_class/ prior_none/        TC2, T2 (the pipeline's folders for CR=16)
  prior_class_cr4/ prior_none_cr4/  TC1, T1
  eval_cr16/   eval_cr4/          figures and WAVs of each CR's evaluation (samples/)
  results.json  report.md         the 2x2 table, the compute-vs-CR table, time per stage
  report.html                     the same with the figures and a few clips of each model to hear

Every model is judged on the same footing (same real test clips, seed, sampling settings:
PAPER_SAMPLING, the pipeline's best measured temperature and nucleus without guidance, because
the unconditional priors are models under study here, trained as long as the conditional ones,
not the weaker guide guidance wants): conditional priors make n_per_digit clips of each digit and are
scored by the fraction heard as requested (per digit, and the confusion matrix);
unconditional priors make 10 * n_per_digit clips, scored by the histogram of heard digits and
its entropy; both by TopP&R (fidelity, diversity, TopF1), PRDC and the Frechet distance in
the classifier's embedding space against the real test clips. The classifier is the headline
judge; the listener (a second judge on the waveform) is reported beside it.

--voice adds the paper's open question, conditioning on the speaker: a speaker classifier (the
digit classifier's recipe), a CR=16 prior conditioned on digit and speaker (TC2's settings plus a
speaker embedding), and that prior and TC2 asked for every (digit, speaker) pair with the same
seeds, each judged for the digit and for the speaker (minivq.voice).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli, evaluate, listening
from minivq import outdir
from minivq import pipeline as P
from minivq import voice as V
from minivq.bundle import SAMPLING_DEFAULTS, Bundle, prior_folder
from minivq.layouts import detect_layout
from minivq.progress import fmt_time
from minivq.report import write_paper_report
from minivq.sampling import sample
from minivq.transformer import GPTConfig
from minivq.vqvae import decode_logmel

# every model's sampling: temperature 0.7 and nucleus 0.9 (pipeline.BEST_SAMPLING), no guidance
PAPER_SAMPLING = {**SAMPLING_DEFAULTS, "temperature": P.BEST_SAMPLING["temperature"], "top_p": P.BEST_SAMPLING["top_p"]}

# the paper's names -> (compression ratio, conditioning); see the module docstring for the mapping
MODELS = {"T1": (4, "none"), "T2": (16, "none"), "TC1": (4, "class"), "TC2": (16, "class")}
CRS = (16, 4)  # trained in this order: the cheap ratio first, so its results come early

# Settings. Stage costs on FSDD (2,700 training clips), 2 cores, from the timed steps the plan was
# made with: a prior step of 32 sequences took ~0.6 s at T=256 and ~11.5 s at T=1,024 (attention
# is O(T^2): ~20x per sequence), so one CR=4 prior epoch ~16 min against ~50 s at CR=16 (the full
# run measured 8.5 min against 1.4 min per epoch on one thread: README, "Reproducing the paper").
# To fit the whole study in about 2 hours, the CR=4 priors get 1 epoch (84 steps,
# so a 10-step warmup instead of the trainer's 100) and the CR=16 priors the pipeline's 12 (with
# the pipeline's settings, so a pipeline folder's conditional prior is reused); both priors of
# one ratio train equally long, as in the paper. prior_warmup_crCR None: the global ``warmup``.
FULL = dict(max_per_digit=None, clf_epochs=P.FULL["clf_epochs"], listener_epochs=P.FULL["listener_epochs"],
            vq_epochs_cr16=P.FULL["vq_epochs"], vq_epochs_cr4=P.FULL["vq_epochs"],
            prior_epochs_cr16=P.FULL["prior_epochs"], prior_epochs_cr4=1,
            prior_batch_cr16=32, prior_batch_cr4=32, prior_warmup_cr16=None, prior_warmup_cr4=10,
            d_model=P.FULL["d_model"], n_layer=P.FULL["n_layer"], order=P.FULL["order"], class_every=True,
            n_per_digit=100, warmup=None, time_clips=10, voice_n=20)
QUICK = dict(FULL, max_per_digit=30, clf_epochs=3, listener_epochs=2, vq_epochs_cr16=2, vq_epochs_cr4=2,
             prior_epochs_cr16=2, prior_epochs_cr4=1, prior_batch_cr4=16, prior_warmup_cr4=None, d_model=64, n_layer=2,
             n_per_digit=20, warmup=5, voice_n=2)


def log(msg):
    print(f"[paper {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def settings(quick=False, overrides=None, n_per_digit=None):
    """The QUICK or FULL settings with ``overrides`` applied (unknown keys: ValueError)."""
    return P.merge_settings(QUICK if quick else FULL, overrides, n_per_digit, "experiment")


@outdir.scoped
def run_paper(data, out, quick=False, seed=0, n_per_digit=None, overrides=None, sampling=None, command=None,
              voice=False):
    """Train (or reuse) the judges, both VQ-VAEs and the four priors in ``out``, evaluate them
    all, write results.json and report.md; returns the results dict.
    overrides: replaces entries of QUICK/FULL (e.g. a smaller subset for tests);
    sampling: replaces entries of PAPER_SAMPLING for every generation;
    voice: also the paper's open question, a CR=16 prior conditioned on digit and speaker, judged
    by a speaker classifier beside TC2 (see voice_stage)."""
    S = settings(quick, overrides, n_per_digit)
    sampling = {**PAPER_SAMPLING, **(sampling or {})}
    out = Path(out)
    outdir.hold(out)  # writable, locked until run_paper returns
    wall, t_all = {}, time.perf_counter()
    feats, data_id, digits, wall["features"] = P.load_data(
        data, {**S, "prior_batch": min(S["prior_batch_cr16"], S["prior_batch_cr4"])}, seed)

    t = time.perf_counter()
    clf = P.classifier_stage(out, feats, S, data_id, seed, "stage 1/8")
    wall["classifier"] = time.perf_counter() - t
    t = time.perf_counter()
    listener, waves_te = P.listener_stage(out, data, S, data_id, seed, "stage 2/8")
    wall["listener"] = time.perf_counter() - t

    vqs, priors, n = {}, {}, 3
    for cr in CRS:
        t = time.perf_counter()
        vqs[cr] = P.vqvae_stage(out, cr, feats, {**S, "vq_epochs": S[f"vq_epochs_cr{cr}"]}, data_id, seed,
                                f"stage {n}/8")
        wall[f"vqvae_cr{cr}"], n = time.perf_counter() - t, n + 1
        for cond in ("class", "none"):
            t = time.perf_counter()
            warm = S[f"prior_warmup_cr{cr}"]
            priors[cr, cond] = P.prior_stage(out, cr, cond, {**S, "warmup": S["warmup"] if warm is None else warm},
                                             S[f"prior_epochs_cr{cr}"], data_id, seed,
                                             f"stage {n}/8 {name_of(cr, cond)}:", batch_size=S[f"prior_batch_cr{cr}"])
            wall[prior_folder(cond, cr)], n = time.perf_counter() - t, n + 1

    judged, galleries = {}, {}
    for cr in CRS:
        t = time.perf_counter()
        log(f"evaluation CR={cr}: {name_of(cr, 'class')} and {name_of(cr, 'none')}")
        ev = out / f"eval_cr{cr}"
        ev.mkdir(exist_ok=True)
        gal = {}  # a few clips of each prior for report.html
        judged[cr] = P.judge_all(feats, clf, vqs[cr], {c: priors[cr, c] for c in ("class", "none")}, ev,
                                 S["n_per_digit"], seed, sampling, digits=digits, listener=listener,
                                 recordings=waves_te, gallery=gal)
        for cond, g in gal.items():  # named as the paper names the model
            g.title = f"{name_of(cr, cond)} (CR={cr}, {'class-conditional' if cond == 'class' else 'unconditional'}): generated clips"
            galleries[name_of(cr, cond)] = g
        wall[f"evaluation_cr{cr}"] = time.perf_counter() - t
    t = time.perf_counter()
    speed = {(cr, c): time_sampling(priors[cr, c], vqs[cr], feats.cfg, S["time_clips"], seed, sampling)
             for cr in CRS for c in ("class", "none")}
    wall["sampling_timing"] = time.perf_counter() - t
    voice_res = None
    if voice:
        t = time.perf_counter()
        voice_res = voice_stage(out, feats, S, data_id, seed, vqs[16], clf, priors[16, "class"], sampling, listener)
        wall["voice"] = time.perf_counter() - t
    wall["total"] = time.perf_counter() - t_all

    res = collect(out, S, judged, vqs, priors, speed, wall)
    if voice_res is not None:
        res["voice"] = voice_res
    res["settings"] = {"quick": quick, "seed": seed, **S, "sampling": sampling, "data": str(Path(data).resolve()),
                       "layout": feats.layout, "command": command or "run_paper() (library call)",
                       "threads": _threads()}
    checkpoint.write_json(out / "results.json", res)
    write_paper_report(out / "report.md", res)
    listening.write_pipeline_page(out, galleries, {f"CR={cr} ({name_of(cr, 'class')}): ": out / f"eval_cr{cr}"
                                                   for cr in CRS})  # report.html: tables, figures, clips to hear
    log(f"done in {fmt_time(wall['total'])}: {out / 'report.md'}")
    return res


def voice_stage(out, feats, S, data_id, seed, vq, clf, prior_tc2, sampling, listener=None):
    """The paper's open question, "say seven in this speaker's voice": a speaker classifier (the
    digit classifier's recipe; out/speaker_classifier), a CR=16 prior conditioned on digit and
    speaker (TC2's settings plus a speaker embedding; out/prior_speaker), and both that prior and
    TC2 asked for every (digit, speaker) pair voice_n times with the same seeds and sampling, each
    judged for digit and speaker (minivq.voice.measure) -> a JSON-ready dict."""
    names = sorted(set(feats.train.speaker.tolist()))
    if len(names) < 2:
        raise ValueError(f"voice conditioning needs at least 2 training speakers, the data has {len(names)}")
    judge = P.classifier_stage(out, feats, S, data_id, seed, "voice 1/2", target="speaker")
    vs = {**S, "warmup": S["warmup"] if S["prior_warmup_cr16"] is None else S["prior_warmup_cr16"]}
    prior = P.prior_stage(out, 16, "class", vs, S["prior_epochs_cr16"], data_id, seed, "voice 2/2",
                          batch_size=S["prior_batch_cr16"], speakers=names, folder="prior_speaker")
    log(f"evaluation of voice conditioning: {len(names)} speakers x 10 digits x {S['voice_n']} clips")
    kw = {k: v for k, v in sampling.items() if k != "guidance"}  # an unconditional guide knows no voices
    made = {}
    for key, p, base in (("speaker_prior", prior, False), ("class_only", prior_tc2, True)):
        b = Bundle(vq, p, clf, feats.cfg, {}, listener=listener)
        made[key] = V.measure(b, judge, feats.test.x, n=S["voice_n"], seed=seed, baseline=base, speakers=names, **kw)
    real = evaluate.judge_speaker(judge, feats.test.x, want=feats.test.speaker.astype(str))
    pm = checkpoint.read_json(out / "prior_speaker" / "metrics.json", "metrics file")
    return {"speakers": names, "n_per_pair": S["voice_n"], "sampling": kw,
            "speaker_judge_real_accuracy": float(real["accuracy"]),
            "speaker_prior_test_bits_per_token": pm["test_bits"], "speaker_prior_train_seconds": pm["elapsed_s"],
            "speaker_prior_params": pm["n_params"], **made}


def name_of(cr, cond):
    """The paper's name of the prior at ``cr`` with ``cond``: T1, T2, TC1 or TC2."""
    return next(k for k, v in MODELS.items() if v == (cr, cond))


def time_sampling(prior, vq, fcfg, n, seed, sampling):
    """Seconds per clip to sample n token grids in one batch (conditional: digits 0, 1, ... in
    turn), to decode them to log-mel, and to turn those into sound (mel inversion + Griffin-Lim,
    64 iterations, as the evaluation does). A separate timed run: the evaluation's batch of
    10 * n_per_digit clips would time something no user waits for."""
    pparams, pcfg, _ = prior
    vparams, vcfg, vnorm = vq
    cond = np.arange(n) % 10 if pcfg.cond == "class" else None  # (n,)
    t = time.perf_counter()
    codes = sample(pparams, pcfg, n, cond=cond, temperature=sampling["temperature"], top_k=sampling["top_k"],
                   top_p=sampling["top_p"], seed=seed)  # (n, T); guidance needs a guide: timed without
    t_sample = time.perf_counter() - t
    t = time.perf_counter()
    logmel = decode_logmel(vparams, vcfg, vnorm, pcfg.to_grid(codes, vcfg.grid, vcfg.grid))  # (n, M, T)
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    evaluate.to_audio(logmel, fcfg, seed=seed)
    t_audio = time.perf_counter() - t
    return {"clips": n, "sample_s_per_clip": t_sample / n, "decode_s_per_clip": t_decode / n,
            "audio_s_per_clip": t_audio / n}


def _per_digit(confusion):
    """Rows: requested digit -> fraction heard as requested (None for digits not requested)."""
    c = np.asarray(confusion, dtype=np.float64)  # (10, 10)
    n = c.sum(axis=1)  # (10,)
    return [float(c[i, i] / n[i]) if n[i] else None for i in range(len(c))]


def _n_params(params):
    return int(sum(int(np.prod(v.shape)) for v in params.values()))


def collect(out, S, judged, vqs, priors, speed, wall):
    """results.json: the four models, the two ratios (compute-vs-CR) and the time of each stage."""
    first = judged[CRS[0]]
    res = {"clips_per_digit": first["clips_per_digit"], "generated_digits": first["generated_digits"],
           "real": first["real"], "griffin_lim": first["griffin_lim"], "models": {}, "ratios": {}}
    for name, (cr, cond) in MODELS.items():
        g = judged[cr][f"generated_{cond}"]
        pm = checkpoint.read_json(out / prior_folder(cond, cr) / "metrics.json", "metrics file")
        cfg = GPTConfig.from_dict(pm["model"])
        tokens = int(cfg.context)
        m = {"cr": cr, "cond": cond, "tokens_per_clip": tokens, "grid": f"{vqs[cr][1].grid}x{vqs[cr][1].grid}",
             "n_params": pm["n_params"], "test_bits_per_token": pm["test_bits"],
             "test_bits_per_clip": pm["test_bits"] * tokens, "epochs": pm["train"]["epochs"],
             "batch_size": pm["train"]["batch_size"], "steps": pm["step"], "train_seconds": pm["elapsed_s"],
             "seconds_per_epoch": pm["elapsed_s"] / max(pm["train"]["epochs"], 1),
             "folder": prior_folder(cond, cr), **speed[cr, cond],
             "n": g["n"], "mean_confidence": g["mean_confidence"], "metrics": g["metrics"],
             "heard_histogram": g["heard_histogram"], "heard_entropy_bits": g["heard_entropy_bits"],
             "digit_score": g["digit_score"]}
        if cond == "class":
            m.update(accuracy=g["accuracy"], per_digit_accuracy=_per_digit(g["confusion"]), confusion=g["confusion"])
        lis = g.get("listener")
        if lis:
            m["listener"] = {k: lis[k] for k in ("accuracy", "heard_histogram") if k in lis}
            if "confusion" in lis:
                m["listener"]["per_digit_accuracy"] = _per_digit(lis["confusion"])
        res["models"][name] = m
    for cr in CRS:
        vm = checkpoint.read_json(out / f"vqvae_cr{cr}" / "metrics.json", "metrics file")
        rec = judged[cr]["reconstruction"]
        res["ratios"][str(cr)] = {
            "cr": cr, "tokens_per_clip": vqs[cr][1].grid ** 2, "vqvae_params": _n_params(vqs[cr][0]),
            "vqvae_train_seconds": vm.get("train_seconds"), "vqvae_epochs": vm.get("epochs"),
            "vqvae_test_perplexity": vm.get("test_perplexity"),
            "reconstruction": {k: rec.get(k) for k in ("n", "accuracy", "mean_confidence", "mse_standardised",
                                                       "metrics")},
            "reconstruction_listener_accuracy": rec.get("listener", {}).get("accuracy"),
            "prior_train_seconds": sum(res["models"][name_of(cr, c)]["train_seconds"] for c in ("class", "none")),
            "evaluation_seconds": wall[f"evaluation_cr{cr}"]}
    res["wall_seconds"] = wall
    res["train_seconds"] = {"classifier": checkpoint.read_json(out / "classifier" / "metrics.json",
                                                               "metrics file").get("train_seconds"),
                            "listener": checkpoint.read_json(out / "listener" / "metrics.json",
                                                             "metrics file").get("train_seconds"),
                            **{f"vqvae_cr{cr}": res["ratios"][str(cr)]["vqvae_train_seconds"] for cr in CRS},
                            **{m["folder"]: m["train_seconds"] for m in res["models"].values()}}
    return res


def _threads():
    """CPU cores this process may use and the BLAS thread setting, for the record of timings."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cores": cores, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


@outdir.scoped
def main(argv=None):
    p = cli.ArgumentParser(prog="python -m minivq.experiments", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="experiment", required=True)
    q = sub.add_parser("paper", help="VQalAttent's 2x2 study: T1, T2, TC1, TC2 (CR=4/16 x unconditional/"
                       "class-conditional)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--data", default=None, help="FSDD or AudioMNIST folder (default $MINIVQ_FSDD)")
    q.add_argument("--out", default="out/paper", help="working folder (re-runs reuse/resume its stages)")
    q.add_argument("--force", action="store_true",
                   help="write OUT even when it holds a run with other settings or another run's files")
    q.add_argument("--quick", action="store_true", help="smoke run: 30 clips per digit, tiny models, few epochs")
    q.add_argument("--seed", type=cli.nonneg_int, default=0, help="seed for every stage")
    q.add_argument("--n-per-digit", type=cli.positive_int, default=None,
                   help="generated clips per digit for each conditional prior; 10x this for each unconditional "
                        "one (default 100; quick 20)")
    q.add_argument("--voice", action="store_true",
                   help="also a CR=16 prior conditioned on digit and speaker, judged by a speaker classifier beside "
                        "TC2 (voice_n clips per digit and speaker)")
    def body():
        a = p.parse_args(argv)  # a bad option is a cli.UsageError (a ValueError)
        data = a.data or os.environ.get("MINIVQ_FSDD")
        if not data:
            raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
        detect_layout(data)  # a missing or unrecognised folder fails before the output folder is touched
        outdir.claim(a.out, "paper", a)  # writable, locked, not another run's files (see minivq/outdir.py)
        run_paper(data, a.out, quick=a.quick, seed=a.seed, n_per_digit=a.n_per_digit, voice=a.voice,
                  command=" ".join(["python -m minivq.experiments"] + list(sys.argv[1:] if argv is None else argv)))
    return P.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
