"""Data that is not what the pipeline expects, one section per case; tiny WAV folders written here."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from minivq import audio as A
from minivq import data as D
from minivq import pipeline, train

SR = 8000


def _word(n, f0=160.0, seed=0):
    """A vowel-like burst of n samples at 8 kHz: harmonics under a Hann envelope, (n,) float64."""
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + seed * k) / k for k in range(1, 12) if f0 * k < 3800)
    return 0.4 * x * np.hanning(n) / np.abs(x).max()


def fsdd(root, plan, speakers=("ann", "bob")):
    """FSDD layout from plan = {digit: takes}: one 0.3 s word per speaker, digit and take."""
    rec = Path(root) / "recordings"
    rec.mkdir(parents=True)
    for i, s in enumerate(speakers):
        for d, takes in plan.items():
            for k in takes:
                sf.write(rec / f"{d}_{s}_{k}.wav", _word(2400, 120 + 30 * d + 7 * i, k), SR, subtype="PCM_16")
    return Path(root)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVQ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _no_escape(fn, *a):
    """Call a CLI main; a KeyboardInterrupt escaping it fails the test instead of stopping pytest."""
    try:
        return fn(*a)
    except KeyboardInterrupt as e:
        pytest.fail(f"KeyboardInterrupt escaped the CLI ({e!r})")


# ---------------------------------------------------------------- 1. digits missing from a split

TINY = dict(max_per_digit=None, clf_epochs=1, vq_epochs=1, prior_epochs=1, uncond_epochs=1, d_model=32,
            n_layer=1, n_per_digit=1, warmup=1)


def test_pipeline_evaluates_the_digits_there_are(tmp_path, capsys):
    # digits 3 and 4 in both splits, 5 in training only (takes >= 5), the other seven nowhere
    # (the prior trains on batches of 32 sequences, hence 4 speakers x 3 digits x 3 training takes)
    root = fsdd(tmp_path / "d345", {3: (0, 5, 6, 7), 4: (0, 5, 6, 7), 5: (5, 6, 7)}, speakers=("a", "b", "c", "d"))
    res = pipeline.run_pipeline(root, tmp_path / "out", quick=True, overrides=TINY)
    err = capsys.readouterr().err
    assert ("coverage, clips per digit 0-9: train [0, 0, 0, 12, 12, 12, 0, 0, 0, 0], "
            "test [0, 0, 0, 4, 4, 0, 0, 0, 0, 0]") in err
    assert "digit(s) [5] have no test clips" in err and "digit(s) [0, 1, 2, 6, 7, 8, 9] have no clips at all" in err
    assert err.index("coverage") < err.index("stage 1/4")                      # said before any training
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["real"]["n"] == 8 and on_disk["reconstruction"]["n"] == 8
    assert on_disk["generated_digits"] == [3, 4, 5] and on_disk["generated_class"]["n"] == 3
    assert np.asarray(on_disk["generated_class"]["confusion"]).sum(axis=1).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert res["clips_per_digit"]["test"][3:5] == [4, 4]
    for f in ("report.md", "confusion_real.png", "confusion_generated.png", "real_vs_generated.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0, f
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| real test clips | 8 |" in report and "conditional generations cover digits [3, 4, 5]" in report
    assert sorted(p.name.split("_")[1] for p in (tmp_path / "out" / "samples").glob("conditional_*.wav")) == \
        ["3", "4", "5"]


def test_a_test_digit_without_training_clips_stops_before_training(tmp_path, capsys):
    root = fsdd(tmp_path / "d347", {3: (0, 5), 4: (0, 5), 7: (0, 1)})           # 7: test takes only
    rc = _no_escape(pipeline.main, ["--data", str(root), "--out", str(tmp_path / "out"), "--quick"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: data folder {root}")
    assert "digit(s) [7] have test clips but no training clips" in last
    assert not (tmp_path / "out" / "classifier").exists()                    # nothing was trained


def test_too_few_training_clips_for_a_prior_batch_stops_before_training(tmp_path, capsys):
    root = fsdd(tmp_path / "few", {3: (0, 5, 6), 4: (0, 5, 6)})              # 8 training clips < 32
    rc = _no_escape(pipeline.main, ["--data", str(root), "--out", str(tmp_path / "out"), "--quick"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: data folder {root}: only 8 training clips") and "prior training batch" in last
    assert not (tmp_path / "out" / "classifier").exists()                    # nothing was trained


def test_check_coverage_returns_the_digits_with_training_clips(capsys):
    split = lambda digits: type("S", (), {"digit": np.array(digits)})       # noqa: E731
    feats = type("F", (), {"root": "DATA", "train": split([1, 1, 2, 9]), "test": split([1, 9])})
    assert pipeline.check_coverage(feats) == [1, 2, 9]
    assert "digit(s) [2] have no test clips" in capsys.readouterr().err
    feats.test = split([1, 3])
    with pytest.raises(ValueError, match=r"DATA: digit\(s\) \[3\] have test clips but no training clips"):
        pipeline.check_coverage(feats)


# ------------------------------------------------------------------------- 2. a WAV cut in half

def test_truncated_wav_is_skipped_with_its_reason(tmp_path, capsys):
    root = fsdd(tmp_path / "cut", {0: (0, 5), 1: (0, 5)})
    target = root / "recordings" / "1_bob_5.wav"
    whole = target.read_bytes()
    target.write_bytes(whole[:44 + (len(whole) - 44) // 2])                  # header kept, half the samples
    assert sf.info(str(target)).frames == 1200                               # libsndfile reads the half quietly
    f = D.load_features(root)
    assert [os.path.basename(p) for p, _ in f.skipped] == ["1_bob_5.wav"]
    reason = f.skipped[0][1]
    assert reason == ("is truncated: its WAV header promises 4800 bytes of samples (0.300 s) "
                      "but the file holds only 2400 (0.150 s)")
    assert len(f.train) + len(f.test) == 7 and str(target) not in f.train.path
    err = capsys.readouterr().err
    assert f"skipped {target}: is truncated" in err and "1 of 8 files" in err
    with pytest.raises(ValueError, match="1_bob_5.wav is truncated"):
        D.load_features(root, cache_dir=tmp_path / "c2", strict=True)
    assert f"skipped {target}: is truncated" in D.info(root) and "clips: 7 readable, 1 skipped" in D.info(root)


def test_whole_wavs_are_not_flagged(tmp_path):
    w = _word(2400)
    sf.write(tmp_path / "plain.wav", w, SR, subtype="PCM_16")
    sf.write(tmp_path / "stereo48k.wav", np.stack([w, w], 1), 48000, subtype="PCM_24")
    sf.write(tmp_path / "float.wav", w.astype(np.float32), SR, subtype="FLOAT")
    sf.write(tmp_path / "odd.wav", w[:2399], SR, subtype="PCM_U8")            # odd data size, padded
    for name in ("plain", "stereo48k", "float", "odd"):
        assert D.wav_truncation(tmp_path / f"{name}.wav") is None, name
    b = bytearray((tmp_path / "plain.wav").read_bytes())
    (tmp_path / "tail.wav").write_bytes(bytes(b) + b"LIST\x04\x00\x00\x00INFO")  # a chunk after the samples
    assert D.wav_truncation(tmp_path / "tail.wav") is None
    i = b.index(b"data")
    b[i + 4:i + 8] = b"\xff\xff\xff\xff"                                     # streamed: size left unknown
    (tmp_path / "stream.wav").write_bytes(bytes(b[:-100]))
    assert D.wav_truncation(tmp_path / "stream.wav") is None
    (tmp_path / "text.wav").write_text("not audio")
    assert D.wav_truncation(tmp_path / "text.wav") is None                   # load_wav reports that one


# ------------------------------------------------------------------------------ 3. no test split

def test_no_test_clips_is_a_clear_error_before_training(tmp_path, capsys):
    root = fsdd(tmp_path / "late", {0: (5, 6), 1: (5, 6)})                   # FSDD takes 0-4 are the test set
    with pytest.raises(ValueError) as e:
        D.load_features(root)
    assert str(e.value) == (f"data folder {root} has no test clips under the official split (takes 0-4 of "
                            "every speaker are the test set, the other takes the training set): "
                            "none of its 8 recordings is one")
    for model, extra in (("classifier", []), ("vqvae", ["--batch", "4"])):
        out = tmp_path / model
        rc = _no_escape(train.main, [model, "--data", str(root), "--out", str(out), "--epochs", "1", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.strip().splitlines() == [f"error: {e.value}"], (model, err)
        assert not out.exists()


def test_a_test_split_of_skipped_files_and_a_single_speaker(tmp_path):
    root = fsdd(tmp_path / "bad", {0: (0, 5), 1: (0, 5)}, speakers=("ann",))
    for d in (0, 1):                                                          # both test clips are damaged
        (root / "recordings" / f"{d}_ann_0.wav").write_text("not audio")
    with pytest.raises(ValueError, match=r"has no test clips under the official split \(takes 0-4 .*\): "
                                         r"every one of them was skipped"):
        D.load_features(root)
    with pytest.raises(ValueError, match=f"data folder {root}: a speaker-disjoint split needs at least 2 speakers"):
        D.load_features(root, split="speakers")
    amn = tmp_path / "amn"
    for s in ("01", "02", "03"):
        (amn / s).mkdir(parents=True)
        sf.write(amn / s / f"0_{s}_0.wav", _word(2400), SR)
    held = D.test_speakers(["01", "02", "03"])[0]                           # AudioMNIST: a speaker split
    (amn / held / f"0_{held}_0.wav").write_text("not audio")
    with pytest.raises(ValueError, match=rf"official split \(the held-out speakers \['{held}'\] are the test set"):
        D.load_features(amn)


# -------------------------------------------------------------------------- 4. very long clips

def test_long_clips_are_counted_and_named(tmp_path, capsys):
    root = fsdd(tmp_path / "long", {0: (0, 5), 1: (0, 5)})
    talk = np.concatenate([_word(2400, 150 + 10 * (i % 7), i) for i in range(200)])  # 60 s without a pause
    sf.write(root / "recordings" / "1_ann_6.wav", talk, SR, subtype="PCM_16")
    quiet = 1e-4 * np.random.default_rng(0).standard_normal(28000)                # 3.5 s, 0.3 s of speech
    quiet[9000:11400] += _word(2400)
    sf.write(root / "recordings" / "0_bob_7.wav", quiet, SR, subtype="PCM_16")
    f = D.load_features(root)
    assert [(os.path.basename(p), round(s, 1)) for p, s in f.cropped] == [("1_ann_6.wav", 60.0)]
    assert len(f.train) == 6 and not f.skipped                                # kept, cropped as before
    note = ("note: 1 clip in {} holds more than 2.048 s of sound after silence trimming; only the central "
            "1.024 s is used, e.g. {} (60.0 s of sound)").format(f.root, root.resolve() / "recordings" / "1_ann_6.wav")
    assert note in capsys.readouterr().err
    again = D.load_features(root)                                             # from the cache: said again
    assert again.cropped == f.cropped and note in capsys.readouterr().err


# ---------------------------------------------------------------- 5. Ctrl-C while features load

def _interrupt_on_call(monkeypatch, n):
    real, calls = A.load_wav, []

    def load(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(A, "load_wav", load)


def test_ctrl_c_while_loading_leaves_no_cache_and_says_so(tmp_path, monkeypatch, own_cache):
    root = fsdd(tmp_path / "d", {0: (0, 5), 1: (0, 5)})
    _interrupt_on_call(monkeypatch, 3)
    with pytest.raises(D.LoadInterrupted, match=f"interrupted while loading features from {root}; nothing was written"):
        D.load_features(root)
    assert not own_cache.exists() or not os.listdir(own_cache)
    monkeypatch.undo()
    monkeypatch.setenv("MINIVQ_CACHE", str(own_cache))

    def half_then_interrupt(fh, **arrays):                                    # Ctrl-C in the middle of the write
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="nothing was written"):
        D.load_features(root)
    assert os.listdir(own_cache) == []                                       # no half-written file, no temp file
    monkeypatch.undo()
    monkeypatch.setenv("MINIVQ_CACHE", str(own_cache))
    assert len(D.load_features(root).train) == 4                              # the next run starts over

    def late(*a, **k):                                                        # Ctrl-C once the cache is saved
        raise KeyboardInterrupt
    monkeypatch.setattr(D, "_report_loading", late)
    with pytest.raises(D.LoadInterrupted, match=r"the feature cache .*\.npz had been written complete"):
        D.load_features(root, cache_dir=tmp_path / "c3")
    assert [p.suffix for p in (tmp_path / "c3").iterdir()] == [".npz"]


@pytest.mark.parametrize("cli", ["train", "pipeline"])
def test_ctrl_c_while_loading_is_one_line_and_exit_130(cli, tmp_path, monkeypatch, capsys, own_cache):
    root = fsdd(tmp_path / "d", {0: (0, 5), 1: (0, 5)})
    _interrupt_on_call(monkeypatch, 2)
    out = tmp_path / "out"
    if cli == "train":
        rc = _no_escape(train.main, ["classifier", "--data", str(root), "--out", str(out)])
    else:
        rc = _no_escape(pipeline.main, ["--data", str(root), "--out", str(out), "--quick"])
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted while loading features from {root}; nothing was written "
                                            "(the feature cache is only saved once every clip is done)")
    assert not own_cache.exists() or not os.listdir(own_cache)


# ------------------------------------------------------ 6. skipped files on every (cached) load

def test_skipped_files_are_reported_on_every_load(tmp_path, monkeypatch, capsys):
    root = fsdd(tmp_path / "d", {0: (0, 5), 1: (0, 5)})
    bad = root / "recordings" / "1_ann_7.wav"
    bad.write_text("not audio")
    (root / "recordings" / "one.wav").write_bytes(b"")                        # name outside the layout
    first = D.load_features(root)
    err1 = capsys.readouterr().err

    def boom(*a, **k):
        raise AssertionError("features recomputed although cached")
    monkeypatch.setattr(D, "compute_features", boom)
    second = D.load_features(root)
    err2 = capsys.readouterr().err
    assert sorted(second.skipped) == sorted(first.skipped) and len(first.skipped) == 2
    for err in (err1, err2):
        assert f"skipped {bad}: is not a readable audio file" in err
        assert "one.wav: name does not match" in err
        assert err.strip().splitlines()[-1] == f"2 of 10 files in {root} were skipped (listed above)"
