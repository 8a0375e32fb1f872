"""Where does a VQ-VAE lose the spectrogram? Reconstruction error by mel band, by digit, and in
the frames with sound against the silent ones, on the FSDD official test clips.

    MINIVQ_FSDD=/path/to/fsdd python benchmarks/reconstruction_error.py \
        --vqvae minivq/pretrained/vqvae.npz [--vqvae RUN/vqvae_cr4/vqvae.npz] --out OUT

For every VQ-VAE given: encode the 300 test log-mels to tokens, decode, and compare with the
input in nats of log-mel (the models' own scale; 1 nat = 4.3 dB). Frames with sound are those
whose loudest band is more than 2 nats above the log floor (the rule audio.sound_gate uses);
the rest is the window's padding and trimmed silence. Writes OUT/reconstruction_error.json,
OUT/reconstruction_error.md and OUT/reconstruction_error.png (error by band, each model).
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivq import audio as A  # noqa: E402
from minivq import data as D  # noqa: E402
from minivq.backend import to_numpy  # noqa: E402
from minivq.vqvae import decode_logmel, encode_logmel, load_vqvae  # noqa: E402

GROUPS = [(0, 16), (16, 32), (32, 48), (48, 64)]  # mel band groups, low to high


def band_hz(cfg, lo, hi):
    """Centre frequencies (Hz) of mel bands lo and hi - 1."""
    edges = A.mel_to_hz(np.linspace(A.hz_to_mel(cfg.fmin), A.hz_to_mel(cfg.fmax or cfg.sr / 2), cfg.n_mels + 2))
    return float(edges[lo + 1]), float(edges[hi])


def study(path, x, digits, fcfg):
    """x: (N, M, T) test log-mels; -> JSON-ready dict of absolute errors (nats)."""
    params, cfg, norm = load_vqvae(path)
    idx = to_numpy(encode_logmel(params, cfg, norm, x))  # (N, h, w)
    y = to_numpy(decode_logmel(params, cfg, norm, idx))  # (N, M, T)
    err = np.abs(y - x)  # (N, M, T) nats
    floor = np.log(fcfg.log_floor)
    sound = (x.max(axis=1) > floor + 2.0)  # (N, T) frames with sound
    per_band_sound = np.array([err[:, m, :][sound].mean() for m in range(x.shape[1])])  # (M,)
    res = {"vqvae": str(path), "cr": int(cfg.cr) if hasattr(cfg, "cr") else None, "grid": int(cfg.grid),
           "mae_all": float(err.mean()),
           "mae_sound_frames": float(err.transpose(0, 2, 1)[sound].mean()),
           "mae_silent_frames": float(err.transpose(0, 2, 1)[~sound].mean()) if (~sound).any() else None,
           "mae_by_band_sound": per_band_sound.round(4).tolist(),
           "mae_by_group_sound": {f"{lo}-{hi - 1}": float(per_band_sound[lo:hi].mean()) for lo, hi in GROUPS},
           "mae_by_digit_sound": [float(err[digits == d].transpose(0, 2, 1)[sound[digits == d]].mean())
                                  for d in range(10)]}
    # onsets: the first 3 frames with sound of each clip, against the rest of its sound
    onset = np.zeros_like(sound)
    for i in range(len(x)):
        f = np.flatnonzero(sound[i])
        onset[i, f[:3]] = True
    e_t = err.transpose(0, 2, 1)  # (N, T, M)
    res["mae_onset_frames"] = float(e_t[onset].mean())
    res["mae_later_sound_frames"] = float(e_t[sound & ~onset].mean())
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vqvae", action="append", required=True, help="a vqvae.npz (repeat for several)")
    p.add_argument("--fsdd", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder (default $MINIVQ_FSDD)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if not a.fsdd:
        print("error: pass --fsdd or set MINIVQ_FSDD", file=sys.stderr)
        return 2
    feats = D.load_features(a.fsdd, split="official", progress=False)
    x, digits = feats.test.x.astype(np.float32), np.asarray(feats.test.digit)
    rows = [study(v, x, digits, feats.cfg) for v in a.vqvae]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reconstruction_error.json").write_text(json.dumps(rows, indent=1))
    hz = [band_hz(feats.cfg, lo, hi) for lo, hi in GROUPS]
    head = ("| VQ-VAE | grid | all | silent frames | sound frames | onsets (first 3 sound frames) | later sound | "
            + " | ".join(f"bands {lo}-{hi - 1} ({h[0]:.0f}-{h[1]:.0f} Hz)" for (lo, hi), h in zip(GROUPS, hz)) + " |")
    lines = [head, "|" + "---|" * (7 + len(GROUPS))]
    for r in rows:
        g = r["mae_by_group_sound"]
        lines.append(f"| {Path(r['vqvae']).parent.name}/{Path(r['vqvae']).name} | {r['grid']}x{r['grid']} | "
                     f"{r['mae_all']:.3f} | {r['mae_silent_frames']:.3f} | {r['mae_sound_frames']:.3f} | "
                     f"{r['mae_onset_frames']:.3f} | {r['mae_later_sound_frames']:.3f} | "
                     + " | ".join(f"{v:.3f}" for v in g.values()) + " |")
    lines += ["", "| VQ-VAE | " + " | ".join(str(d) for d in range(10)) + " |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['grid']}x{r['grid']} | " + " | ".join(f"{v:.3f}" for v in r["mae_by_digit_sound"]) + " |")
    (out / "reconstruction_error.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in rows:
        ax.plot(r["mae_by_band_sound"], label=f"{r['grid']}x{r['grid']} tokens ({Path(r['vqvae']).parent.name})")
    ax.set_xlabel("mel band (low to high)")
    ax.set_ylabel("mean |error| in frames with sound (nats)")
    ax.set_title("VQ-VAE reconstruction error by mel band, FSDD test clips")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reconstruction_error.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
