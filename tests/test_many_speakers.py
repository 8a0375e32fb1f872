"""benchmarks/many_speakers.py: an AudioMNIST-layout folder of many voices made from an FSDD-layout one."""
import json

import numpy as np
import pytest
import soundfile as sf
from fakes import load_benchmark

from minivq import audio, data as D, layouts

MS = load_benchmark("many_speakers")
TONE = 500.0  # Hz: every fake recording is this tone, so a voice's speed shows as its pitch


@pytest.fixture(scope="module")
def fsdd_like(tmp_path_factory):
    """2 speakers x 10 digits x 4 takes of a 0.4 s 500 Hz tone at 8 kHz, FSDD names."""
    root = tmp_path_factory.mktemp("fsdd") / "recordings"
    root.mkdir()
    t = np.arange(int(0.4 * 8000)) / 8000
    for spk in ("ann", "bob"):
        for d in range(10):
            for take in range(4):
                audio.save_wav(root / f"{d}_{spk}_{take}.wav", 0.5 * np.sin(2 * np.pi * TONE * t), 8000)
    return root.parent


def _pitch(y, sr, floor):
    """The strongest frequency (Hz) of the part of y above the noise floor."""
    on = np.flatnonzero(np.abs(y) > floor)
    seg = y[on[0]:on[-1] + 1]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 1 << 16))
    return np.argmax(spec) * sr / (1 << 16)


def test_voices_layout_split_and_changes(fsdd_like, tmp_path):
    out = tmp_path / "many"
    s = MS.build(fsdd_like, out, n_voices=2, sr=16000, seed=0, progress=False)
    assert s == {"clips": 80, "speakers": 4, "sr": 16000, "seconds": s["seconds"]}
    assert MS.LENGTH_S[0] <= s["seconds"][0] and s["seconds"][1] <= MS.LENGTH_S[1]
    listing = layouts.scan(out)
    assert listing.layout == "audiomnist" and not listing.skipped and not list(out.rglob("*meta*.txt"))
    assert sorted({c.speaker for c in listing.clips}) == ["01", "02", "03", "04"]
    # every (voice, digit) holds the takes of one source speaker: 2 each, renumbered 0-1
    assert sorted({(c.speaker, c.digit, c.take) for c in listing.clips}) == sorted(
        (f"{k:02d}", d, t) for k in range(1, 5) for d in range(10) for t in range(2))
    train, test = D.split_clips(listing, "official")  # AudioMNIST: 20 % of the speakers held out
    assert len(test) == 20 and not {c.speaker for c in train} & {c.speaker for c in test}

    voices = json.loads((out / "voices.json").read_text())
    assert [v["source"] for v in voices] == ["ann", "ann", "bob", "bob"]
    for v in voices:
        assert MS.SPEED[0] - 0.01 <= v["speed"] <= MS.SPEED[1] + 0.01
        y, sr = sf.read(out / v["id"] / f"3_{v['id']}_1.wav", dtype="float64")
        assert sr == 16000
        peak = 10 ** (v["gain_db"] / 20)
        assert abs(np.max(np.abs(y)) - peak) < 0.02 * peak  # the voice's level (+ the faint floor, 16-bit)
        # the tone comes out at 500 Hz x speed: within 1 Hz (the FFT bin is 0.24 Hz; the speed was
        # rounded to a 50 Hz step of 8 kHz before it was applied, so the factor is exact)
        assert abs(_pitch(y, sr, 0.1 * peak) - TONE * v["speed"]) < 1.0, v
    assert len({round(v["speed"], 3) for v in voices}) == 4  # four different voices


def test_refuses_a_full_folder_and_other_layouts(fsdd_like, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert MS.main(["--data", str(fsdd_like), "--out", str(tmp_path / "x")]) == 2
    assert "is not empty" in capsys.readouterr().err
    MS.build(fsdd_like, tmp_path / "a", n_voices=1, max_per_digit=1, progress=False)
    assert MS.main(["--data", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "audiomnist folder" in capsys.readouterr().err
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
