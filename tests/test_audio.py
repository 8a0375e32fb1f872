"""Tests for minivq.audio: I/O, trimming, STFT against scipy, mel filterbank, Griffin-Lim."""
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from minivq import audio as A


def _voiced(n, sr=8000, f0=150.0, seed=0):
    """A crude vowel: harmonics of f0 with a slow amplitude envelope, (n,) float64."""
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 15) if f0 * k < sr / 2)
    return x * np.hanning(n)


def test_feature_config_key_roundtrip():
    cfg = A.FeatureConfig()
    assert cfg.key() == A.FeatureConfig().key() and len(cfg.key()) == 16
    assert A.FeatureConfig(n_mels=80).key() != cfg.key()
    assert A.FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown FeatureConfig fields"):
        A.FeatureConfig.from_dict({"n_mel": 3})


@pytest.mark.parametrize("n", [1000, 8192, 3001])
def test_stft_matches_scipy(n):
    x = np.random.default_rng(n).standard_normal((2, n))
    S = A.stft(x, 512, 128)                                               # (2, 257, T)
    assert S.shape == (2, 257, 1 + n // 128)
    _, _, Z = scipy.signal.stft(x, window="hann", nperseg=512, noverlap=512 - 128,
                                boundary="zeros", padded=True)            # scipy may add a last padded frame
    ours = S / A.hann(512).sum()                                           # scipy's 'spectrum' scaling
    ref = Z[..., :S.shape[-1]]
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize("n_fft,hop,n", [(512, 128, 8192), (512, 128, 1001), (256, 64, 777), (64, 16, 100)])
def test_istft_inverts_stft(n_fft, hop, n):
    x = np.random.default_rng(1).standard_normal((3, n))
    y = A.istft(A.stft(x, n_fft, hop), hop, length=n)
    assert y.shape == x.shape
    assert np.abs(y - x).max() < 1e-6


def test_stft_float32_stays_float32():
    x = np.random.default_rng(2).standard_normal(8192).astype(np.float32)
    S = A.stft(x)
    assert S.dtype == np.complex64
    y = A.istft(S, length=8192)
    assert y.dtype == np.float32 and np.abs(y - x).max() < 1e-5


def test_load_wav_resamples_and_mixes(tmp_path):
    sr = 48000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), sr, subtype="PCM_16")
    w = A.load_wav(tmp_path / "s.wav")
    assert w.dtype == np.float32 and w.shape == (8000,)
    spec = np.abs(np.fft.rfft(w[1000:7000] * np.hanning(6000)))
    assert abs(np.argmax(spec) * 8000 / 6000 - 440) < 2                    # pitch preserved
    assert abs(np.abs(w[1000:7000]).max() - 0.5) < 0.01                    # level preserved


