"""Lesson 01: from a waveform to the 64 x 64 log-mel image the models see, and back to sound.

    python lessons/01_stft.py [--quick] [--out out/lesson01]

1. A clip is trimmed, peak-normalised and centred in 8192 samples (1.024 s at 8 kHz).
2. The STFT (Hann, 512-sample window, hop 128) turns it into 257 frequency bins x 65 frames of
   complex numbers; with the phase kept, the inverse STFT gives the waveform back exactly.
3. The model only sees magnitudes, pooled into 64 mel bands, logged: a (64, 64) image.
4. Griffin-Lim guesses a phase that fits a magnitude; spectral convergence (SC) tracks how well
   the re-analysed spectrogram matches the one we asked for. From the mel image we first
   spread power back over 257 bins (non-negative fit), then run Griffin-Lim.
Clips come from MINIVQ_FSDD (a few official test clips); without it, a synthetic chirp.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import audio as A  # noqa: E402
from minivq import data  # noqa: E402

DIGITS = (0, 3, 7)           # which digits to take from FSDD's test split (first take of each)
QUICK_DIGITS = (3,)
N_ITER = 128                 # Griffin-Lim iterations for the full lesson
QUICK_N_ITER = 64            # the library default
BLOCK = 8                    # print SC every BLOCK iterations
SEED = 0


def real_clips(root, digits):
    """[(name, (N,) wave)] for the first official-test clip of each digit in ``digits``."""
    _, test = data.split_clips(data.scan(root), "official")
    out = []
    for d in digits:
        c = min((c for c in test if c.digit == d), key=lambda c: (c.take, c.speaker))
        out.append((c.path.stem, A.load_wav(c.path)))
    return out


def chirp_clip(sr=8000):
    """A rising harmonic chirp (150 -> 400 Hz fundamental) under a smooth envelope, 0.8 s."""
    t = np.arange(int(0.8 * sr)) / sr
    f0 = 150 + 250 * t / t[-1]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 9))
    return [("chirp", (x * np.hanning(len(t))).astype(np.float32))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one clip, fewer iterations")
    ap.add_argument("--out", default="out/lesson01", help="folder for the figure and WAVs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = A.FeatureConfig()
    n_iter = QUICK_N_ITER if args.quick else N_ITER
    t_start = time.perf_counter()

    root = os.environ.get("MINIVQ_FSDD")
    try:
        clips = real_clips(root, QUICK_DIGITS if args.quick else DIGITS) if root else chirp_clip(cfg.sr)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"clips: {[n for n, _ in clips]} ({'MINIVQ_FSDD' if root else 'synthetic: MINIVQ_FSDD is not set'})")

    # 1. trim, normalise, centre
    raw = [w for _, w in clips]
    waves = np.stack([A.prepare(w, cfg) for w in raw])                       # (B, N)
    for (name, w), p in zip(clips, waves):
        print(f"  {name}: {len(w) / cfg.sr:.3f} s raw -> {len(p) / cfg.sr:.3f} s centred, peak {np.abs(p).max():.2f}")

    # 2. STFT and its exact inverse
    S = A.stft(waves.astype(np.float64), cfg.n_fft, cfg.hop)                # (B, F, T+1)
    back = A.istft(S, cfg.hop, length=cfg.n_samples)                         # (B, N)
    print(f"STFT: {waves.shape} -> {S.shape} complex (bins x frames); "
          f"bin spacing {cfg.sr / cfg.n_fft:.2f} Hz, frame step {1000 * cfg.hop / cfg.sr:.0f} ms")
    print(f"istft(stft(x)) max error with the true phase: {np.abs(back - waves).max():.2e}")

    # 3. mel pooling and log
    L = A.log_mel(waves, cfg)                                                 # (B, M, T)
    print(f"log-mel: {L.shape}, range [{L.min():.2f}, {L.max():.2f}] nats (floor log {cfg.log_floor:g} = "
          f"{np.log(cfg.log_floor):.2f}); {A.mel_filterbank(cfg).shape[0]} HTK-mel bands over "
          f"{cfg.fmin:.0f}-{cfg.fmax:.0f} Hz")

    # 4. Griffin-Lim from the linear magnitude, with and without momentum
    mag = np.abs(S)                                                           # (B, F, T+1)
    y_lin, sc_fast = A.griffin_lim(mag, n_iter=n_iter, seed=SEED, hop=cfg.hop, length=cfg.n_samples,
                                   return_history=True)
    _, sc_plain = A.griffin_lim(mag, n_iter=n_iter, momentum=0.0, seed=SEED, hop=cfg.hop, return_history=True)
    print("Griffin-Lim spectral convergence (mean over clips; lower is better)")
    print("  iteration   fast (momentum 0.99)   plain")
    for i in list(range(0, n_iter, BLOCK)) + [n_iter - 1]:
        print(f"  {i + 1:9d}   {sc_fast[i].mean():20.4f}   {sc_plain[i].mean():.4f}")

    # 5. the path the generator uses: log-mel -> linear power -> Griffin-Lim
    y_mel = A.mel_to_audio(L, cfg, n_iter=n_iter, seed=SEED)                   # (B, N)
    sc_mel = A.spectral_convergence(A.stft(y_mel.astype(np.float64)), mag)
    dist = np.abs(A.log_mel(y_mel, cfg) - L).mean(axis=(1, 2))
    print(f"mel -> audio: SC against the true magnitude {sc_mel.mean():.3f}; "
          f"log-mel of the result differs by {dist.mean():.3f} nats on average")

    # figure: one row per clip, plus the convergence curves
    B = len(clips)
    fig, ax = plt.subplots(B + 1, 4, figsize=(16, 3.2 * (B + 1)))
    t = np.arange(cfg.n_samples) / cfg.sr
    ext = [0, cfg.n_samples / cfg.sr, 0, cfg.sr / 2]
    for b, (name, _) in enumerate(clips):
        ax[b, 0].plot(t, waves[b], lw=0.5)
        ax[b, 0].set(title=f"{name}: waveform", xlabel="s")
        ax[b, 1].imshow(20 * np.log10(mag[b] + 1e-6), origin="lower", aspect="auto", extent=ext, cmap="magma")
        ax[b, 1].set(title="|STFT| (dB)", xlabel="s", ylabel="Hz")
        ax[b, 2].imshow(L[b], origin="lower", aspect="auto", cmap="magma")
        ax[b, 2].set(title="log-mel (64 x 64)", xlabel="frame", ylabel="mel band")
        ax[b, 3].imshow(A.log_mel(y_mel[b], cfg), origin="lower", aspect="auto", cmap="magma")
        ax[b, 3].set(title=f"log-mel after mel->audio ({dist[b]:.2f} nats off)", xlabel="frame")
        A.save_wav(out / f"{name}_original.wav", waves[b], cfg.sr)
        A.save_wav(out / f"{name}_griffinlim_linear.wav", y_lin[b], cfg.sr)
        A.save_wav(out / f"{name}_griffinlim_mel.wav", y_mel[b], cfg.sr)
    it = np.arange(1, n_iter + 1)
    ax[B, 0].semilogy(it, sc_fast.mean(1), label="fast GL (momentum 0.99)")
    ax[B, 0].semilogy(it, sc_plain.mean(1), label="plain GL")
    ax[B, 0].set(title="spectral convergence", xlabel="iteration")
    ax[B, 0].legend()
    ax[B, 1].plot(t, y_lin[0], lw=0.5)
    ax[B, 1].set(title=f"{clips[0][0]}: Griffin-Lim from |STFT|", xlabel="s")
    ax[B, 2].plot(t, y_mel[0], lw=0.5)
    ax[B, 2].set(title=f"{clips[0][0]}: Griffin-Lim from log-mel", xlabel="s")
    ax[B, 3].imshow(A.mel_filterbank(cfg), origin="lower", aspect="auto", cmap="viridis")
    ax[B, 3].set(title="mel filterbank (rows sum to 1)", xlabel="STFT bin", ylabel="mel band")
    fig.tight_layout()
    fig.savefig(out / "stft_roundtrip.png", dpi=90)
    plt.close(fig)
    print(f"wrote {out / 'stft_roundtrip.png'} and {3 * B} WAVs to {out} in {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
