"""The listener's front end: MFCCs of a waveform (host side, NumPy), independent of the models'
log-mel by construction.

Pre-emphasis, 25 ms Hamming frames every 10 ms (not centred), |FFT|^2, unit-peak triangles on
the HTK mel scale, log with a floor relative to the clip's loudest band, orthonormal DCT-II to
the first cepstra, c0 relative to the loudest frame, regression deltas, and its own silence
trim (the speech span). ``cfg`` is a listener.ListenerConfig (sr, win, hop, n_fft, n_mels,
fmin, fmax, n_ceps, preemph, floor_db, vad_db, margin, deltas).

Size letters: N samples, T frames, W window (samples), F FFT bins, M mel bands, C cepstra,
C0 = 2C network input channels with deltas.
"""
import math

import numpy as np

from minivq.audio import hz_to_mel, mel_to_hz, resample


def mel_bank(cfg) -> np.ndarray:
    """Triangular filters on the HTK mel scale, peak 1 (not area-normalised): (M, F) float64,
    F = n_fft // 2 + 1. Band m rises from edge m to m+1 and falls to m+2 of M + 2 edges
    equally spaced in mel from fmin to fmax."""
    freqs = np.arange(cfg.n_fft // 2 + 1) * cfg.sr / cfg.n_fft  # (F,) bin centres (Hz)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))  # (M + 2,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))  # (M, F)
    if np.any(fb.sum(axis=1) == 0):
        raise ValueError(f"{cfg.n_mels} mel bands are too narrow for n_fft={cfg.n_fft} at sr={cfg.sr}")
    return fb


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II rows: D[k, m] = s_k cos(pi k (m + 1/2) / n_in), s_0 = sqrt(1/n_in),
    s_k = sqrt(2/n_in); the first n_out rows. (n_out, n_in) float64."""
    k = np.arange(n_out)[:, None]  # (C, 1)
    m = np.arange(n_in)[None, :]  # (1, M)
    d = np.cos(np.pi * k * (m + 0.5) / n_in) * math.sqrt(2.0 / n_in)  # (C, M)
    d[0] /= math.sqrt(2.0)
    return d


def check_wave(wave, what="wave"):
    """-> (N,) float64 array, or ValueError for a non-1-D, empty or non-finite wave."""
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array of samples, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{what} holds {int(np.count_nonzero(~np.isfinite(w)))} non-finite (NaN/inf) samples")
    return w


def log_mel_frames(wave, cfg) -> np.ndarray:
    """(N,) wave at cfg.sr -> (M, T) log mel energies (nats), float64.

    Pre-emphasis, frames of ``win`` samples every ``hop`` (not centred: frame t starts at
    t * hop; the end is zero-padded to a whole frame, so T = 1 + ceil((N - win) / hop), at
    least 1), Hamming window, |rfft_{n_fft}|^2, mel bank, and
    log(max(E, max(E_clip) * 10^(-floor_db / 10), 1e-20)): the floor follows the clip's level.
    """
    w = check_wave(wave)
    if cfg.preemph:
        w = np.concatenate([w[:1], w[1:] - cfg.preemph * w[:-1]])  # (N,)
    T = 1 + max(0, -(-(len(w) - cfg.win) // cfg.hop))
    w = np.pad(w, (0, (T - 1) * cfg.hop + cfg.win - len(w)))  # (N',) whole frames
    frames = w[cfg.hop * np.arange(T)[:, None] + np.arange(cfg.win)]  # (T, W): frame t = w[t*hop : t*hop + win]
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(cfg.win) / (cfg.win - 1))  # (W,) symmetric Hamming
    spec = np.fft.rfft(frames * window, n=cfg.n_fft, axis=1)  # (T, F)
    energy = mel_bank(cfg) @ (spec.real ** 2 + spec.imag ** 2).T  # (M, T)
    floor = max(float(energy.max()) * 10.0 ** (-cfg.floor_db / 10.0), 1e-20)
    return np.log(np.maximum(energy, floor))  # (M, T)


def speech_span(logmel, cfg):
    """(M, T) log mel energies -> (start, stop): the frames from the first to the last whose
    energy (log of the summed band energies) is within vad_db of the loudest frame, widened by
    ``margin`` frames each side (clipped to the clip)."""
    e = np.log(np.exp(logmel - logmel.max()).sum(axis=0))  # (T,) frame log energy, loudest near 0
    loud = np.flatnonzero(e >= e.max() - cfg.vad_db * math.log(10.0) / 10.0)
    return max(0, int(loud[0]) - cfg.margin), min(logmel.shape[1], int(loud[-1]) + 1 + cfg.margin)


def deltas(c, n: int = 2) -> np.ndarray:
    """(..., C, T) -> (..., C, T) regression deltas d_t = sum_k k (c_{t+k} - c_{t-k}) / (2 sum_k k^2),
    k = 1..n, with the first/last frame repeated beyond the edges."""
    T = c.shape[-1]
    first, last = c[..., :1].repeat(n, axis=-1), c[..., -1:].repeat(n, axis=-1)  # (..., C, n) each
    pad = np.concatenate([first, c, last], axis=-1)  # (..., C, T + 2n)
    num = sum(k * (pad[..., n + k:n + k + T] - pad[..., n - k:n - k + T]) for k in range(1, n + 1))
    return num / (2 * sum(k * k for k in range(1, n + 1)))


def features_from_log_mel(logmel, cfg, span=None) -> np.ndarray:
    """(M, T) log mel energies -> (C0, T') float32 raw (unstandardised) network input over the
    speech span (``span`` = (start, stop), default speech_span(logmel)).

    Cepstra = DCT-II (orthonormal) of each frame's log mel energies, first n_ceps kept; c0
    (the frame's overall level) minus its largest value, so the loudest frame has c0 = 0;
    deltas (over the whole clip, so the span's edges see real neighbours), then the span."""
    start, stop = speech_span(logmel, cfg) if span is None else span
    c = dct_matrix(cfg.n_ceps, cfg.n_mels) @ logmel  # (C, T)
    c[0] -= c[0].max()
    if cfg.deltas:
        c = np.concatenate([c, deltas(c)])  # (2C, T)
    return c[:, start:stop].astype(np.float32)  # (C0, T')


def features(wave, sr: int, cfg) -> np.ndarray:
    """One clip's raw network input: (N,) wave at ``sr`` Hz -> (C0, T') float32."""
    return features_from_log_mel(log_mel_frames(resample(check_wave(wave), sr, cfg.sr), cfg), cfg)
