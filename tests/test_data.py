"""Tests for minivq.data: layouts, labels, splits, bad files, feature cache, CLI, download."""
import hashlib
import json
import os
import tarfile
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf

from minivq import audio as A
from minivq import data as D


def _word(n, sr, f0=160.0, seed=0):
    """A vowel-like burst of n samples: harmonics under a Hann envelope, (n,) float64."""
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + seed * k) / k for k in range(1, 12) if f0 * k < 3800)
    return 0.4 * x * np.hanning(n) / np.abs(x).max()


def make_fsdd(root, speakers=("ann", "bob", "cyd"), digits=range(3), takes=range(7), csv=True):
    rec = root / "recordings"
    rec.mkdir(parents=True)
    for i, s in enumerate(speakers):
        for d in digits:
            for k in takes:
                sf.write(rec / f"{d}_{s}_{k}.wav", _word(2400, 8000, 120 + 30 * d + 7 * i, k), 8000, subtype="PCM_16")
    if csv:
        (root / "speakers.csv").write_text("speaker,gender,accent,language\n" +
                                           "".join(f"{s},{'female' if i % 2 else 'male'},x,english\n"
                                                   for i, s in enumerate(speakers)))
    return root


@pytest.fixture
def audiomnist(tmp_path):
    """AudioMNIST layout: 48 kHz, some stereo, one corrupt file, one 3 s file, metadata."""
    root = tmp_path / "amnist"
    sr = 48000
    meta = {}
    for s in ("01", "02", "03", "04", "05"):
        (root / s).mkdir(parents=True)
        meta[s] = {"gender": "female" if s in ("02", "05") else "male", "age": "30", "accent": "german"}
        for d in range(3):
            for k in range(2):
                w = _word(int(0.5 * sr), sr, 110 + 40 * d + 5 * int(s), k)
                if k == 1:
                    w = np.stack([w, 0.5 * w], axis=1)                             # stereo
                sf.write(root / s / f"{d}_{s}_{k}.wav", w, sr, subtype="PCM_16")
    long = 1e-4 * np.random.default_rng(0).standard_normal(3 * sr)
    long[int(0.4 * sr):int(0.9 * sr)] += _word(int(0.5 * sr), sr, 200)          # speech off-centre
    sf.write(root / "03" / "4_03_0.wav", long, sr, subtype="PCM_16")
    (root / "04" / "5_04_0.wav").write_bytes(b"RIFF\x10\x00\x00\x00garbage, not a wave file")
    (root / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    return root


def test_audiomnist_layout_labels_and_bad_file(audiomnist, tmp_path, capsys):
    feats = D.load_features(audiomnist, cache_dir=tmp_path / "cache")
    assert feats.layout == "audiomnist"
    both = {}
    for sp in (feats.train, feats.test):
        assert sp.x.shape == (len(sp), 64, 64) and sp.x.dtype == np.float32
        for p, d, s, g in zip(sp.path, sp.digit, sp.speaker, sp.gender):
            both[os.path.basename(p)] = (int(d), str(s), str(g))
    assert len(both) == 5 * 6 + 1                                              # 30 + long, corrupt dropped
    assert both["2_05_1.wav"] == (2, "05", "female") and both["0_01_0.wav"] == (0, "01", "male")
    assert both["4_03_0.wav"] == (4, "03", "male")
    assert set(feats.train.speaker).isdisjoint(feats.test.speaker)           # official -> speaker split
    assert list(np.unique(feats.test.speaker)) == D.test_speakers(["01", "02", "03", "04", "05"])
    assert len(feats.skipped) == 1 and feats.skipped[0][0].endswith("5_04_0.wav")
    assert "not a readable audio file" in feats.skipped[0][1]
    err = capsys.readouterr().err
    assert err.count("5_04_0.wav") == 1 and "not a readable audio file (" in err  # reported once
    # the 3 s file (speech at 0.4-0.9 s) comes out centred on its speech
    sp = feats.train if "03" in set(feats.train.speaker) else feats.test
    x = sp.x[[os.path.basename(p) for p in sp.path].index("4_03_0.wav")]
    e = np.exp(x).sum(0)                                                       # (T,) energy per frame
    assert abs((e * np.arange(64)).sum() / e.sum() - 31.5) < 2
    # 48 kHz stereo is resampled and mixed like a mono 8 kHz file of the same sound
    mono = A.load_wav(audiomnist / "01" / "0_01_1.wav")
    assert mono.shape == (4000,)
    with pytest.raises(ValueError, match="5_04_0.wav is not a readable audio file"):
        D.load_features(audiomnist, cache_dir=tmp_path / "cache2", strict=True)


def test_fsdd_layout_split_gender_and_subset(tmp_path):
    root = make_fsdd(tmp_path / "fsdd")
    lst = D.scan(root)
    assert lst.layout == "fsdd" and len(lst.clips) == 3 * 3 * 7
    tr, te = D.split_clips(lst, "official")
    assert len(te) == 3 * 3 * 5 and all(c.take <= 4 for c in te) and all(c.take >= 5 for c in tr)
    tr, te = D.split_clips(lst, "speakers")
    assert {c.speaker for c in te} == set(D.test_speakers(["ann", "bob", "cyd"])) and len(te) == 21
    with pytest.raises(ValueError, match="split must be"):
        D.split_clips(lst, "random")
    sub = D.subset(lst.clips, 4)
    assert len(sub) == 12 and sub == D.subset(lst.clips, 4) and len({c.speaker for c in sub}) > 1
    f = D.load_features(root / "recordings", split="official", cache_dir=tmp_path / "c", max_per_digit=2)
    assert len(f.train) == 6 and len(f.test) == 6
    assert set(f.train.gender) <= {"male", "female"} and "female" in set(f.train.gender) | set(f.test.gender)
    assert f.train.digit.dtype == np.int64 and set(f.train.digit) == {0, 1, 2}


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_features(tmp_path / "missing", cache_dir=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        D.load_features(tmp_path / "empty", cache_dir=tmp_path / "c")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="holds no .wav recordings"):
        D.scan(tmp_path / "notes")
    root = make_fsdd(tmp_path / "fsdd", speakers=("ann", "bob"), digits=(0, 1), takes=(0, 5), csv=False)
    rec = root / "recordings"
    (rec / "1_ann_6.wav").write_text("plain text, not audio")
    sf.write(rec / "0_ann_7.wav", np.zeros(0), 8000)
    sf.write(rec / "0_bob_8.wav", np.zeros(4000), 8000)
    nan = _word(2000, 8000).astype(np.float32)
    nan[100] = np.nan
    sf.write(rec / "1_bob_9.wav", nan, 8000, subtype="FLOAT")
    sf.write(rec / "hello.wav", _word(2000, 8000), 8000)
    f = D.load_features(root, cache_dir=tmp_path / "c")
    reasons = {os.path.basename(p): r for p, r in f.skipped}
    assert set(reasons) == {"1_ann_6.wav", "0_ann_7.wav", "0_bob_8.wav", "1_bob_9.wav", "hello.wav"}
    assert "not a readable audio file" in reasons["1_ann_6.wav"]
    assert "no samples" in reasons["0_ann_7.wav"]
    assert "silent" in reasons["0_bob_8.wav"]
    assert "non-finite" in reasons["1_bob_9.wav"]
    assert "name does not match" in reasons["hello.wav"]
    assert len(f.train) + len(f.test) == 8 and set(f.train.gender) == {"unknown"}
    again = D.load_features(root, cache_dir=tmp_path / "c")                   # cached, same report
    assert sorted(again.skipped) == sorted(f.skipped)
    for bad in ("1_ann_6.wav", "0_ann_7.wav", "0_bob_8.wav", "1_bob_9.wav"):
        only = make_fsdd(tmp_path / f"s_{bad}", speakers=("ann", "bob"), digits=(0,), takes=(0, 5), csv=False)
        os.link(rec / bad, only / "recordings" / bad)
        with pytest.raises(ValueError, match=bad):
            D.load_features(only, cache_dir=tmp_path / "c", strict=True)


def test_feature_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    root = make_fsdd(tmp_path / "fsdd", speakers=("ann", "bob"), digits=(0, 1), takes=(0, 5, 6))
    cache = tmp_path / "cache"
    f1 = D.load_features(root, cache_dir=cache)
    files = sorted(os.listdir(cache))
    assert len(files) == 1 and files[0].endswith(".npz")                    # no temp file left behind

    def boom(*a, **k):
        raise AssertionError("features recomputed although cached")
    monkeypatch.setattr(D, "compute_features", boom)
    f2 = D.load_features(root, cache_dir=cache)
    assert np.array_equal(f1.train.x, f2.train.x) and f1.test.path == f2.test.path
    monkeypatch.undo()
    f3 = D.load_features(root, cache_dir=cache, cfg=A.FeatureConfig(trim_db=30.0))  # new setting
    assert len(os.listdir(cache)) == 2 and f3.cfg.trim_db == 30.0
    target = root / "recordings" / "0_ann_5.wav"
    sf.write(target, _word(3000, 8000, 300), 8000)                             # a file changes
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    f4 = D.load_features(root, cache_dir=cache)
    assert len(os.listdir(cache)) == 3
    i = [os.path.basename(p) for p in f4.train.path].index("0_ann_5.wav")
    assert not np.allclose(f4.train.x[i], f1.train.x[i])
    monkeypatch.setenv("MINIVQ_CACHE", str(tmp_path / "envcache"))
    D.load_features(root)
    assert len(os.listdir(tmp_path / "envcache")) == 1


def test_fsdd_real_counts_from_names(fsdd_path):
    lst = D.scan(fsdd_path)
    assert lst.layout == "fsdd" and len(lst.clips) == 3000 and not lst.skipped
    assert np.bincount([c.digit for c in lst.clips]).tolist() == [300] * 10
    tr, te = D.split_clips(lst, "official")
    assert (len(tr), len(te)) == (2700, 300)
    assert np.bincount([c.digit for c in te]).tolist() == [30] * 10
    tr, te = D.split_clips(lst, "speakers")
    assert {c.speaker for c in tr}.isdisjoint({c.speaker for c in te}) and len(te) == 500


def test_fsdd_real_cache_reused(fsdd_path, tmp_path, monkeypatch):
    # A second load must come from the cache. That is checked exactly (decoding is made to fail),
    # not by timing: wall-clock ratios depend on the machine's load and have failed on CI.
    f1 = D.load_features(fsdd_path, cache_dir=tmp_path, max_per_digit=60, progress=False)
    assert any(tmp_path.iterdir()), "the first load wrote no cache file"

    def no_decoding(*a, **k):
        raise AssertionError("the second load decoded audio instead of reading the cache")
    monkeypatch.setattr(A, "load_wav", no_decoding)
    f2 = D.load_features(fsdd_path, cache_dir=tmp_path, max_per_digit=60, progress=False)
    assert (len(f1.train), len(f1.test)) == (600, 300)
    assert np.array_equal(f1.train.x, f2.train.x) and np.array_equal(f1.test.digit, f2.test.digit)
    assert f1.train.x.min() >= np.log(A.FeatureConfig().log_floor) - 1e-4 and f1.train.x.max() > 0


def test_info_cli(audiomnist, tmp_path, capsys):
    assert D.main(["info", str(audiomnist)]) == 0
    out = capsys.readouterr().out
    assert "audiomnist layout" in out and "clips: 31 readable, 1 skipped" in out
    assert "per digit: {0: 10, 1: 10, 2: 10, 4: 1}" in out and "48000: 31" in out
    assert "02 (female) 6" in out and "5_04_0.wav" in out and "max 3.000" in out
    assert D.main(["info", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: data folder") and "nowhere" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_download_from_local_archive(tmp_path, kind, capsys):
    src = make_fsdd(tmp_path / "src" / "free-spoken-digit-dataset-1.0.10", speakers=("ann",), digits=(0, 1),
                    takes=(0, 5))
    archive = tmp_path / f"fsdd.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for p in sorted(src.rglob("*")):
                z.write(p, p.relative_to(src.parent))
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(src, arcname=src.name)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    url = archive.resolve().as_uri()
    out = tmp_path / "out"
    assert D.main(["download", "fsdd", "--to", str(out), "--url", url, "--sha256", digest]) == 0
    ready = out / "free-spoken-digit-dataset-1.0.10"
    assert str(ready) in capsys.readouterr().out
    assert len(D.scan(ready).clips) == 4 and not list(out.glob(".*"))        # temp files removed
    assert D.main(["download", "fsdd", "--to", str(tmp_path / "o2"), "--url", url, "--sha256", "0" * 64]) == 1
    assert "expected 000" in capsys.readouterr().err and not (tmp_path / "o2" / ready.name).exists()
    assert D.main(["download", "fsdd", "--to", str(tmp_path / "o3"), "--url", (tmp_path / "nope.zip").as_uri()]) == 1
    assert "cannot open" in capsys.readouterr().err
