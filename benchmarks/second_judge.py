"""Two judges, four kinds of sound: the project's classifier and the independent listener.

    MINIVQ_FSDD=/path/to/fsdd python benchmarks/second_judge.py --listener DIR/listener.npz [MORE.npz ...] \
        [--bundle data/pretrained] [--per-digit 100] [--work DIR]

The project's classifier (classifier.npz of the model bundle) hears a clip the way the
pipeline does: log-mel (64 x 64, the models' own representation) -> audio (mel inversion +
Griffin-Lim) -> prepare -> log-mel -> CNN. The listener (minivq.listener) hears the *audio*
only: its own MFCC front end on the waveform, its own network, trained on clean recordings.

Sets, all from the 300 official FSDD test clips unless said otherwise:
  real           the recordings (the classifier: their log-mel; the listener: the raw file)
  griffin-lim    log-mel -> audio.mel_to_audio (its default synthesis: the floor gated to silence): the vocoder alone
  vq-vae         log-mel -> shipped VQ-VAE encode -> decode -> audio (CR=16)
  generated      bundle.generate_clips() with the bundle's sampling defaults, seed 0, --per-digit per digit

Two controls, both judges: the real clips played backwards, and with white noise at 0 dB SNR.
Each judge's verdicts are recomputed from the cached audio (the classifier's must equal those
made when the sounds were made: a check that the audio cache is faithful).

Prints markdown tables (accuracy with the mean probability of the right digit; the Frechet
distance to the real clips in each judge's embedding space, divided by the real clips' total
variance; per-digit accuracy on the VQ-VAE and generated sets) and writes results.json and the sounds
(waves_pd{N}_seed{S}_gate.npz, reused by a later run) to --work. Several --listener files may be
given, as PATH or NAME=PATH; a column is named NAME, else by the folder of its checkpoint.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivq import audio as A  # noqa: E402
from minivq import data as D  # noqa: E402
from minivq import evaluate as E  # noqa: E402
from minivq import bundle as G  # noqa: E402
from minivq import metrics as M  # noqa: E402
from minivq import vqvae as V  # noqa: E402

SETS = ("real", "griffin-lim", "vq-vae", "generated")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_sets(fsdd, bundle_dir, per_digit, seed=0):
    """-> dict set -> {"waves": list of (N_i,) float32, "digit": (B,), "clf_pred": (B,)} with the
    project classifier's verdicts computed as the pipeline computes them."""
    bundle = G.load_bundle(bundle_dir, cond="class")
    fc = bundle.features
    _, test = D.split_clips(D.scan(fsdd), "official")
    y = np.array([c.digit for c in test])  # (300,)
    raw = [A.load_wav(c.path, fc.sr) for c in test]  # the recordings as they are
    x = np.stack([A.log_mel(A.prepare(w, fc), fc) for w in raw])  # (300, M, T) the project's features
    sets = {}
    t0 = time.perf_counter()
    sets["real"] = {"waves": raw, "digit": y, "clf_pred": E.judge(bundle.classifier, x)["pred"]}
    gl_waves, gl_heard = E.round_trip(x, fc, seed=seed)
    sets["griffin-lim"] = {"waves": list(gl_waves), "digit": y, "clf_pred": E.judge(bundle.classifier, gl_heard)["pred"]}
    log(f"griffin-lim round trips: {time.perf_counter() - t0:.0f} s")
    vparams, vcfg, vnorm = bundle.vqvae
    rec = V.decode_logmel(vparams, vcfg, vnorm, V.encode_logmel(vparams, vcfg, vnorm, x))  # (300, M, T)
    rec_waves, rec_heard = E.round_trip(rec, fc, seed=seed)
    sets["vq-vae"] = {"waves": list(rec_waves), "digit": y, "clf_pred": E.judge(bundle.classifier, rec_heard)["pred"]}
    log(f"VQ-VAE reconstructions: {time.perf_counter() - t0:.0f} s")
    digits = np.repeat(np.arange(10), per_digit)  # (10 * per_digit,)
    g = G.generate_clips(bundle, digits, seed=seed, **G.bundle_sampling(bundle))
    sets["generated"] = {"waves": list(g["waves"]), "digit": digits, "clf_pred": g["pred"]}
    log(f"generations ({len(digits)}): {time.perf_counter() - t0:.0f} s")
    return sets, fc.sr, G.bundle_sampling(bundle)


