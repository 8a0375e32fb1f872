"""End-of-training outputs of a VQ-VAE run (host side): test metrics, token grids for the
transformer, a reconstruction/codebook-usage figure and a few reconstruction WAVs.

Size letters: N clips, M mel bands, T frames, h/w token grid, K codebook size.
"""
import sys
from pathlib import Path

import numpy as np

from minivq import audio, checkpoint
from minivq import quantizer as Q
from minivq import vqvae as V
from minivq.backend import to_numpy
from minivq.plots import plot_vqvae_recon

N_FIGURE = 6  # test clips shown in recon.png
N_WAVS = 3    # test clips written as original/reconstruction WAV pairs


def reconstruction_stats(params, cfg, norm, x_raw, batch=128):
    """x_raw: (N, M, T) raw log-mel -> (tokens (N, h, w) int64, recon (N, M, T) raw log-mel,
    mse in standardised units, mse in log-mel units)."""
    toks, recs = [], []
    for s in range(0, len(x_raw), batch):
        xb = V.standardise(x_raw[s:s + batch], norm)  # (b, 1, M, T)
        idx = V.encode(params, xb, cfg, batch)  # (b, h, w)
        toks.append(to_numpy(idx))
        recs.append(to_numpy(V.decode(params, idx, cfg, batch))[:, 0])  # (b, M, T) standardised
    tokens = np.concatenate(toks)  # (N, h, w)
    rec_std = np.concatenate(recs)  # (N, M, T)
    x_std = (np.asarray(x_raw, np.float64) - norm["mean"]) / norm["std"]
    mse = float(((rec_std - x_std) ** 2).mean())
    return tokens, rec_std * norm["std"] + norm["mean"], mse, mse * norm["std"] ** 2


def silent_positions(x_raw, grid, log_floor):
    """x_raw: (N, M, T) raw log-mel -> (N, grid, grid) bool: token positions whose whole patch
    of cells sits at the log floor, i.e. digital silence (mostly the zero padding that brings
    every clip to the same length). Their codes say nothing about the speech."""
    N, M, T = x_raw.shape
    floor = np.log(log_floor) + 1e-4  # log-mel of silence is log(log_floor)
    cells = np.asarray(x_raw).reshape(N, grid, M // grid, grid, T // grid) <= floor
    return cells.all(axis=(2, 4))  # (N, grid, grid)


def finish_run(params, cfg, norm, features, out, tcfg, history, train_seconds, verbose=True):
    """Write vqvae.npz, metrics.json, tokens.npz, recon.png and WAVs to ``out``; return metrics."""
    out = Path(out)
    feat_cfg = features.cfg.to_dict() if hasattr(features.cfg, "to_dict") else dict(features.cfg or {})
    V.save_vqvae(out / "vqvae.npz", params, cfg, norm, train=tcfg.to_dict(), features=feat_cfg,
                 meta={"history": history, "train_seconds": train_seconds})
    te_tok, te_rec, te_mse, te_mse_raw = reconstruction_stats(params, cfg, norm, features.test.x) \
        if len(features.test.x) else (np.zeros((0, cfg.grid, cfg.grid), np.int64), None, float("nan"), float("nan"))
    tr_tok = np.concatenate([to_numpy(V.encode(params, V.standardise(features.train.x[s:s + 256], norm), cfg))
                             for s in range(0, len(features.train.x), 256)])  # (N, h, w)
    ste, stt = Q.usage_stats(te_tok, cfg.K), Q.usage_stats(tr_tok, cfg.K)
    log_floor = feat_cfg.get("log_floor")
    silent = silent_positions(features.test.x, cfg.grid, log_floor) if log_floor and len(te_tok) \
        else np.zeros(te_tok.shape, bool)  # (N, h, w)
    sound = Q.usage_stats(te_tok[~silent], cfg.K)
    metrics = {"cr": cfg.cr, "grid": cfg.grid, "K": cfg.K, "ema": cfg.ema,
               "test_mse": te_mse, "test_mse_logmel": te_mse_raw,
               "test_perplexity": ste["perplexity"], "test_active": ste["active"],
               "test_silent_fraction": float(silent.mean()) if silent.size else float("nan"),
               "test_perplexity_sound": sound["perplexity"],
               "train_perplexity": stt["perplexity"], "train_active": stt["active"],
               "train_seconds": train_seconds, "epochs": tcfg.epochs, "batch": tcfg.batch,
               "n_train": len(features.train.x), "n_test": len(features.test.x),
               "samples_per_second": (history[-1]["step"] * min(tcfg.batch, len(features.train.x)) / train_seconds)
               if history and train_seconds > 0 else None,
               "history": history}
    checkpoint.write_json(out / "metrics.json", metrics)
    tdt = np.int32
    tokens = dict(train_tokens=tr_tok.astype(tdt), train_digit=np.asarray(features.train.digit, np.int64),
                  train_speaker=np.asarray(features.train.speaker, dtype=str),
                  test_tokens=te_tok.astype(tdt), test_digit=np.asarray(features.test.digit, np.int64),
                  test_speaker=np.asarray(features.test.speaker, dtype=str), K=np.int64(cfg.K), cr=np.int64(cfg.cr))
    checkpoint.atomic_write(out / "tokens.npz", lambda f: np.savez(f, **tokens))  # never half-written
    if te_rec is not None:
        plot_vqvae_recon(out / "recon.png", features.test.x[:N_FIGURE], te_rec[:N_FIGURE], te_tok[:N_FIGURE],
                         ste["hist"], stt["hist"], history, cfg.K,
                         f"VQ-VAE CR={cfg.cr} ({cfg.grid}x{cfg.grid} tokens): test inputs vs reconstructions")
        _wavs(out, features.test.x[:N_WAVS], te_rec[:N_WAVS], features.cfg)
    if verbose:
        print(f"wrote {out / 'vqvae.npz'}, metrics.json, tokens.npz, recon.png, WAVs", file=sys.stderr)
    return metrics




def _wavs(out, x, rec, feat_cfg):
    """Griffin-Lim of the original and reconstructed log-mels (same phase seed)."""
    wav_in = audio.mel_to_audio(np.asarray(x), feat_cfg)  # (n, n_samples)
    wav_rec = audio.mel_to_audio(np.asarray(rec), feat_cfg)  # (n, n_samples)
    for i in range(len(x)):
        audio.save_wav(out / f"recon_{i}_input.wav", wav_in[i], feat_cfg.sr)
        audio.save_wav(out / f"recon_{i}_vqvae.wav", wav_rec[i], feat_cfg.sr)
