"""Voice conditioning, measured: does a digit+speaker prior say the digit, in the voice asked for?

    python -m minivq.voice --prior runs/prior_speaker/prior.npz --speaker-judge runs/spk/classifier.npz \
        --data $MINIVQ_FSDD --out runs/voice_eval [--n 20] [--temperature 0.7] [--guidance 1]

For every (digit, speaker) pair the prior knows, n clips are sampled with that digit and that
speaker, decoded by the bundle's VQ-VAE and turned into sound (the path every judged clip takes,
minivq.evaluate), then judged twice: the bundle's digit classifier (is it the digit?) and a
speaker classifier trained on real recordings with the same CNN recipe (``python -m minivq.train
classifier --target speaker``; is it the speaker?). TopP&R, PRDC and the Frechet distance compare
the clips with the real test recordings in the digit classifier's embedding space, as the
pipeline does for the class-only prior.

``--baseline`` measures a prior without speakers the same way (the bundle's class-conditional
prior unless --prior names another): n * S clips per digit, so the two runs judge equally many
clips; its "speaker accuracy" is measured against the same requests, which it cannot hear, so it
sits near chance (1/S) and shows what the speaker condition adds.

Size letters: B clips, S speakers, M mel bands, T frames.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from minivq import cli, data, evaluate
from minivq.bundle import DEFAULT_CHECKPOINT, bundle_sampling, generate_clips, load_bundle
from minivq.classifier import load_classifier
from minivq.generate import with_prior
from minivq.vqvae import decode_logmel
from minivq import outdir  # output folders: checked, locked, recorded


def voice_requests(speakers, n, digits=range(10)):
    """Every (digit, speaker) pair n times, digit-major -> digits (B,), speaker names (B,)."""
    names = list(speakers)
    d = np.repeat(np.asarray(list(digits), dtype=np.int64), len(names) * n)  # (B,)
    s = np.tile(np.repeat(np.array(names), n), len(list(digits)))  # (B,)
    return d, s


def measure(bundle, speaker_judge, real_logmel, n=20, seed=0, gl_iters=64, chunk=200, baseline=False,
            speakers=None, **sampling):
    """Sample, vocode and judge n clips per (digit, speaker) pair -> a JSON-ready dict.

    bundle: a Bundle whose conditional prior has speakers (or none with baseline=True, then
    ``speakers`` names the requests, default the judge's labels). speaker_judge: (params, cfg, norm)
    of a speaker classifier. real_logmel: (N, M, T) real test clips for the distribution metrics.
    Clips are made ``chunk`` at a time (bounded memory), chunk c with seed + c. sampling: temperature,
    top_k, top_p, guidance (generate_clips)."""
    pcfg = bundle.prior[1]
    if not baseline and not pcfg.speakers:
        raise ValueError("this prior has no speaker condition; measure it with baseline=True (--baseline)")
    if baseline and pcfg.speakers:
        raise ValueError("baseline=True is for a prior without speakers")
    names = list(pcfg.speakers) if not baseline else list(speakers or speaker_judge[1].labels)
    digits, voices = voice_requests(names, n)  # (B,), (B,)
    t0 = time.perf_counter()
    parts = []
    for c, i in enumerate(range(0, len(digits), chunk)):
        r = generate_clips(bundle, digits[i:i + chunk], seed=seed + c, gl_iters=gl_iters,
                           speakers=None if baseline else voices[i:i + chunk], **sampling)
        parts.append({k: r[k] for k in ("heard", "tokens")})
        print(f"  {min(i + chunk, len(digits))}/{len(digits)} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    heard = np.concatenate([p["heard"] for p in parts])  # (B, M, T)
    seconds = time.perf_counter() - t0
    dv = evaluate.judge(bundle.classifier, heard, want=digits)
    sv = evaluate.judge_speaker(speaker_judge, heard, want=voices)
    real = evaluate.judge(bundle.classifier, real_logmel)
    real_s = evaluate.judge(speaker_judge, real_logmel)
    ok_d, ok_s = dv["pred"] == digits, sv["names"] == voices  # (B,) each
    per_speaker = {s: {"digit_accuracy": float(ok_d[voices == s].mean()),
                       "speaker_accuracy": float(ok_s[voices == s].mean()),
                       "heard_as": {h: int(k) for h, k in zip(*np.unique(sv["names"][voices == s], return_counts=True))}}
                   for s in names}
    counts = np.unique(sv["names"], return_counts=True)
    return {"n_clips": int(len(digits)), "n_per_pair": n, "speakers": names, "baseline": baseline,
            "sampling": sampling, "seed": seed, "gl_iters": gl_iters, "seconds": seconds,
            "digit_accuracy": float(ok_d.mean()), "speaker_accuracy": float(ok_s.mean()),
            "both_accuracy": float((ok_d & ok_s).mean()),
            "per_digit_accuracy": [float(ok_d[digits == d].mean()) for d in range(10)],
            "per_speaker": per_speaker,
            "speaker_confusion": {"labels": list(speaker_judge[1].labels), "rows": sv["confusion"].tolist()},
            "heard_speakers": {h: int(k) for h, k in zip(*counts)},
            "heard_speaker_entropy_bits": evaluate.entropy_bits(counts[1]),
            "digit_space": evaluate.distribution_metrics(real["embed"], dv["embed"], seed),
            "speaker_space": evaluate.distribution_metrics(real_s["embed"], sv["embed"], seed)}


def reconstruction_reference(bundle, speaker_judge, tokens, seed=0, gl_iters=64):
    """The ceiling of the speaker judge on this VQ-VAE: the real test clips' own token grids
    (tokens: a mapping with test_tokens (N, h, w), test_digit (N,), test_speaker (N,) as the
    VQ-VAE trainer's tokens.npz holds them), decoded and vocoded as generated clips are, judged
    for digit and speaker. -> {"n", "digit_accuracy", "speaker_accuracy"}."""
    vparams, vcfg, vnorm = bundle.vqvae
    logmel = decode_logmel(vparams, vcfg, vnorm, np.asarray(tokens["test_tokens"]).astype(np.int64))  # (N, M, T)
    _, heard = evaluate.round_trip(logmel, bundle.features, n_iter=gl_iters, seed=seed)
    want = np.asarray(tokens["test_speaker"]).astype(str)  # (N,)
    d = evaluate.judge(bundle.classifier, heard, want=np.asarray(tokens["test_digit"], dtype=np.int64))
    s = evaluate.judge_speaker(speaker_judge, heard, want=want)
    return {"n": int(len(want)), "digit_accuracy": float(d["accuracy"]), "speaker_accuracy": float(s["accuracy"])}


@outdir.scoped
def main(argv=None):
    p = cli.ArgumentParser(prog="python -m minivq.voice", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prior", default=None, help="the prior.npz to judge (default with --baseline: the bundle's)")
    p.add_argument("--speaker-judge", required=True, help="speaker classifier (train classifier --target speaker)")
    p.add_argument("--data", default=None, help="FSDD folder (real test clips for TopP&R); default $MINIVQ_FSDD")
    p.add_argument("--out", required=True, help="output folder (voice.json)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model bundle (VQ-VAE, digit classifier)")
    p.add_argument("--n", type=cli.positive_int, default=20, help="clips per (digit, speaker) pair")
    p.add_argument("--temperature", type=cli.positive_float, default=None, help="default: the bundle's")
    p.add_argument("--top-k", type=cli.positive_int, default=None, help="keep only the k most likely codes")
    p.add_argument("--top-p", type=cli.prob, default=None, help="nucleus sampling mass")
    p.add_argument("--guidance", type=cli.nonneg_float, default=None,
                   help="classifier-free guidance with the bundle's unconditional prior (default: the bundle's)")
    p.add_argument("--seed", type=cli.nonneg_int, default=0, help="sampling and Griffin-Lim seed")
    p.add_argument("--gl-iters", type=cli.positive_int, default=64, help="Griffin-Lim iterations")
    p.add_argument("--baseline", action="store_true", help="judge a prior without speakers the same way")
    p.add_argument("--tokens", default=None,
                   help="tokens.npz of the bundle's VQ-VAE: also judge the real test clips' own tokens, decoded "
                        "(the ceiling of what a prior over these tokens can be heard to say)")
    try:
        a = p.parse_args(argv)
        root = a.data or os.environ.get("MINIVQ_FSDD")
        if not root:
            raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
        outdir.hold(a.out, what="--out")
        bundle = load_bundle(a.checkpoint)
        if a.prior is not None:
            bundle = with_prior(bundle, a.prior)
        judge = load_classifier(a.speaker_judge)
        if not judge[1].labels:
            raise ValueError(f"--speaker-judge {a.speaker_judge} is not a speaker classifier (no speaker names)")
        kw = bundle_sampling(bundle)
        kw.update({k: v for k, v in (("temperature", a.temperature), ("top_k", a.top_k), ("top_p", a.top_p),
                                     ("guidance", a.guidance)) if v is not None})
        real = data.load_features(root, split="official").test.x  # (N, M, T)
        res = measure(bundle, judge, real, n=a.n, seed=a.seed, gl_iters=a.gl_iters, baseline=a.baseline, **kw)
        if a.tokens is not None:
            z = np.load(a.tokens)
            if "test_speaker" not in z.files:
                raise ValueError(f"--tokens {a.tokens} has no test_speaker labels")
            res["reconstruction"] = reconstruction_reference(bundle, judge, z, a.seed, a.gl_iters)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["command"] = " ".join(["python -m minivq.voice"] + list(sys.argv[1:] if argv is None else argv))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "voice.json").write_text(json.dumps(res, indent=1))
    m = res["digit_space"]
    print(f"{res['n_clips']} clips: digit accuracy {res['digit_accuracy']:.3f}, speaker accuracy "
          f"{res['speaker_accuracy']:.3f}, both {res['both_accuracy']:.3f}; TopP&R fidelity {m['fidelity']}, "
          f"diversity {m['diversity']}, TopF1 {m['top_f1']}; wrote {out / 'voice.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
