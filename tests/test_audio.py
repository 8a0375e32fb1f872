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
