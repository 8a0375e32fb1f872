"""Mel-to-audio before and after: the log floor gated to silence, Griffin-Lim settings, both judges.

    MINIVQ_FSDD=/path/to/fsdd python benchmarks/sound_study.py [--cr4 RUN/vqvae.npz] \
        [--per-digit 30] [--configs floor-64,gate-64,...] [--work out/sound_study] [--page]

Four kinds of log-mel, all from FSDD's 300 official test clips and the shipped bundle
(minivq/pretrained) unless said otherwise, each turned into sound by audio.mel_to_audio under
several settings ("configs"), then judged:

  griffin-lim  the test clips' own log-mel (the vocoder alone)
  cr16         the shipped CR=16 VQ-VAE's reconstructions of them
  cr4          a CR=4 VQ-VAE's reconstructions (--cr4 vqvae.npz; skipped without it)
  generated    bundle samples with the bundle's sampling defaults, seed 0, --per-digit per digit

Measures per set and config (B clips; "ref" = the prepared recording, trimmed and centred in
the 1.024 s window, exactly zero outside its trimmed sound):
  classifier   the project's classifier on prepare + 64x64 log-mel of the sound (first judge)
  listener     the shipped listener (minivq.listener, MFCCs of the waveform; second judge)
  SC           spectral convergence || |S| - |R| ||_F / || |R| ||_F of the sound's STFT S against
               the ref's STFT R (n_fft 512, hop 128; sets with a ref only)
  leak dB      10 log10 of the sound's energy where the ref is exactly zero over its total
               energy: sound placed where the recording is silent (-inf for the ref itself)
  silence dB   10 log10 of the sound's energy in the frames whose log-mel is within 2 nats of
               the floor (every set; hop-wide slices centred on those frames) over its total
  edge HF dB   energy above 2 kHz in a 32 ms Hann window centred on each end of the ref's sound,
               sound over ref, in dB, averaged over both ends and all clips: a click at the
               gate edges is broadband, so it shows as high-frequency energy the recording lacks

Writes to --work: logmels/ (the recordings and the log-mels of every set, reused), waves/<config>/<set>.npz
(the sounds, reused), results_pd<N>.json and results_pd<N>.md (the tables), figures (spectrograms real /
round trip / CR=16 / CR=4 / generated for the listener's weakest digits "two", "three", "six",
before and after; onsets of the same waves), the figures' WAVs, and with --page an HTML
listening page (minivq.listening) comparing the two syntheses.
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
from minivq import bundle as G  # noqa: E402
from minivq import data as D  # noqa: E402
from minivq import evaluate as E  # noqa: E402
from minivq import listening as LP  # noqa: E402
from minivq import vqvae as V  # noqa: E402

# name -> mel_to_audio settings; "floor-64" is the synthesis before the gate (the baseline)
CONFIGS = {
    "floor-64": dict(silence="floor", n_iter=64),
    "gate-64": dict(silence="gate", n_iter=64),
    "gate-128": dict(silence="gate", n_iter=128),
    "gate-256": dict(silence="gate", n_iter=256),
    "gate-64-nmf100": dict(silence="gate", n_iter=64, nmf_iter=100),
    "gate-64-mom0.9": dict(silence="gate", n_iter=64, momentum=0.9),
    "gate-64-refit": dict(silence="gate", n_iter=64, refit_steps=1, refit_after=16),
    "gate-128-refit": dict(silence="gate", n_iter=128, refit_steps=1, refit_after=32),
}
SETS = ("griffin-lim", "cr16", "cr4", "generated")
WEAK = (2, 3, 6)  # the listener's weakest digits on generations
BEFORE, AFTER = "floor-64", "gate-64"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- the log-mels
def make_logmels(work, fsdd, bundle, cr4, per_digit, seed):
    """-> (dict set -> {"logmel": (B, M, T), "digit": (B,)}, ref (300, N) prepared recordings,
    raw: the recordings as read (the listener's real clips), y (300,) digits). Each piece is
    cached in ``work`` and read back by later runs, so a set added later (--cr4) costs only itself."""
    fc = bundle.features
    cache = work / "logmels"
    cache.mkdir(parents=True, exist_ok=True)
    rpath = cache / "recordings.npz"
    if rpath.is_file():
        z = np.load(rpath)
        ref, y, raw = z["ref"], z["y"], np.split(z["raw"], np.cumsum(z["raw_len"])[:-1])
    else:
        _, test = D.split_clips(D.scan(fsdd), "official")
        y = np.array([c.digit for c in test])  # (300,)
        raw = [A.load_wav(c.path, fc.sr) for c in test]
        ref = np.stack([A.prepare(w, fc) for w in raw])  # (300, N)
        np.savez(rpath, ref=ref, y=y, raw=np.concatenate(raw), raw_len=np.array([len(w) for w in raw]))
    x = A.log_mel(ref, fc)  # (300, M, T)

    def cached(name, make):
        path = cache / f"{name}.npz"
        if not path.is_file():
            t0 = time.perf_counter()
            logmel, digit = make()
            np.savez(path, logmel=np.asarray(logmel, dtype=np.float32), digit=np.asarray(digit))
            log(f"{name}: made {len(digit)} log-mels in {time.perf_counter() - t0:.0f} s")
        z = np.load(path)
        return {"logmel": z["logmel"], "digit": z["digit"]}

    def recon(vq):
        vp, vc, vn = vq
        return V.decode_logmel(vp, vc, vn, V.encode_logmel(vp, vc, vn, x)), y

    def generate():
        digits = np.repeat(np.arange(10), per_digit)  # (10 * per_digit,)
        # gl_iters=1: only the decoder's log-mel is kept; the study synthesises it itself
        g = G.generate_clips(bundle, digits, seed=seed, gl_iters=1, **G.bundle_sampling(bundle))
        return g["logmel"], digits

    sets = {"griffin-lim": {"logmel": x, "digit": y}, "cr16": cached("cr16", lambda: recon(bundle.vqvae))}
    if cr4:
        sets["cr4"] = cached("cr4", lambda: recon(V.load_vqvae(cr4)))
    sets["generated"] = cached(f"generated_pd{per_digit}_seed{seed}", generate)
    return sets, ref, raw, y


def synthesise(logmel, fc, cfg, seed=0, batch=100):
    """mel_to_audio in batches, seeded per batch as evaluate.to_audio seeds it: (B, N)."""
    waves = [A.mel_to_audio(logmel[i:i + batch], fc, seed=seed + i, **cfg) for i in range(0, len(logmel), batch)]
    return np.concatenate(waves)


# ------------------------------------------------------------------------------- measures
def db(x):
    return 10.0 * np.log10(np.maximum(x, 1e-30))


def spectral_convergence(waves, ref, fc):
    """(B,) SC of each sound's STFT magnitude against its ref's."""
    return A.spectral_convergence(np.abs(A.stft(waves, fc.n_fft, fc.hop)), np.abs(A.stft(ref, fc.n_fft, fc.hop)))


def leak_db(waves, ref):
    """(B,) dB: energy of the sound where the ref is exactly zero over its total energy."""
    e = waves.astype(np.float64) ** 2  # (B, N)
    return db((e * (ref == 0)).sum(1) / np.maximum(e.sum(1), 1e-30))


def silence_db(waves, logmel, fc, margin=2.0):
    """(B,) dB: energy of the sound in the hop-wide slices centred on frames whose loudest band is
    within ``margin`` nats of the floor, over the sound's total energy."""
    quiet = logmel.max(axis=-2) <= np.log(fc.log_floor) + margin  # (B, T)
    # sample n belongs to frame round(n / hop)
    frame_of = np.minimum((np.arange(fc.n_samples) + fc.hop // 2) // fc.hop, quiet.shape[-1] - 1)  # (N,)
    mask = quiet[:, frame_of]  # (B, N)
    e = waves.astype(np.float64) ** 2
    return db((e * mask).sum(1) / np.maximum(e.sum(1), 1e-30))


def edge_hf_db(waves, ref, fc, half=128, f_lo=2000.0):
    """(B,) dB: energy above f_lo in Hann windows of 2 * half samples centred on the first and the
    last non-zero sample of each ref, sound over ref, averaged (in dB) over the two ends."""
    nz = ref != 0  # (B, N)
    first = nz.argmax(1)
    last = ref.shape[1] - 1 - nz[:, ::-1].argmax(1)
    w = A.hann(2 * half)  # (2 half,)
    hi = np.fft.rfftfreq(2 * half, 1.0 / fc.sr) >= f_lo  # (2 half // 2 + 1,)
    pad = lambda a: np.pad(a, ((0, 0), (half, half)))  # noqa: E731
    wp, rp = pad(waves.astype(np.float64)), pad(ref.astype(np.float64))  # (B, N + 2 half)
    out = np.zeros(len(ref))
    for edge in (first, last):
        idx = edge[:, None] + np.arange(2 * half)[None, :]  # (B, 2 half) window start = edge - half (padded)
        seg_w = np.take_along_axis(wp, idx, 1) * w
        seg_r = np.take_along_axis(rp, idx, 1) * w
        ew = (np.abs(np.fft.rfft(seg_w, axis=1)[:, hi]) ** 2).sum(1)
        er = (np.abs(np.fft.rfft(seg_r, axis=1)[:, hi]) ** 2).sum(1)
        out += 0.5 * (db(ew) - db(er))
    return out


def ceilings(work, ref, fc, seed=0):
    """Where the round trip's spectral convergence comes from, on the recordings (cached in
    work/ceilings.json): the mel inversion alone (its magnitude against the recording's, no phase
    involved) and Griffin-Lim alone (phase retrieval from the recording's own STFT magnitude)."""
    path = work / "ceilings.json"
    if path.is_file():
        return json.loads(path.read_text())
    R = np.abs(A.stft(ref, fc.n_fft, fc.hop))  # (300, F, T + 1)
    x = A.log_mel(ref, fc)  # (300, M, T)
    out = {}
    for nmf in (30, 100):
        mag = np.sqrt(A.mel_to_linear(x, fc, n_iter=nmf))  # (300, F, T)
        out[f"mel inversion alone, {nmf} IS-NMF steps"] = float(A.spectral_convergence(mag, R[..., :fc.n_frames]).mean())
    for n_iter in (64, 256):
        w = np.concatenate([A.griffin_lim(R[i:i + 100], n_iter=n_iter, seed=seed + i, hop=fc.hop, length=fc.n_samples)
                            for i in range(0, len(R), 100)])  # (300, N)
        out[f"Griffin-Lim alone on the recording's magnitude, {n_iter} iterations"] = float(
            spectral_convergence(w, ref, fc).mean())
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def judge_all(waves, digit, bundle, fc):
    """Both judges on waves (B, N): accuracy, per digit accuracy, predictions."""
    c = E.judge(bundle.classifier, E.featurise(waves, fc), want=digit)
    li = E.listen(bundle.listener, waves, fc.sr, want=digit)
    per = lambda v: [float((v["pred"][digit == d] == d).mean()) for d in range(10)]  # noqa: E731
    return {"classifier": c["accuracy"], "listener": li["accuracy"],
            "classifier_per_digit": per(c), "listener_per_digit": per(li),
            "classifier_pred": c["pred"].tolist(), "listener_pred": li["pred"].tolist(),
            "classifier_conf": c["confidence"].tolist(), "listener_conf": li["confidence"].tolist()}


# ------------------------------------------------------------------------------- figures
def onset_figure(path, rows, fc):
    """Waveforms around the start of the sound: one row per (label, ref, before, after)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.0 * len(rows)), squeeze=False)
    for ax, (label, ref, before, after) in zip(axes[:, 0], rows):
        s = int((ref != 0).argmax())
        lo, hi = max(s - 600, 0), min(s + 600, fc.n_samples)
        t = (np.arange(lo, hi) - s) / fc.sr * 1000.0  # ms from the recording's first sample
        ax.plot(t, before[lo:hi], lw=0.7, color="tab:red", label=f"before ({BEFORE})")
        ax.plot(t, after[lo:hi], lw=0.7, color="tab:blue", label=f"after ({AFTER})")
        ax.plot(t, ref[lo:hi], lw=0.7, color="k", alpha=0.6, label="recording (prepared)")
        ax.axvline(0, color="grey", ls=":")
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("amplitude")
        peak = max(np.abs(ref[lo:hi]).max(), 1e-3)
        ax.set_ylim(-1.2 * peak, 1.2 * peak)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("ms from the first sample of the trimmed recording")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectrogram_figure(path, columns, rows, fc, title):
    """Grid of STFT magnitudes in dB (one colour range): rows = digits, columns = sounds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.1 * len(columns), 2.0 * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, waves) in enumerate(rows):
        for c, (col, wave) in enumerate(zip(columns, waves)):
            ax = axes[r, c]
            S = 20 * np.log10(np.abs(A.stft(wave.astype(np.float64), fc.n_fft, fc.hop)) + 1e-6)  # (F, T) dB
            ax.imshow(S, origin="lower", aspect="auto", vmin=-60, vmax=50, cmap="magma",
                      extent=[0, len(wave) / fc.sr, 0, fc.sr / 2000])
            if r == 0:
                ax.set_title(col, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{label}\nkHz", fontsize=8)
            else:
                ax.set_yticks([])
            if r < len(rows) - 1:
                ax.set_xticks([])
            ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--fsdd", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder (default: $MINIVQ_FSDD)")
    ap.add_argument("--bundle", default=str(G.DEFAULT_CHECKPOINT), help="model bundle folder (with listener.npz)")
    ap.add_argument("--cr4", default=None, help="a CR=4 VQ-VAE checkpoint (vqvae.npz); its set is skipped without it")
    ap.add_argument("--per-digit", type=int, default=30, help="generations per digit")
    ap.add_argument("--seed", type=int, default=0, help="generation and Griffin-Lim seed")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs to run, of: " + ", ".join(CONFIGS))
    ap.add_argument("--work", default="out/sound_study", help="output folder (sounds and log-mels are reused)")
    ap.add_argument("--page", action="store_true", help="also write the HTML listening page")
    args = ap.parse_args(argv)
    if not args.fsdd:
        print("error: pass --fsdd or set MINIVQ_FSDD to the FSDD folder", file=sys.stderr)
        return 1
    names = [c for c in args.configs.split(",") if c]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        print(f"error: unknown config(s) {', '.join(bad)}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 1
    for must in (BEFORE, AFTER):
        if must not in names:
            names.insert(0, must)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        bundle = G.load_bundle(args.bundle, cond="class")
        if bundle.listener is None:
            raise ValueError(f"the bundle {args.bundle} has no listener.npz (the second judge)")
        fc = bundle.features
        sets, ref, raw, y = make_logmels(work, args.fsdd, bundle, args.cr4, args.per_digit, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    res = {"bundle": args.bundle, "cr4": args.cr4, "per_digit": args.per_digit, "seed": args.seed,
           "configs": {n: CONFIGS[n] for n in names}, "results": {}}
    # the recordings themselves, for scale
    real_c = E.judge(bundle.classifier, A.log_mel(ref, fc), want=y)
    real_l = E.listen(bundle.listener, raw, fc.sr, want=y)
    res["real"] = {"classifier": real_c["accuracy"], "listener": real_l["accuracy"],
                   "edge_hf_db_ref": 0.0, "leak_db": float("-inf")}
    waves_of = {}
    for cname in names:
        for sname, s in sets.items():
            tag = f"_pd{args.per_digit}" if sname == "generated" else ""
            wpath = work / "waves" / cname / f"{sname}{tag}_seed{args.seed}.npz"
            if wpath.is_file():
                w = np.load(wpath)["waves"]
            else:
                t0 = time.perf_counter()
                w = synthesise(s["logmel"], fc, CONFIGS[cname], seed=args.seed)
                wpath.parent.mkdir(parents=True, exist_ok=True)
                np.savez(wpath, waves=w)
                log(f"{cname} / {sname}: synthesised {len(w)} in {time.perf_counter() - t0:.0f} s")
            waves_of[cname, sname] = w
            j = judge_all(w, s["digit"], bundle, fc)
            r = {"n": len(w), **j, "silence_db": float(np.mean(silence_db(w, s["logmel"], fc)))}
            if sname != "generated":  # a recording to compare with
                r["sc"] = float(np.mean(spectral_convergence(w, ref, fc)))
                r["leak_db"] = float(np.mean(leak_db(w, ref)))
                r["edge_hf_db"] = float(np.mean(edge_hf_db(w, ref, fc)))
            res["results"].setdefault(cname, {})[sname] = r
            log(f"{cname} / {sname}: classifier {100 * r['classifier']:.1f} %, listener {100 * r['listener']:.1f} %"
                + (f", SC {r['sc']:.4f}, leak {r['leak_db']:.1f} dB, edge HF {r['edge_hf_db']:+.1f} dB"
                   if "sc" in r else "") + f", silence {r['silence_db']:.1f} dB")
    res["ceilings"] = ceilings(work, ref, fc, args.seed)
    md = results_markdown(res, names, list(sets))
    (work / f"results_pd{args.per_digit}.md").write_text(md)
    slim = json.loads(json.dumps(res, default=float))
    for per_set in slim["results"].values():
        for r in per_set.values():
            for k in ("classifier_pred", "listener_pred", "classifier_conf", "listener_conf"):
                r.pop(k, None)
    (work / f"results_pd{args.per_digit}.json").write_text(json.dumps(slim, indent=2) + "\n")
    print(md)
    figures_and_page(work, sets, ref, raw, y, waves_of, res, bundle, fc, args.page, md)
    return 0


def results_markdown(res, names, set_names):
    lines = [f"real test clips (300): classifier {100 * res['real']['classifier']:.1f} %, "
             f"listener {100 * res['real']['listener']:.1f} %\n",
             "| set | synthesis | n | classifier | listener | SC vs recording | leak dB | silence dB | edge HF dB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for sname in set_names:
        for cname in names:
            r = res["results"][cname][sname]
            f = (lambda k, fmt: format(r[k], fmt) if k in r else "n/a")  # noqa: E731
            lines.append(f"| {sname} | {cname} | {r['n']} | {100 * r['classifier']:.1f} % | {100 * r['listener']:.1f} % | "
                         f"{f('sc', '.4f')} | {f('leak_db', '.1f')} | {r['silence_db']:.1f} | {f('edge_hf_db', '+.1f')} |")
    lines += ["", "spectral convergence against the recordings' STFT magnitude, one stage at a time (300 test clips):", "",
              "| stage | SC |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in res.get("ceilings", {}).items()]
    lines += ["", f"per digit ({BEFORE} -> {AFTER}), accuracy %:", "",
              "| set | judge | " + " | ".join(str(d) for d in range(10)) + " |", "|---|---|" + "---|" * 10]
    for sname in set_names:
        for judge in ("classifier", "listener"):
            b = res["results"][BEFORE][sname][f"{judge}_per_digit"]
            a = res["results"][AFTER][sname][f"{judge}_per_digit"]
            lines.append(f"| {sname} | {judge} | " + " | ".join(f"{100 * u:.0f}→{100 * v:.0f}" for u, v in zip(b, a)) + " |")
    return "\n".join(lines) + "\n"


def figures_and_page(work, sets, ref, raw, y, waves_of, res, bundle, fc, page, md):
    figs = work / "figures"
    figs.mkdir(exist_ok=True)
    cols = ["recording"]
    set_names = [s for s in SETS if s in sets]
    for sname in set_names:
        cols += [f"{sname} before", f"{sname} after"]
    rows, onsets, picks = [], [], {}
    for d in WEAK:
        i = int(np.flatnonzero(y == d)[0])  # the first test clip of the digit
        k = int(np.flatnonzero(sets["generated"]["digit"] == d)[0])  # the first generation of it
        picks[d] = (i, k)
        waves = [ref[i]]
        for sname in set_names:
            j = k if sname == "generated" else i
            waves += [waves_of[BEFORE, sname][j], waves_of[AFTER, sname][j]]
        rows.append((f"digit {d}", waves))
        for sname in ("griffin-lim", "cr16"):
            onsets.append((f"digit {d}, {sname}, test clip {i}", ref[i], waves_of[BEFORE, sname][i],
                           waves_of[AFTER, sname][i]))
    spectrogram_figure(figs / "spectrograms_weak_digits.png", cols, rows, fc,
                       f"STFT magnitude (dB) of the sounds; before = {BEFORE}, after = {AFTER}")
    onset_figure(figs / "onsets_weak_digits.png", onsets, fc)
    wav_dir = work / "wavs"
    wav_dir.mkdir(exist_ok=True)
    for d, (i, k) in picks.items():
        A.save_wav(wav_dir / f"digit{d}_recording.wav", ref[i], fc.sr)
        for sname in set_names:
            j = k if sname == "generated" else i
            for tag, cname in (("before", BEFORE), ("after", AFTER)):
                A.save_wav(wav_dir / f"digit{d}_{sname}_{tag}.wav", waves_of[cname, sname][j], fc.sr)
    log(f"figures in {figs}, WAVs in {wav_dir}")
    if not page:
        return
    sections = [LP.Section("measurements", markdown=md,
                           figures=[LP.Figure(figs / "spectrograms_weak_digits.png", "STFT magnitude, dB"),
                                    LP.Figure(figs / "onsets_weak_digits.png", "the first 75 ms")])]
    for sname in set_names:
        rows = []
        for tag, cname in (("before", BEFORE), ("after", AFTER)):
            r = res["results"][cname][sname]
            clips = []
            for d in WEAK:
                for j in np.flatnonzero(sets[sname]["digit"] == d)[:3]:
                    w = waves_of[cname, sname][j]
                    clips.append(LP.Clip(w, A.log_mel(A.prepare(w, fc), fc),
                                         [("classifier", r["classifier_pred"][j], r["classifier_conf"][j]),
                                          ("listener", r["listener_pred"][j], r["listener_conf"][j])],
                                         want=int(d), name=f"{sname} #{j} {tag}"))
            rows.append((f"{tag}: {cname}", clips))
        if sname != "generated":
            real = [LP.Clip(ref[j], A.log_mel(ref[j], fc), [], want=int(d), name=f"recording #{j}")
                    for d in WEAK for j in np.flatnonzero(y == d)[:3]]
            rows.insert(0, ("recording", real))
        sections.append(LP.Section(sname, galleries=[LP.Gallery(sname, rows, sr=fc.sr,
                                   note="three clips each of the digits two, three and six")]))
    path = LP.write_page(work / "listening.html", "mel-to-audio before and after: the floor gated to silence",
                         sections, intro=[f"before: {BEFORE} = {CONFIGS[BEFORE]}; after: {AFTER} = {CONFIGS[AFTER]}"])
    log(f"listening page: {path}")


if __name__ == "__main__":
    sys.exit(main())
