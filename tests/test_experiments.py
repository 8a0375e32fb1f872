"""python -m minivq.experiments paper: the 2x2 study (T1, T2, TC1, TC2) trains every stage once
into one folder, judges the four priors on the same footing, writes results.json and report.md
with the 2x2 and compute-vs-CR tables, reuses finished stages, and runs on FSDD and on an
AudioMNIST-layout folder (48 kHz, clips up to 3.5 s, no metadata file)."""
import json
import re

import numpy as np
import pytest
import soundfile as sf

from minivq import experiments as E
from minivq import pipeline
from minivq.transformer import load_prior

# tiny models, few clips: every stage trains, the evaluation runs, in well under a minute
TINY = dict(max_per_digit=4, clf_epochs=1, listener_epochs=1, vq_epochs_cr16=1, vq_epochs_cr4=1,
            prior_epochs_cr16=1, prior_epochs_cr4=1, prior_batch_cr16=16, prior_batch_cr4=16, d_model=16,
            n_layer=1, n_per_digit=1, warmup=1, time_clips=2)
STAGES = ["classifier", "listener (second judge)", "VQ-VAE (CR=16)", "TC2: prior cond=class", "T2: prior cond=none",
          "VQ-VAE (CR=4)", "TC1: prior cond=class (CR=4)", "T1: prior cond=none (CR=4)"]


def _word(n, sr, f0, phase=0.0):
    """A vowel-like burst of n samples: harmonics of f0 under a Hann envelope, (n,) float64."""
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + phase * k) / k for k in range(1, 12) if f0 * k < 3800)
    return 0.4 * x * np.hanning(n) / np.abs(x).max()


@pytest.fixture(scope="module")
def audiomnist(tmp_path_factory):
    """AudioMNIST layout without audioMNIST_meta.txt: 5 speakers x 10 digits at 48 kHz; every
    other clip is 3.0-3.5 s long (longer than the 1.024 s window) with its word off-centre."""
    root = tmp_path_factory.mktemp("amnist") / "data"
    sr, rng = 48000, np.random.default_rng(0)
    for s in range(1, 6):
        spk = root / f"{s:02d}"
        spk.mkdir(parents=True)
        for d in range(10):
            w = _word(int(0.5 * sr), sr, 110 + 35 * d + 4 * s, s)
            if (d + s) % 2:
                long = 1e-4 * rng.standard_normal(int((3.0 + 0.05 * d) * sr))
                at = int((0.3 + 0.2 * d) * sr)
                long[at:at + len(w)] += w
                w = long
            sf.write(spk / f"{d}_{s:02d}_0.wav", w, sr, subtype="PCM_16")
    return root


def _run(data, out, **kw):
    return E.run_paper(data, out, quick=True, overrides={**TINY, **kw.pop("overrides", {})}, **kw)


