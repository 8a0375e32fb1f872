"""Listener (second judge): float64 gradient check of the whole network, exact masking of
padded batches, the MFCC front end against a loop-by-loop recomputation, standardisation,
errors, checkpoints, and trainings that must learn."""
import math

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from minivq import listener as L
from minivq import mfcc as M
from minivq import train_listener as TL
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import numerical_gradient, rel_error

TINY = L.ListenerConfig(n_mels=8, n_ceps=3, channels=(4, 5, 3), strides=(1, 2, 2), kernel=3, hidden=6)


def _tiny_params(backend, dtype="float64"):
    p = L.init_params(TINY, seed=1, dtype=dtype)
    g = np.random.default_rng(0)
    for k in p:  # non-zero biases so every relu sees both signs
        if k.endswith("_b"):
            p[k] = asarray(g.standard_normal(p[k].shape) * 0.1, dtype=dtype)
    return p


@pytest.mark.parametrize("strides", [(1, 2, 2), (2, 2, 2)])
def test_whole_listener_gradient_float64(backend, strides):
    p = _tiny_params(backend)
    g = np.random.default_rng(0)
    x = asarray(g.standard_normal((3, TINY.in_channels, 1, 11)))  # odd T, batch > 1
    lengths = np.array([11, 4, 7])  # padded clips: masking and strided lengths are in the check
    y = np.array([1, 9, 3])
    loss, _, cache = L.forward(p, x, lengths, y, strides=strides)
    grads = L.backward(cache)
    assert set(grads) == set(p)

    def f():
        return float(L.forward(p, x, lengths, y, strides=strides)[0])

    for k in p:
        assert grads[k].shape == p[k].shape
        err = rel_error(grads[k], numerical_gradient(f, p[k]))
        assert err < 1e-6, f"{k}: rel error {err:.2e}"


def test_padded_batch_equals_each_clip_alone(backend):
    """Zero-padding plus the per-layer masks must make a clip's logits independent of its batch."""
    p = _tiny_params(backend)
    g = np.random.default_rng(1)
    x = asarray(g.standard_normal((4, TINY.in_channels, 1, 13)))
    lengths = np.array([13, 1, 6, 9])
    # garbage past each clip's end must not matter either
    _, logits, _ = L.forward(p, x, lengths, strides=TINY.strides)
    for i, n in enumerate(lengths):
        _, alone, _ = L.forward(p, x[i:i + 1, :, :, :n], lengths[i:i + 1], strides=TINY.strides)
        np.testing.assert_allclose(to_numpy(alone)[0], to_numpy(logits)[i], rtol=0, atol=1e-12)
    assert np.abs(to_numpy(logits[0] - logits[2])).max() > 1e-3  # the clips do differ


# ----------------------------------------------------------------------------- front end
def _reference_log_mel(wave, cfg):
    """The same front end written out frame by frame: scipy's pre-emphasis filter, a loop over
    frames, numpy's Hamming window, a loop over mel bands with the HTK formula."""
    w = scipy.signal.lfilter([1.0, -cfg.preemph], [1.0], wave)
    w[0] = wave[0]
    n_frames = 1 + max(0, math.ceil((len(w) - cfg.win) / cfg.hop))
    w = np.concatenate([w, np.zeros(n_frames * cfg.hop + cfg.win)])
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    edges_mel = np.linspace(mel(cfg.fmin), mel(cfg.fmax), cfg.n_mels + 2)
    edges = [700.0 * (10 ** (m / 2595.0) - 1.0) for m in edges_mel]
    F = cfg.n_fft // 2 + 1
    bank = np.zeros((cfg.n_mels, F))
    for m in range(cfg.n_mels):
        for k in range(F):
            f = k * cfg.sr / cfg.n_fft
            if edges[m] < f <= edges[m + 1]:
                bank[m, k] = (f - edges[m]) / (edges[m + 1] - edges[m])
            elif edges[m + 1] < f < edges[m + 2]:
                bank[m, k] = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
    energies = []
    for t in range(n_frames):
        frame = w[t * cfg.hop:t * cfg.hop + cfg.win] * np.hamming(cfg.win)
        power = np.abs(np.fft.fft(frame, cfg.n_fft)[:F]) ** 2
        energies.append(bank @ power)
    e = np.array(energies).T  # (M, T)
    return np.log(np.maximum(e, e.max() * 10 ** (-cfg.floor_db / 10)))


def _speech_wave(sr=8000, seconds=0.7, seed=0):
    """Silence, a two-formant 'vowel' with a pitch glide, silence: something with a clear span."""
    g = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 40 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20)) * np.exp(-((t - seconds / 2) / 0.12) ** 2)
    return np.concatenate([np.zeros(1200), voiced, np.zeros(900)]) + 1e-4 * g.standard_normal(len(voiced) + 2100)


def test_log_mel_matches_frame_by_frame_reference():
    cfg = L.ListenerConfig()
    wave = _speech_wave()
    ours = M.log_mel_frames(wave, cfg)
    ref = _reference_log_mel(wave, cfg)
    assert ours.shape == ref.shape == (cfg.n_mels, 1 + math.ceil((len(wave) - cfg.win) / cfg.hop))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-8)