def save_sets(path, sets, sr, sampling):
    arrays = {"sr": np.asarray(sr), "sampling": np.asarray(json.dumps(sampling))}
    for name, s in sets.items():
        lengths = np.array([len(w) for w in s["waves"]])
        arrays[f"{name}/waves"] = np.concatenate(s["waves"]).astype(np.float32)
        arrays[f"{name}/lengths"] = lengths
        arrays[f"{name}/digit"] = np.asarray(s["digit"])
        arrays[f"{name}/clf_pred"] = np.asarray(s["clf_pred"])
    np.savez(path, **arrays)


def load_sets(path):
    z = np.load(path, allow_pickle=False)
    sets = {}
    for name in SETS:
        bounds = np.cumsum(z[f"{name}/lengths"])[:-1]
        sets[name] = {"waves": np.split(z[f"{name}/waves"], bounds), "digit": z[f"{name}/digit"],
                      "clf_pred": z[f"{name}/clf_pred"]}
    return sets, int(z["sr"]), json.loads(str(z["sampling"]))


def per_digit(pred, digit):
    return [float((pred[digit == d] == d).mean()) for d in range(10)]


def controls(real, seed=0):
    """Two checks that the judges are not lenient by construction, made from the real clips:
    each recording played backwards (same spectra, wrong order) and with white noise at 0 dB SNR."""
    g = np.random.default_rng(seed)
    rev = [w[::-1].copy() for w in real["waves"]]
    noisy = [(w + g.standard_normal(len(w)) * np.sqrt(np.mean(w.astype(np.float64) ** 2))).astype(np.float32)
             for w in real["waves"]]
    return {"control: reversed": {"waves": rev, "digit": real["digit"]},
            "control: noise 0 dB SNR": {"waves": noisy, "digit": real["digit"]}}


