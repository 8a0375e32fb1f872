"""The end-to-end pipeline on a small real FSDD subset: every stage trains, the evaluation
and report are written, the exported bundle loads, and a re-run reuses finished stages."""
import json
import shutil

import numpy as np
import pytest

from minivq import pipeline
from minivq.bundle import load_bundle
from minivq.evaluate import latent_top_pr

TINY = dict(max_per_digit=6, clf_epochs=1, vq_epochs=1, prior_epochs=1, uncond_epochs=1, d_model=32, n_layer=1,
            n_per_digit=2, warmup=1)


@pytest.fixture(scope="module")
def tiny_run(fsdd_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe")
    res = pipeline.run_pipeline(fsdd_path, out / "work", quick=True, uncond=True, overrides=TINY,
                                export=out / "bundle", latents=True)
    return out, res


def test_pipeline_writes_results_report_and_figures(tiny_run):
    out, res = tiny_run
    work = out / "work"
    on_disk = json.loads((work / "results.json").read_text())
    assert on_disk["real"]["n"] == 60 and on_disk["griffin_lim"]["n"] == 60
    assert on_disk["generated_class"]["n"] == 20 and on_disk["generated_none"]["n"] == 20
    pac = on_disk["prior_as_classifier"]  # the conditional prior judging the 60 real test grids
    assert pac["n"] == 60 and 0.0 <= pac["accuracy"] <= 1.0 and len(pac["per_digit"]) == 10
    assert pac["mi_bits_lower_bound"] == pytest.approx(pac["h_class_bits"] - pac["cross_entropy_bits"], abs=1e-12)
    assert pac["h_class_bits"] <= np.log2(10) + 1e-12
    for key in ("real", "griffin_lim", "reconstruction", "generated_class"):
        s = on_disk[key]
        assert 0.0 <= s["accuracy"] <= 1.0
        assert np.asarray(s["confusion"]).sum() == s["n"]
    hist = on_disk["generated_none"]["heard_histogram"]
    assert sum(hist) == 20 and 0.0 <= on_disk["generated_none"]["heard_entropy_bits"] <= np.log2(10) + 1e-9
    # 20 generated points are too few for TopP&R in 32-d: reported as such, not crashed
    assert on_disk["generated_class"]["metrics"]["fidelity"] is None
    assert "needs at least" in on_disk["generated_class"]["metrics"]["top_pr_note"]
    assert "needs at least" in on_disk["generated_class"]["latent_top_pr"]["note"]
    for f in ("report.md", "confusion_real.png", "confusion_generated.png", "real_vs_generated.png"):
        assert (work / f).stat().st_size > 0, f
    assert "| real test clips | 60 |" in (work / "report.md").read_text()
    assert set(res["wall_seconds"]) >= {"classifier", "vqvae", "prior_class", "prior_none", "evaluation", "total"}


def test_exported_bundle_loads_and_has_cards(tiny_run):
    out, _ = tiny_run
    b = out / "bundle"
    bundle = load_bundle(b)
    assert bundle.prior[1].context == bundle.vqvae[1].grid ** 2
    for name in ("vqvae", "prior_class", "prior_none", "classifier"):
        card = json.loads((b / f"{name}.json").read_text())
        assert card["data"]["license"] == "CC BY-SA 4.0" and "metrics" in card and "pipeline_command" in card
    assert load_bundle(b, cond="none").prior[1].cond == "none"


def test_rerun_reuses_finished_stages(tiny_run, capsys):
    out, first = tiny_run
    work = out / "work"
    mtimes = {p: p.stat().st_mtime_ns for p in work.glob("*/*.npz")}
    data = json.loads((work / "classifier" / "stage.json").read_text())["root"]
    again = pipeline.run_pipeline(data, work, quick=True, uncond=True, overrides=TINY)
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/*.npz")} == mtimes  # nothing retrained
    assert "classifier: done" in capsys.readouterr().err
    assert again["real"]["accuracy"] == first["real"]["accuracy"]


def test_new_tokens_retrain_the_priors(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    work = tmp_path / "work"
    shutil.copytree(out / "work", work)
    z = dict(np.load(work / "vqvae_cr16" / "tokens.npz"))
    z["train_tokens"] = (z["train_tokens"] + 1) % int(z["K"])  # as if the VQ-VAE had been retrained
    np.savez(work / "vqvae_cr16" / "tokens.npz", **z)
    data = json.loads((work / "classifier" / "stage.json").read_text())["root"]
    pipeline.run_pipeline(data, work, quick=True, uncond=False, overrides={**TINY, "n_per_digit": 1})
    err = capsys.readouterr().err
    assert "VQ-VAE (CR=16): done" in err and "prior cond=class: fresh" in err


def test_prior_patience_and_class_norm_are_recorded_and_reused_and_leave_the_guide_alone(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    work = tmp_path / "work"
    shutil.copytree(out / "work", work)
    rec = json.loads((work / "prior_class" / "stage.json").read_text())
    assert "patience" not in rec["train"]  # unset: records made before the option existed still match
    assert "class_norm" not in rec["model"]  # likewise
    data_id = {k: v for k, v in rec.items() if k not in ("stage", "model", "train", "vqvae", "tokens")}
    S = {**pipeline.QUICK, **TINY}
    es = {**S, "prior_epochs": 2, "prior_patience": 1}

    def stage(cond, settings, epochs):
        pipeline.prior_stage(work, 16, cond, settings, epochs, data_id, 0, "t")
        return capsys.readouterr().err

    assert "cond=none: fresh" in stage("none", S, 1)  # fresh: the copy's VQ-VAE has another path
    assert "cond=none: done" in stage("none", es, 1)  # the guide does not early-stop: nothing changes
    assert "cond=class: fresh" in stage("class", es, 2)
    assert "cond=class: done" in stage("class", es, 2)  # reused with the option set
    rec = json.loads((work / "prior_class" / "stage.json").read_text())
    assert rec["train"]["patience"] == 1 and rec["train"]["epochs"] == 2
    m = json.loads((work / "prior_class" / "metrics.json").read_text())
    assert m["kept_epoch"] in (1, 2)
    norm = {**es, "class_norm": True}
    assert "cond=none: done" in stage("none", norm, 1)  # the guide is unconditional: no class_norm
    assert "cond=class: fresh" in stage("class", norm, 2)
    assert json.loads((work / "prior_class" / "stage.json").read_text())["model"]["class_norm"] is True


def test_changed_settings_retrain_and_set_old_run_aside(tmp_path):
    folder = tmp_path / "stage"
    assert pipeline._stage(folder, {"a": 1}, folder / "final.npz") == "fresh"
    (folder / "final.npz").write_bytes(b"x")
    assert pipeline._stage(folder, {"a": 1}, folder / "final.npz") == "done"
    assert pipeline._stage(folder, {"a": 2}, folder / "final.npz") == "fresh"
    assert not (folder / "final.npz").exists()
    assert len(list(tmp_path.glob("stage.old*"))) == 1


def test_pipeline_cli_errors_are_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("MINIVQ_FSDD", raising=False)
    assert pipeline.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: no data folder: pass --data PATH or set MINIVQ_FSDD"
    assert pipeline.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(ValueError, match="unknown pipeline settings"):
        pipeline.run_pipeline(tmp_path, tmp_path, overrides={"epochs": 1})


def test_latent_top_pr_in_code_space():
    """Token grids drawn from the same codes score high; grids made of unused codes score 0."""
    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((1024, 2))  # (K, D)
    codebook[512:] += 20.0  # the upper half of the codes lies far from the lower half
    real = rng.integers(0, 512, (300, 1, 2))  # (N, h, w) grids of lower-half codes
    same = rng.integers(0, 512, (300, 1, 2))
    other = rng.integers(512, 1024, (300, 1, 2))
    a = latent_top_pr(codebook, real, same)
    b = latent_top_pr(codebook, real, other)
    assert a["fidelity"] > 0.8 and a["diversity"] > 0.8
    assert b["fidelity"] == 0.0 and b["diversity"] == 0.0
    assert latent_top_pr(codebook, real[:5], same[:5])["fidelity"] is None


def test_pipeline_cli_defaults_are_the_best_measured_sampling(monkeypatch, tmp_path, capsys):
    """By default the guide is trained and generations use BEST_SAMPLING; --no-uncond samples the
    conditional prior alone (guidance 1), and guidance without the guide is a one-line error."""
    calls = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: calls.append(k))
    data = tmp_path / "data"
    data.mkdir()
    assert pipeline.main(["--data", str(data), "--out", str(tmp_path / "a")]) == 0
    assert calls[-1]["uncond"] is True and calls[-1]["sampling"] == pipeline.BEST_SAMPLING
    assert pipeline.main(["--data", str(data), "--out", str(tmp_path / "b"), "--no-uncond"]) == 0
    assert calls[-1]["uncond"] is False and calls[-1]["sampling"]["guidance"] == 1.0
    assert calls[-1]["overrides"] == {}  # the prior's epochs and (no) early stopping: FULL's
    assert pipeline.main(["--data", str(data), "--out", str(tmp_path / "c"), "--top-p", "1"]) == 0
    assert calls[-1]["sampling"]["top_p"] is None  # 1 keeps every code: nucleus off
    assert pipeline.main(["--data", str(data), "--out", str(tmp_path / "e"), "--prior-epochs", "40",
                          "--prior-patience", "3"]) == 0
    assert calls[-1]["overrides"] == {"prior_epochs": 40, "prior_patience": 3}
    assert pipeline.main(["--data", str(data), "--out", str(tmp_path / "f"), "--class-norm"]) == 0
    assert calls[-1]["overrides"] == {"class_norm": True}
    capsys.readouterr()
    assert pipeline.main(["--data", str(data), "--out", str(tmp_path / "d"), "--no-uncond", "--guidance", "2"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --guidance needs the unconditional prior: "
                                               "leave out --no-uncond")