def test_cepstra_and_deltas_match_scipy_dct_and_a_loop():
    cfg = L.ListenerConfig()
    wave = _speech_wave(seed=3)
    lm = M.log_mel_frames(wave, cfg)
    T = lm.shape[1]
    feats = M.features_from_log_mel(lm, cfg, span=(0, T))
    assert feats.shape == (2 * cfg.n_ceps, T) and feats.dtype == np.float32
    c = scipy.fft.dct(lm, type=2, norm="ortho", axis=0)[:cfg.n_ceps]  # (C, T)
    c[0] -= c[0].max()
    d = np.zeros_like(c)
    for t in range(T):
        at = lambda s: c[:, min(max(s, 0), T - 1)]
        d[:, t] = (1 * (at(t + 1) - at(t - 1)) + 2 * (at(t + 2) - at(t - 2))) / 10.0
    np.testing.assert_allclose(feats[:cfg.n_ceps], c, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(feats[cfg.n_ceps:], d, rtol=1e-5, atol=1e-4)


def test_speech_span_is_loud_frames_plus_margin():
    cfg = L.ListenerConfig()  # vad_db 35, margin 5
    lm = np.full((cfg.n_mels, 40), -20.0)  # (M, T) quiet: 20 nats = 87 dB below 0
    lm[:, 12:20] = 0.0  # loud frames 12..19
    lm[:, 25] = -7.0  # 7 nats = 30.4 dB below: still speech (within 35 dB)
    assert M.speech_span(lm, cfg) == (12 - 5, 26 + 5)
    lm[:, 25] = -8.5  # 36.9 dB below: silence
    assert M.speech_span(lm, cfg) == (12 - 5, 20 + 5)
    lm[:, 1] = 0.0  # a loud frame near the start: the margin stops at the clip's edge
    assert M.speech_span(lm, cfg) == (0, 25)


def test_speech_span_trims_silence_only():
    cfg = L.ListenerConfig()
    wave = _speech_wave()  # 1200 samples of silence (15 frames), then 0.7 s of speech, then 900
    lm = M.log_mel_frames(wave, cfg)
    start, stop = M.speech_span(lm, cfg)
    assert 5 <= start <= 15 + 20, start  # silence cut, plus the margin and the vowel's slow onset
    assert lm.shape[1] - 12 - 20 <= stop <= lm.shape[1] - 5, (stop, lm.shape[1])
    assert stop - start >= 40  # the vowel (0.7 s, its loud part about 0.4 s) is kept


def test_features_ignore_volume_and_sample_rate():
    """A volume change moves only c0, which is relative to the loudest frame; a 16 kHz copy is resampled."""
    cfg = L.ListenerConfig()
    wave = _speech_wave(seed=5)
    a = L.features(wave, 8000, cfg)
    np.testing.assert_allclose(L.features(wave * 7.5, 8000, cfg), a, rtol=0, atol=2e-4)
    b = L.features(scipy.signal.resample_poly(wave, 2, 1), 16000, cfg)
    assert b.shape == a.shape
    assert np.abs(b[:cfg.n_ceps] - a[:cfg.n_ceps]).mean() < 0.05 * np.abs(a[:cfg.n_ceps]).mean()


def test_standardise_shapes_padding_and_stats():
    cfg = L.ListenerConfig()
    g = np.random.default_rng(0)
    feats = [g.normal(3.0, 2.0, size=(cfg.in_channels, n)).astype(np.float32) for n in (5, 17, 9)]
    norm = L.norm_stats(feats)
    assert norm["mean"].shape == norm["std"].shape == (cfg.in_channels, 1)
    x, lengths = L.standardise(feats, norm)
    x = to_numpy(x)
    assert x.shape == (3, cfg.in_channels, 1, 17) and x.dtype == np.float32
    assert lengths.tolist() == [5, 17, 9]
    valid = np.concatenate([x[i, :, 0, :n] for i, n in enumerate(lengths)], axis=1)  # (C0, 31)
    np.testing.assert_allclose(valid.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(valid.std(axis=1), 1.0, atol=1e-4)
    assert np.all(x[0, :, 0, 5:] == 0) and np.all(x[2, :, 0, 9:] == 0)


# ----------------------------------------------------------------------------- errors
def _tiny_listener():
    feats = [L.features(_speech_wave(seed=s), 8000, TINY) for s in range(3)]
    return L.init_params(TINY, seed=0), TINY, L.norm_stats(feats)


@pytest.mark.parametrize("waves, sr, message", [
    ([np.zeros(800), np.array([0.1, np.nan, 0.2] * 100)], 8000, "wave 1 holds 100 non-finite"),
    ([np.zeros((2, 100))], 8000, "wave 0 must be a non-empty 1-D array"),
    ([np.array([])], 8000, "wave 0 must be a non-empty 1-D array"),
    (np.zeros(8000), 8000, "got one 1-D wave"),
    ([], 8000, "needs at least one wave"),
    ([np.ones(800)], 0, "sample rate must be a positive"),
])
def test_bad_waves_raise_one_clear_error(waves, sr, message):
    with pytest.raises(ValueError, match=message):
        L.classify_waves(_tiny_listener(), waves, sr)


def test_bad_network_input_raises():
    p = L.init_params(TINY, seed=0)
    with pytest.raises(ValueError, match="channels but the model expects"):
        L.forward(p, asarray(np.zeros((2, 7, 1, 5))), [5, 5], strides=TINY.strides)
    with pytest.raises(ValueError, match="lengths must be 2 values in 1..5"):
        L.forward(p, asarray(np.zeros((2, TINY.in_channels, 1, 5))), [5, 6], strides=TINY.strides)
    with pytest.raises(ValueError, match="kernel must be odd"):
        L.ListenerConfig(kernel=4)


def test_checkpoint_round_trip_and_wrong_file(tmp_path):
    lis = _tiny_listener()
    waves = [_speech_wave(seed=s, seconds=0.3 + 0.2 * s) for s in range(4)]
    before = L.classify_waves(lis, waves, 8000)
    assert before.shape == (4, 10)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-6)
    alone = np.concatenate([L.classify_waves(lis, [w], 8000) for w in waves])  # (4, 10)
    np.testing.assert_allclose(before, alone, atol=1e-6)  # batching by length keeps the input order
    assert np.abs(before - before[::-1]).max() > 1e-4  # ... which matters: the clips' verdicts differ
    probs, emb = L.listen(lis, waves, 8000)
    np.testing.assert_array_equal(probs, before)
    assert emb.shape == (4, TINY.hidden) and np.all(np.isfinite(emb))
    # the embedding is fc1's pre-activation: the head maps relu(emb) to the logits
    logits = np.maximum(emb, 0) @ to_numpy(lis[0]["fc2_w"]) + to_numpy(lis[0]["fc2_b"])
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(axis=1, keepdims=True), probs, atol=1e-5)
    L.save_listener(tmp_path / "l.npz", *lis, meta={"test_accuracy": 0.5})
    after = L.classify_waves(L.load_listener(tmp_path / "l.npz"), waves, 8000)
    np.testing.assert_allclose(after, before, atol=1e-6)
    from minivq import checkpoint
    checkpoint.save(tmp_path / "other.npz", {"w": np.zeros(3)}, config={"vqvae": {}})
    with pytest.raises(ValueError, match="not a listener checkpoint"):
        L.load_listener(tmp_path / "other.npz")