@pytest.fixture(scope="module")
def fsdd_run(fsdd_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "work"
    return out, _run(fsdd_path, out)


def _check_table(out, res, n_gen_digits):
    """The 2x2 table in results.json and report.md: four models with the right CR, conditioning,
    tokens per clip and numbers of clips, and priors on disk that match them."""
    M = res["models"]
    assert set(M) == {"T1", "T2", "TC1", "TC2"}
    want = {"T1": (4, "none", 1024), "T2": (16, "none", 256), "TC1": (4, "class", 1024), "TC2": (16, "class", 256)}
    for name, (cr, cond, tokens) in want.items():
        m = M[name]
        assert (m["cr"], m["cond"], m["tokens_per_clip"]) == (cr, cond, tokens), name
        params, cfg, _ = load_prior(out / m["folder"] / "prior.npz")
        assert cfg.context == tokens and cfg.cond == cond  # the prior on disk models that grid
        assert m["n_params"] == sum(int(np.prod(v.shape)) for v in params.values())
        assert m["test_bits_per_clip"] == pytest.approx(m["test_bits_per_token"] * tokens, rel=1e-12)
        hist = np.asarray(m["heard_histogram"])
        p = hist[hist > 0] / hist.sum()
        assert m["heard_entropy_bits"] == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-12)
        assert m["sample_s_per_clip"] > 0 and m["train_seconds"] > 0
        if cond == "class":
            assert m["n"] == TINY["n_per_digit"] * n_gen_digits and hist.sum() == m["n"]
            conf = np.asarray(m["confusion"])
            assert conf.sum() == m["n"]
            # per-digit accuracy is the confusion matrix's diagonal over its rows
            asked = conf.sum(axis=1) > 0
            assert np.allclose(np.asarray(m["per_digit_accuracy"], dtype=float)[asked],
                               np.diag(conf)[asked] / conf.sum(axis=1)[asked])
            assert m["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())
            assert 0.0 <= m["listener"]["accuracy"] <= 1.0
        else:
            assert m["n"] == 10 * TINY["n_per_digit"] and "accuracy" not in m
    # the CR=4 VQ-VAE keeps 4x the tokens of the CR=16 one
    assert res["ratios"]["4"]["tokens_per_clip"] == 4 * res["ratios"]["16"]["tokens_per_clip"] == 1024
    report = (out / "report.md").read_text()
    for name, (cr, cond, tokens) in want.items():
        assert re.search(rf"\| {name} \| {cr} \| {cond} \| {tokens} \| {M[name]['n']} \|", report), name
    assert "| tokens per clip | 256 | 1024 | 4.00x |" in report
    assert "not stated in it" in report  # the name-to-CR mapping is called an assumption
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["models"]["TC1"]["accuracy"] == M["TC1"]["accuracy"]
    for f in ("eval_cr4/confusion_generated.png", "eval_cr16/real_vs_generated.png"):
        assert (out / f).stat().st_size > 0, f
    page = (out / "report.html").read_text()  # the listening page: a gallery per model, both CRs' figures
    for name in want:
        assert f"<h2>{name} (CR=" in page, name
    n_cond = min(3, TINY["n_per_digit"]) * M["TC1"]["n"] // TINY["n_per_digit"]  # clips kept per conditional prior
    assert page.count("<audio") == 2 * (n_cond + min(10, 10 * TINY["n_per_digit"]))
    assert "CR=4 (TC1): " in page and "CR=16 (TC2): " in page
    assert list((out / "eval_cr4" / "samples").glob("conditional_*.wav"))


def test_paper_on_fsdd_table_and_stage_times(fsdd_run):
    out, res = fsdd_run
    assert res["settings"]["layout"] == "fsdd" and res["real"]["n"] == 40
    assert res["settings"]["sampling"] == E.PAPER_SAMPLING  # the best measured T and nucleus, no guidance
    assert (E.PAPER_SAMPLING["temperature"], E.PAPER_SAMPLING["top_p"]) == (0.7, 0.9)
    _check_table(out, res, 10)
    stages = {"classifier", "listener", "vqvae_cr16", "vqvae_cr4", "prior_class", "prior_none", "prior_class_cr4",
              "prior_none_cr4", "evaluation_cr16", "evaluation_cr4", "total"}
    assert stages <= set(res["wall_seconds"])
    assert set(res["train_seconds"]) == stages - {"evaluation_cr16", "evaluation_cr4", "total"}
    assert all(v > 0 for v in res["train_seconds"].values())


def test_rerun_reuses_every_stage(fsdd_run, capsys):
    out, first = fsdd_run
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*.npz")}
    assert len(mtimes) >= 8
    data = json.loads((out / "classifier" / "stage.json").read_text())["root"]
    capsys.readouterr()
    again = _run(data, out)
    err = capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.npz")} == mtimes  # nothing retrained
    for s in STAGES:
        assert f"{s}: done" in err, s
    assert ": fresh" not in err and ": resume" not in err
    assert again["models"]["TC2"]["test_bits_per_token"] == first["models"]["TC2"]["test_bits_per_token"]
    assert again["real"]["accuracy"] == first["real"]["accuracy"]


def test_other_cr4_prior_settings_retrain_only_those_priors(fsdd_run, capsys):
    """Runs after test_rerun_reuses_every_stage: it changes the fixture's CR=4 priors."""
    out, _ = fsdd_run
    data = json.loads((out / "classifier" / "stage.json").read_text())["root"]
    capsys.readouterr()
    res = _run(data, out, overrides={"prior_batch_cr4": 8})
    err = capsys.readouterr().err
    for s in STAGES[:6]:  # the judges, both VQ-VAEs and the CR=16 priors are kept
        assert f"{s}: done" in err, s
    assert "TC1: prior cond=class (CR=4): fresh" in err and "T1: prior cond=none (CR=4): fresh" in err
    assert res["models"]["TC1"]["batch_size"] == 8 and res["models"]["TC2"]["batch_size"] == 16
    assert res["models"]["TC1"]["steps"] == 40 // 8 and load_prior(out / "prior_class_cr4" / "prior.npz")[1].context == 1024
    assert len(list(out.glob("prior_class_cr4.old*"))) == 1  # the old run is set aside, not deleted


def test_voice_stage_beside_tc2(fsdd_run, capsys):
    """Runs after the CR=4 test (same overrides, so the 2x2 is reused): --voice adds a speaker
    classifier and a digit+speaker prior, and judges it and TC2 on the same requests."""
    out, _ = fsdd_run
    data = json.loads((out / "classifier" / "stage.json").read_text())["root"]
    capsys.readouterr()
    res = _run(data, out, overrides={"prior_batch_cr4": 8}, voice=True)
    err = capsys.readouterr().err
    for s in STAGES:
        assert f"{s}: done" in err, s
    v = res["voice"]
    names = v["speakers"]
    assert len(names) >= 2 and names == sorted(names)
    cfg = load_prior(out / "prior_speaker" / "prior.npz")[1]
    assert cfg.speakers == tuple(names) and cfg.cond == "class" and cfg.context == 256
    n = 10 * len(names) * E.QUICK["voice_n"]
    for key in ("speaker_prior", "class_only"):
        m = v[key]
        assert m["n_clips"] == n and 0.0 <= m["speaker_accuracy"] <= 1.0 and 0.0 <= m["digit_accuracy"] <= 1.0
        assert m["sampling"].get("guidance") is None  # the unconditional guide knows no voices
        assert m["speakers"] == names
    assert v["class_only"]["baseline"] and not v["speaker_prior"]["baseline"]
    report = (out / "report.md").read_text()
    assert "## Voice: the digit in a requested speaker's voice (CR=16)" in report
    assert re.search(rf"\| digit \+ speaker \| {n} \| ", report)
    assert res["wall_seconds"]["voice"] > 0
    capsys.readouterr()
    _run(data, out, overrides={"prior_batch_cr4": 8}, voice=True)  # the voice stages are reused too
    err = capsys.readouterr().err
    assert "voice 1/2 speaker classifier: done" in err and "voice 2/2 prior cond=class: done" in err


def test_paper_on_audiomnist_layout_long_clips_no_metadata(audiomnist, tmp_path):
    assert not list(audiomnist.rglob("*meta*"))
    out = tmp_path / "work"
    res = _run(audiomnist, out, overrides={"max_per_digit": None})
    assert res["settings"]["layout"] == "audiomnist"
    # the speaker split holds out 1 of 5 speakers; every clip, the long ones too, was read
    assert sum(res["clips_per_digit"]["train"]) == 40 and sum(res["clips_per_digit"]["test"]) == 10
    _check_table(out, res, 10)


def test_settings_and_cli_errors(capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment settings"):
        E.settings(overrides={"prior_epochs": 1})
    assert E.settings(quick=True, n_per_digit=7)["n_per_digit"] == 7
    assert E.FULL["n_per_digit"] >= 100  # the paper's evaluation: at least 100 clips per digit
    assert {E.name_of(cr, c) for cr in (4, 16) for c in ("class", "none")} == set(E.MODELS)
    monkeypatch.delenv("MINIVQ_FSDD", raising=False)
    assert E.main(["paper", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "error: no data folder: pass --data PATH or set MINIVQ_FSDD"
    assert E.main(["paper", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written before the data folder was found
    assert E.main(["paper", "--seed", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_paper_refuses_to_overwrite_a_pipeline_report(tmp_path, capsys):
    """A pipeline folder's results.json/report.md belong to the pipeline run recorded there."""
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "report.md").write_text("pipeline report")
    (out / "run.json").write_text(json.dumps({"pipeline": {"settings": {}, "command": "x", "started": "y"}}))
    data = tmp_path / "fsdd"
    data.mkdir()
    sf.write(data / "0_a_0.wav", np.zeros(800), 8000)
    assert E.main(["paper", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pipeline run" in err and "--force" in err
    assert (out / "report.md").read_text() == "pipeline report"


def test_pipeline_keeps_prior_folders_at_cr16_and_keys_others_by_cr():
    assert pipeline.prior_folder("class", 16) == "prior_class" and pipeline.prior_folder("none", 16) == "prior_none"
    assert pipeline.prior_folder("class", 4) == "prior_class_cr4"