def test_load_wav_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        A.load_wav(tmp_path / "nope.wav")
    (tmp_path / "text.wav").write_text("this is not audio")
    with pytest.raises(ValueError, match="text.wav is not a readable audio file"):
        A.load_wav(tmp_path / "text.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0), 8000)
    with pytest.raises(ValueError, match="empty.wav contains no samples"):
        A.load_wav(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav contains 100 non-finite"):
        A.load_wav(tmp_path / "nan.wav")
    some = np.zeros(100, np.float32)
    some[7] = np.nan
    sf.write(tmp_path / "some.wav", some, 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="some.wav contains 1 non-finite"):
        A.load_wav(tmp_path / "some.wav")


def test_save_load_roundtrip(tmp_path):
    x = (0.3 * _voiced(4000)).astype(np.float32)
    A.save_wav(tmp_path / "a" / "x.wav", x)
    assert np.abs(A.load_wav(tmp_path / "a" / "x.wav") - x).max() < 1e-4   # 16-bit quantisation


def test_long_clip_is_centred_on_speech():
    sr = 8000
    noise = 1e-4 * np.random.default_rng(0).standard_normal(3 * sr)
    speech = _voiced(4000)                                                 # 0.5 s burst
    for start in (2000, 11000, 19000):                                     # early, middle, late
        x = noise.copy()
        x[start:start + 4000] += speech
        y = A.prepare(x)
        assert y.shape == (8192,) and y.dtype == np.float32
        e = y.astype(np.float64) ** 2
        centroid = (e * np.arange(8192)).sum() / e.sum()
        assert abs(centroid - 4096) < 100, (start, centroid)
        assert abs(np.abs(y).max() - 0.9) < 1e-5                          # peak-normalised


def test_trim_and_fix_length_details():
    x = np.zeros(5000)
    x[1000:1500] = 1.0
    t = A.trim_silence(x, top_db=40)
    assert 500 <= len(t) <= 500 + 2 * 256 and np.abs(t).sum() == 500       # kept every loud sample
    assert np.array_equal(A.trim_silence(np.zeros(3000)), np.zeros(3000))  # digital silence unchanged
    short = A.fix_length(np.ones(101), 200)
    assert short.shape == (200,) and short[:49].sum() == 0 and short[49:150].sum() == 101
    long = A.fix_length(np.arange(300), 100)
    assert np.array_equal(long, np.arange(100, 200))
    silent = A.prepare(np.zeros(20000))
    assert silent.shape == (8192,) and not silent.any()


def test_mel_filterbank_properties():
    cfg = A.FeatureConfig()
    fb = A.mel_filterbank(cfg)
    assert fb.shape == (64, 257) and fb.dtype == np.float32
    assert np.allclose(fb.sum(1), 1.0, atol=1e-6)
    assert (fb > 0).sum(1).min() >= 2                                       # no degenerate band
    peaks = fb.argmax(1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > 240                  # ordered, span to 4 kHz
    assert abs(A.mel_to_hz(A.hz_to_mel(1234.5)) - 1234.5) < 1e-9
    assert abs(A.hz_to_mel(1000.0) - 1000.0) < 0.1                          # HTK: 1 kHz ~ 1000 mel
    with pytest.raises(ValueError, match="fmax"):
        A.mel_filterbank(A.FeatureConfig(fmax=5000.0))


def test_log_mel_shapes_floor_and_tone():
    cfg = A.FeatureConfig()
    t = np.arange(8192) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    L = A.log_mel(tone, cfg)
    assert L.shape == (64, 64) and L.dtype == np.float32
    centres = A.mel_to_hz(np.linspace(A.hz_to_mel(0), A.hz_to_mel(4000), 66))[1:-1]
    assert np.argmax(L[:, 32]) == np.argmin(np.abs(centres - 1000))          # energy in the 1 kHz band
    batch = np.stack([tone, np.zeros(8192), 0.1 * tone])
    Lb = A.log_mel(batch, cfg)
    assert Lb.shape == (3, 64, 64)
    assert np.allclose(Lb[0], L, atol=1e-4)
    assert np.all(Lb[1] == np.float32(np.log(cfg.log_floor)))               # silence = floor
    assert np.allclose(Lb[2][Lb[0] > -5], (Lb[0] + 2 * np.log(0.1))[Lb[0] > -5], atol=1e-3)
    with pytest.raises(ValueError, match="8192 samples"):
        A.log_mel(np.zeros(8000), cfg)


def test_griffin_lim_converges_and_momentum_helps():
    x = np.stack([_voiced(8192, f0=130, seed=1), _voiced(8192, f0=210, seed=2)])
    mag = np.abs(A.stft(x))                                                 # (2, 257, 65)
    y, hist = A.griffin_lim(mag, n_iter=64, return_history=True, length=8192)
    assert y.shape == (2, 8192) and y.dtype == np.float32 and hist.shape == (64, 2)
    assert np.all(hist[63] < hist[15]) and np.all(hist[15] < hist[0])
    assert np.all(hist[63] < 0.1)
    sc_final = A.spectral_convergence(A.stft(y), mag)
    assert np.all(sc_final < 0.1)
    _, plain = A.griffin_lim(mag, n_iter=64, momentum=0.0, return_history=True)
    assert np.all(hist[63] < plain[63])                                      # fast GL beats plain GL
    y2 = A.griffin_lim(mag, n_iter=64, length=8192)
    assert np.array_equal(y, y2)                                             # seeded
    with pytest.raises(ValueError, match="non-negative"):
        A.griffin_lim(-mag)


def test_mel_to_audio_roundtrip():
    cfg = A.FeatureConfig()
    x = np.stack([A.prepare(_voiced(6000, f0=140, seed=3)), A.prepare(_voiced(5000, f0=220, seed=4))])
    L = A.log_mel(x, cfg)                                                    # (2, 64, 64)
    P = A.mel_to_linear(L, cfg)
    assert P.shape == (2, 257, 64) and P.min() >= 0
    mel_err = np.abs(np.log(np.maximum(A.mel_filterbank(cfg) @ P, cfg.log_floor)) - L).mean()
    assert mel_err < 0.01                                                    # IS-NMF fits the log-mel (Euclidean NNLS: 0.47)
    y = A.mel_to_audio(L, cfg)
    assert y.shape == (2, 8192) and y.dtype == np.float32
    dist = np.abs(A.log_mel(y, cfg) - L).mean()
    noise = np.random.default_rng(0).standard_normal((2, 8192)) * x.std()
    baseline = np.abs(A.log_mel(noise, cfg) - L).mean()
    assert dist < 0.5 and dist < baseline / 5, (dist, baseline)
    assert A.mel_to_audio(L[0], cfg).shape == (8192,)
    with pytest.raises(ValueError, match="64, 64"):
        A.mel_to_audio(np.zeros((64, 65)))


# ------------------------------------------------------------- silence, the gate, the old path

def _burst_clip(start, n=3000, f0=160.0, seed=5):
    """A voiced burst of n samples starting abruptly at ``start`` in a silent 8192-sample window,
    at the level prepare() gives a recording (peak 0.9): (8192,) float64."""
    x = np.zeros(8192)
    v = _voiced(n + 400, f0=f0, seed=seed)[200:200 + n]                   # cut out of the middle: a hard start
    x[start:start + n] = 0.9 * v / np.abs(v).max()
    return x


def _mel_to_audio_before_the_gate(logmel, cfg, n_iter=64, seed=0):
    """mel_to_audio as it was before silence='gate' existed, written out: the reference the
    'floor' path must reproduce bit for bit."""
    mag = np.sqrt(A.mel_to_linear(logmel, cfg))
    mag = np.concatenate([mag, mag[..., -1:]], axis=-1)                     # 65th frame repeats the 64th
    return A.griffin_lim(mag, n_iter=n_iter, seed=seed, hop=cfg.hop, length=cfg.n_samples)


def test_silence_in_gives_silence_out():
    cfg = A.FeatureConfig()
    L = A.log_mel(np.stack([np.zeros(8192), _burst_clip(3000)]), cfg)       # (2, 64, 64): silence, a burst
    new = A.mel_to_audio(L, cfg, n_iter=16)
    old = A.mel_to_audio(L, cfg, n_iter=16, silence="floor")
    assert np.all(new[0] == 0.0)                                            # the floor is exactly silence
    assert np.sqrt(np.mean(old[0].astype(np.float64) ** 2)) > 1e-4          # before: hiss at about -73 dBFS
    # frames of the burst clip that are at the floor: the samples closest to them
    quiet = L[1].max(axis=0) <= np.log(cfg.log_floor) + 2.0                 # (64,)
    frame_of = np.minimum((np.arange(8192) + 64) // 128, 63)                # (8192,)
    mask = quiet[frame_of]
    assert mask.sum() > 3000                                                # most of the window is silence
    e_new = (new[1].astype(np.float64) ** 2)
    e_old = (old[1].astype(np.float64) ** 2)
    frac_new, frac_old = e_new[mask].sum() / e_new.sum(), e_old[mask].sum() / e_old.sum()
    assert frac_new < 1e-6 < frac_old, (frac_new, frac_old)                 # -60 dB or better; before: not
    g = A.sound_gate(L[1], cfg)
    assert np.all(new[1][g == 0] == 0.0) and (g == 0).sum() > 3000          # nothing outside the gate


def test_sound_gate_covers_the_sound_and_has_no_step():
    cfg = A.FeatureConfig()
    for start, n in ((2000, 3000), (300, 5000), (5000, 3192)):              # the last runs to the window's end
        x = _burst_clip(start, n)
        g = A.sound_gate(A.log_mel(x, cfg), cfg)                            # (8192,)
        assert g.shape == (8192,) and g.dtype == np.float32
        assert g.min() >= 0.0 and g.max() <= 1.0
        nz = np.flatnonzero(x)
        inner = slice(nz[0], min(nz[-1] + 1, 8192 - 64))                    # the sound, less the window's last ramp
        assert np.all(g[inner] == 1.0), start                               # the gate cuts no sound
        assert g[0] == 0.0 and g[-1] == 0.0                                 # faded at the window's ends
        # closed before the sound by more than half an STFT window (256) + pad (64) + ramp (64)
        assert np.all(g[:max(nz[0] - 256 - 128, 0)] == 0.0)
        # no step: a raised cosine over 64 samples changes by at most pi/2/64 per sample
        assert np.abs(np.diff(g.astype(np.float64))).max() <= np.pi / 2 / 64 + 1e-6
    assert np.all(A.sound_gate(A.log_mel(np.zeros(8192), cfg), cfg) == 1.0)  # no sound: nothing to place
    with pytest.raises(ValueError, match="ramp"):
        A.sound_gate(np.zeros((64, 64)), cfg, ramp=0)


def test_gated_synthesis_has_no_click_at_the_edges():
    """A burst that starts abruptly mid-window, and a steady harmonic sound that runs into the
    window's end. Played as a file the wave is preceded and followed by silence, so a click is a
    jump between the silence and the first/last samples: the gated sound has none larger than
    its own steepest sample-to-sample step; the old path's ends the second sound mid-waveform."""
    cfg = A.FeatureConfig()
    t = np.arange(8192) / 8000
    steady = sum(np.cos(2 * np.pi * 140 * k * t) / k for k in range(1, 20) if 140 * k < 3800)  # (8192,)
    to_end = np.where(np.arange(8192) >= 5000, 0.9 * steady / np.abs(steady).max(), 0.0)
    L = A.log_mel(np.stack([_burst_clip(2500, 3000), to_end]), cfg)          # (2, 64, 64)
    y = A.mel_to_audio(L, cfg, n_iter=32).astype(np.float64)                # (2, 8192)
    old = A.mel_to_audio(L, cfg, n_iter=32, silence="floor").astype(np.float64)
    for k in range(2):
        on = np.flatnonzero(A.sound_gate(L[k], cfg) > 0)
        body = y[k][on[0] + 256:on[-1] - 256]                               # well inside the sound
        step = np.abs(np.diff(body)).max()                                  # its steepest step
        played = np.abs(np.diff(np.concatenate([[0.0], y[k], [0.0]])))      # (8193,) with the silence around
        for edge in (on[0], on[-1] + 1):
            assert played[max(edge - 64, 0):edge + 65].max() <= step, (k, edge)
    rms = np.sqrt(np.mean(y[1][5000:8000] ** 2))
    assert y[1, -1] == 0.0 and np.abs(y[1, -8:]).max() < 0.05 * rms        # faded out by the window's end
    assert abs(old[1, -1]) > 0.5 * rms                                      # before: cut off mid-waveform
    # where the gate is open the sound is what it was: the same log-mel fit as the old path
    loud = L > np.log(cfg.log_floor) + 6.0
    err_new = np.abs(A.log_mel(y.astype(np.float32), cfg) - L)[loud].mean()
    err_old = np.abs(A.log_mel(old.astype(np.float32), cfg) - L)[loud].mean()
    assert err_new < 0.5 and err_new < err_old + 0.1, (err_new, err_old)


def test_floor_path_reproduces_the_synthesis_before_the_gate():
    cfg = A.FeatureConfig()
    L = A.log_mel(np.stack([_burst_clip(1000), _burst_clip(4000, f0=230, seed=9)]), cfg)
    ref = _mel_to_audio_before_the_gate(L, cfg, n_iter=24, seed=3)
    assert np.array_equal(A.mel_to_audio(L, cfg, n_iter=24, seed=3, silence="floor"), ref)
    assert not np.array_equal(A.mel_to_audio(L, cfg, n_iter=24, seed=3), ref)   # the default is the gate
    with pytest.raises(ValueError, match="silence"):
        A.mel_to_audio(L, cfg, silence="none")
    with pytest.raises(ValueError, match="floor_sub"):
        A.mel_to_audio(L, cfg, floor_sub=-1.0)


def test_griffin_lim_gate_checks_and_zeroes():
    mag = np.abs(A.stft(_voiced(8192, f0=120, seed=7)))                      # (257, 65)
    gate = np.zeros(8192, np.float32)
    gate[2000:6000] = 1.0
    y = A.griffin_lim(mag, n_iter=8, length=8192, gate=gate)
    assert np.all(y[:2000] == 0) and np.all(y[6000:] == 0) and np.abs(y[2000:6000]).max() > 0.01
    with pytest.raises(ValueError, match="gate"):
        A.griffin_lim(mag, n_iter=2, length=8192, gate=np.ones(100))
    with pytest.raises(ValueError, match="gate"):
        A.griffin_lim(mag, n_iter=2, length=8192, gate=2 * gate)


def test_refitting_the_magnitude_to_the_mel_recovers_harmonics():
    """Harmonics of 120-230 Hz above ~1 kHz share a mel band; re-fitting the magnitude to the
    bands from the consistent spectrogram (refit_steps) lands closer to the true STFT magnitude
    than the fixed interpolated one, and still matches the log-mel and keeps the gate's silence."""
    cfg = A.FeatureConfig()
    x = np.stack([_burst_clip(2000, 4000, f0=f, seed=s) for f, s in ((120, 1), (170, 2), (230, 3))])
    L = A.log_mel(x, cfg)                                                    # (3, 64, 64)
    R = np.abs(A.stft(x))                                                    # (3, 257, 65)
    plain = A.mel_to_audio(L, cfg, n_iter=64)
    refit = A.mel_to_audio(L, cfg, n_iter=64, refit_steps=1, refit_after=16)
    sc_plain = A.spectral_convergence(A.stft(plain), R)
    sc_refit = A.spectral_convergence(A.stft(refit), R)
    assert np.all(sc_refit < 0.85 * sc_plain), (sc_refit, sc_plain)         # measured: 0.70-0.82 of it
    loud = L > np.log(cfg.log_floor) + 6.0
    assert np.abs(A.log_mel(refit, cfg) - L)[loud].mean() < 0.5
    assert np.all(refit[A.sound_gate(L, cfg) == 0] == 0.0)
    with pytest.raises(ValueError, match="refit"):
        A.mel_to_audio(L, cfg, refit_steps=-1)