# ----------------------------------------------------------------------------- training
def _tone_set(n_per_digit, seed):
    """Digit d is a tone at 250 * 1.25^d Hz (neighbours further apart than the +-10 % speed
    augmentation moves them) of random length and level, in a little noise."""
    g = np.random.default_rng(seed)
    waves, digit = [], []
    for d in range(10):
        for _ in range(n_per_digit):
            t = np.arange(int(8000 * g.uniform(0.2, 0.6))) / 8000
            tone = g.uniform(0.1, 0.9) * np.sin(2 * np.pi * 250 * 1.25 ** d * t + g.uniform(0, 6))
            waves.append(np.pad(tone, (400, 400)) + 1e-3 * g.standard_normal(len(t) + 800))
            digit.append(d)
    return {"waves": waves, "digit": np.array(digit)}


def test_augmentation_is_seeded_and_keeps_channels():
    w = _speech_wave()
    a = TL.augmented_features(w, np.random.default_rng([0, 1, 2]), L.ListenerConfig())
    b = TL.augmented_features(w, np.random.default_rng([0, 1, 2]), L.ListenerConfig())
    c = TL.augmented_features(w, np.random.default_rng([0, 1, 3]), L.ListenerConfig())
    np.testing.assert_array_equal(a, b)
    assert a.shape[0] == L.ListenerConfig().in_channels
    assert a.shape != c.shape or np.abs(a - c).max() > 1e-3


def test_training_on_tones_learns(tmp_path):
    cfg = L.ListenerConfig(n_mels=20, n_ceps=8, channels=(8, 8, 8), hidden=16)
    res = TL.train(_tone_set(6, 0), _tone_set(3, 1), tmp_path, cfg=cfg,
                   tcfg=TL.TrainConfig(epochs=20, batch_size=10, lr=1e-2), verbose=False)
    m = res["metrics"]
    assert m["test_accuracy"] >= 0.8, m["history"]  # chance is 0.1
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    assert (tmp_path / "listener.npz").is_file() and (tmp_path / "metrics.json").is_file()


def test_cli_reports_missing_data(tmp_path, capsys):
    assert TL.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err


def test_short_fsdd_training_beats_chance(fsdd_path, tmp_path):
    tr, te = TL.load_split(fsdd_path, max_per_digit=40, verbose=False)
    assert (len(tr["waves"]), len(te["waves"])) == (400, 300)  # the test split has 30 takes per digit
    res = TL.train(tr, te, tmp_path, tcfg=TL.TrainConfig(epochs=8), verbose=False)
    assert res["metrics"]["test_accuracy"] >= 0.75, res["metrics"]["history"]