def verdict(probs, digit, embed):
    pred = probs.argmax(axis=1)  # (B,)
    return {"accuracy": float((pred == digit).mean()), "p_wanted": float(probs[np.arange(len(digit)), digit].mean()),
            "per_digit": per_digit(pred, digit), "pred": pred, "embed": embed}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--fsdd", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder (default: $MINIVQ_FSDD)")
    ap.add_argument("--listener", nargs="+", default=[f"shipped={G.DEFAULT_CHECKPOINT / G.LISTENER_FILE}"],
                    help="trained listener checkpoint(s) (listener.npz), each PATH or NAME=PATH (default name: its folder)")
    ap.add_argument("--bundle", default=str(G.DEFAULT_CHECKPOINT), help="model bundle folder")
    ap.add_argument("--per-digit", type=int, default=100, help="generations per digit")
    ap.add_argument("--seed", type=int, default=0, help="generation and Griffin-Lim seed")
    ap.add_argument("--work", default="out/second_judge", help="folder for the cached sounds and results.json")
    ap.add_argument("--make-only", action="store_true", help="make (and cache) the sounds, judge nothing")
    args = ap.parse_args(argv)
    if not args.fsdd:
        print("error: pass --fsdd or set MINIVQ_FSDD to the FSDD folder", file=sys.stderr)
        return 1
    if not args.make_only and not args.listener:
        print("error: pass --listener PATH (a listener.npz from python -m minivq.train_listener)", file=sys.stderr)
        return 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # "_gate": made by audio.mel_to_audio's default synthesis since the log floor is gated to
    # silence; a cache of the earlier synthesis (no suffix) is not read back as if it were
    cache = work / f"waves_pd{args.per_digit}_seed{args.seed}_gate.npz"
    try:
        if cache.is_file():
            sets, sr, sampling = load_sets(cache)
            log(f"read the sounds from {cache}")
        else:
            t0 = time.perf_counter()
            sets, sr, sampling = make_sets(args.fsdd, args.bundle, args.per_digit, args.seed)
            save_sets(cache, sets, sr, sampling)
            log(f"made the sounds in {time.perf_counter() - t0:.0f} s; cached in {cache}")
        if args.make_only:
            return 0
        from minivq import listener as L
        named = [p.split("=", 1) if "=" in p else (Path(p).resolve().parent.name, p) for p in args.listener]
        listeners = {name: L.load_listener(p) for name, p in named}
        bundle = G.load_bundle(args.bundle, cond="class")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    fc = bundle.features
    all_sets = {**sets, **controls(sets["real"], args.seed)}
    res = {"bundle": args.bundle, "listeners": dict(named), "sampling": sampling,
           "seed": args.seed, "sets": {}}
    for name, s in all_sets.items():
        y = np.asarray(s["digit"])
        # the project's judge, as the pipeline runs it: prepare + 64x64 log-mel of the audio -> CNN
        j = E.judge(bundle.classifier, E.featurise(s["waves"], fc))
        clf = verdict(j["probs"], y, j["embed"])
        if "clf_pred" in s and not np.array_equal(clf["pred"], s["clf_pred"]):
            raise AssertionError(f"{name}: the classifier's verdicts on the cached audio differ from those made with it")
        r = {"n": len(y), "classifier": clf}
        for lname, lis in listeners.items():
            probs, emb = L.listen(lis, s["waves"], sr)
            r[lname] = verdict(probs, y, emb)
            r[lname]["agree_with_classifier"] = float((r[lname]["pred"] == clf["pred"]).mean())
        res["sets"][name] = r
    judges = ["classifier"] + list(listeners)
    # Frechet distance to the real clips in each judge's own embedding space (classifier: 32-d,
    # listener: 64-d), with the spread of the real clips (trace of their covariance) as the scale
    for name, r in res["sets"].items():
        for j in judges:
            real_emb = res["sets"]["real"][j]["embed"]
            r[j]["frechet"] = float(M.frechet_distance(real_emb, r[j]["embed"]))
            r[j]["frechet_rel"] = r[j]["frechet"] / float(np.trace(np.cov(real_emb, rowvar=False)))
    print("accuracy (mean probability of the right digit):\n")
    print("| set | n | " + " | ".join(judges) + " |")
    print("|---|---|" + "---|" * len(judges))
    for name, r in res["sets"].items():
        print(f"| {name} | {r['n']} | " + " | ".join(
            f"{100 * r[j]['accuracy']:.1f} % ({r[j]['p_wanted']:.2f})" for j in judges) + " |")
    print("\nFrechet distance to the real clips in each judge's embedding space "
          "(in units of the real clips' total variance):\n")
    print("| set | " + " | ".join(judges) + " |")
    print("|---|" + "---|" * len(judges))
    for name, r in res["sets"].items():
        if name != "real":
            print(f"| {name} | " + " | ".join(f"{r[j]['frechet_rel']:.3f}" for j in judges) + " |")
    for name in ("vq-vae", "generated"):
        print(f"\nper digit, {name} (accuracy %):\n")
        print("| judge | " + " | ".join(str(d) for d in range(10)) + " |")
        print("|---|" + "---|" * 10)
        for j in judges:
            print(f"| {j} | " + " | ".join(f"{100 * a:.0f}" for a in res["sets"][name][j]["per_digit"]) + " |")
    for r in res["sets"].values():
        for j in judges:
            r[j]["pred"] = r[j]["pred"].tolist()
            del r[j]["embed"]
    (work / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
