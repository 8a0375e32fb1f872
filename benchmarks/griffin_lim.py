"""Griffin-Lim quality on real clips: spectral convergence and the log-mel round trip.

    MINIVQ_FSDD=/path/to/fsdd python benchmarks/griffin_lim.py [--clips 20] [--n-iter 64]

Takes the first ``--clips`` official FSDD test clips (2 per digit by default, chosen by
data.subset), prepares them like the features, and reports at default settings:
- SC of fast Griffin-Lim from the true linear magnitude |STFT|;
- SC of mel_to_audio's output against the true magnitude (phase *and* the mel inversion);
- the mean |log-mel(mel_to_audio(L)) - L| in nats (the loss the generator's audio suffers).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivq import audio as A  # noqa: E402
from minivq import data as D  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--fsdd", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder (default: $MINIVQ_FSDD)")
    ap.add_argument("--clips", type=int, default=20, help="number of test clips (a multiple of 10)")
    ap.add_argument("--n-iter", type=int, default=64, help="Griffin-Lim iterations")
    args = ap.parse_args(argv)
    if not args.fsdd:
        print("error: pass --fsdd or set MINIVQ_FSDD to the FSDD folder", file=sys.stderr)
        return 1
    cfg = A.FeatureConfig()
    try:
        _, test = D.split_clips(D.scan(args.fsdd), "official")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    clips = D.subset(test, max(1, args.clips // 10))
    waves = np.stack([A.prepare(A.load_wav(c.path, cfg.sr), cfg) for c in clips])   # (B, N)
    mag = np.abs(A.stft(waves.astype(np.float64), cfg.n_fft, cfg.hop))              # (B, F, T+1)
    L = A.log_mel(waves, cfg)                                                        # (B, M, T)

    t0 = time.perf_counter()
    y, hist = A.griffin_lim(mag, n_iter=args.n_iter, hop=cfg.hop, length=cfg.n_samples, return_history=True)
    t_gl = time.perf_counter() - t0
    sc_lin = A.spectral_convergence(A.stft(y.astype(np.float64)), mag)
    t0 = time.perf_counter()
    y_mel = A.mel_to_audio(L, cfg, n_iter=args.n_iter)
    t_mel = time.perf_counter() - t0
    sc_mel = A.spectral_convergence(A.stft(y_mel.astype(np.float64)), mag)
    dist = np.abs(A.log_mel(y_mel, cfg) - L).mean(axis=(1, 2))
    speech = L > np.log(cfg.log_floor) + 1e-3                                        # cells above the floor
    dist_speech = np.abs(A.log_mel(y_mel, cfg) - L)[speech].mean()

    print(f"{len(clips)} official test clips ({', '.join(c.path.stem for c in clips[:3])}, ...), "
          f"n_iter={args.n_iter}, momentum 0.99, seed 0")
    print("SC by iteration (mean): " + ", ".join(f"{i}: {hist[i - 1].mean():.4f}"
                                                  for i in (1, 8, 16, 32, args.n_iter) if i <= args.n_iter))
    print(f"Griffin-Lim from |STFT|:  SC mean {sc_lin.mean():.4f}, median {np.median(sc_lin):.4f}, "
          f"max {sc_lin.max():.4f}  ({t_gl:.2f} s for the batch)")
    print(f"mel_to_audio:             SC mean {sc_mel.mean():.4f}, median {np.median(sc_mel):.4f}  ({t_mel:.2f} s)")
    print(f"log-mel -> audio -> log-mel: mean |diff| {dist.mean():.4f} nats (median clip {np.median(dist):.4f}); "
          f"{dist_speech:.4f} nats over cells above the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
