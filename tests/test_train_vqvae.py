"""VQ-VAE trainer: exact resume after an interruption, NaN guard, outputs, CLI errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from minivq import checkpoint
from minivq.backend import to_numpy
from minivq import train_vqvae as T
from minivq import vqvae as V
from minivq.progress import NonFiniteLoss

from fakes import tiny_features as _features

TINY = dict(in_size=16, ch1=4, hidden=8, res_hidden=4, n_res=1, D=4, K=16)


def _tcfg(**kw):
    d = dict(epochs=2, batch_size=8, lr=3e-3, warmup=2, seed=3, restart_after=2, log_every=1e9)
    d.update(kw)
    return T.TrainConfig(**d)


@pytest.mark.parametrize("stop_at", [4, 3])  # mid-epoch (3 steps per epoch) and an epoch boundary
def test_interrupt_and_resume_is_exact(tmp_path, stop_at):
    cfg = V.VQVAEConfig(cr=4, **TINY)
    feats = _features()
    ref = T.train(cfg, feats, tmp_path / "a", _tcfg(), finish=False, verbose=False)
    assert ref["step"] == 6

    def interrupt(step, parts):
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, feats, tmp_path / "b", _tcfg(), finish=False, callback=interrupt, verbose=False)
    assert checkpoint.load(tmp_path / "b" / "last.npz")["meta"]["step"] == stop_at
    res = T.train(cfg, feats, tmp_path / "b", _tcfg(), resume=True, finish=False, verbose=False)
    assert res["step"] == 6
    for k in ref["params"]:  # the trainers return params on the backend (CuPy on a GPU)
        np.testing.assert_array_equal(to_numpy(res["params"][k]), to_numpy(ref["params"][k]), err_msg=k)
    a = checkpoint.load(tmp_path / "a" / "last.npz")
    b = checkpoint.load(tmp_path / "b" / "last.npz")
    for k in a["opt_state"]:
        np.testing.assert_array_equal(a["opt_state"][k]["m"], b["opt_state"][k]["m"])
        assert a["opt_state"][k]["t"] == b["opt_state"][k]["t"]
    assert "q_usage" in a["extra"]  # the rare-code restart's usage EMA (on by default at CR=4) resumes too
    for k in a["extra"]:
        np.testing.assert_array_equal(a["extra"][k], b["extra"][k], err_msg=k)
    # training changed the model (a stub that returns the initial params would fail here)
    init = V.init_params(cfg, seed=3)
    assert not np.array_equal(to_numpy(init["dec_in_w"]), to_numpy(ref["params"]["dec_in_w"]))


def test_resume_refuses_other_config(tmp_path):
    feats = _features()
    T.train(V.VQVAEConfig(cr=4, **TINY), feats, tmp_path, _tcfg(epochs=1), finish=False, verbose=False)
    with pytest.raises(ValueError, match="different model config"):
        T.train(V.VQVAEConfig(cr=16, **TINY), feats, tmp_path, _tcfg(epochs=1), resume=True, finish=False,
                verbose=False)


def test_nonfinite_loss_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = V.VQVAEConfig(cr=4, **TINY)
    feats = _features()
    T.train(cfg, feats, tmp_path, _tcfg(epochs=1), finish=False, verbose=False)
    good = checkpoint.load(tmp_path / "last.npz")
    real = V.forward

    def nan_forward(params, x, cfg_):
        loss, parts, cache = real(params, x, cfg_)
        return loss * np.nan, parts, cache

    monkeypatch.setattr(V, "forward", nan_forward)
    with pytest.raises(NonFiniteLoss, match="step 3"):
        T.train(cfg, feats, tmp_path, _tcfg(epochs=2), resume=True, finish=False, verbose=False)
    after = checkpoint.load(tmp_path / "last.npz")
    assert after["meta"]["step"] == good["meta"]["step"] == 3
    for k in good["params"]:
        np.testing.assert_array_equal(after["params"][k], good["params"][k])


def test_training_reduces_loss_and_writes_outputs(tmp_path):
    """Full-size input (64x64, so Griffin-Lim WAVs work) with a narrow model, a few steps."""
    cfg = V.VQVAEConfig(cr=16, in_size=64, ch1=4, hidden=8, res_hidden=4, n_res=1, D=4, K=16)
    feats = _features(n_train=16, n_test=4, size=64)
    res = T.train(cfg, feats, tmp_path, _tcfg(epochs=5, lr=1e-2, batch_size=8), verbose=False)
    h = res["history"]
    assert h[-1]["recon"] < 0.8 * h[0]["recon"], h
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test_mse"] == pytest.approx(res["metrics"]["test_mse"]) and 0 < m["test_mse"] < 1.0
    assert 1.0 <= m["test_perplexity"] <= cfg.K and 0 < m["test_active"] <= 1
    z = np.load(tmp_path / "tokens.npz")
    assert z["train_tokens"].shape == (16, 16, 16) and z["test_tokens"].shape == (4, 16, 16)
    assert int(z["K"]) == 16 and z["train_tokens"].max() < 16
    np.testing.assert_array_equal(z["test_digit"], feats.test.digit)
    assert list(z["train_speaker"]) == list(feats.train.speaker)
    assert (tmp_path / "recon.png").stat().st_size > 1000
    assert len(list(tmp_path.glob("recon_*_vqvae.wav"))) == 3
    # the saved model reproduces the tokens and decodes them to raw log-mels
    params, cfg2, norm = V.load_vqvae(tmp_path / "vqvae.npz")
    assert cfg2 == cfg
    toks = V.encode_logmel(params, cfg2, norm, feats.test.x)
    np.testing.assert_array_equal(toks, z["test_tokens"])
    rec = V.decode_logmel(params, cfg2, norm, toks)
    assert rec.shape == (4, 64, 64)
    raw_mse = float(((rec - feats.test.x) ** 2).mean())
    assert raw_mse == pytest.approx(m["test_mse_logmel"], rel=1e-3)


def test_silent_positions_mark_patches_of_pure_floor():
    from minivq.vqvae_report import silent_positions
    floor = np.log(1e-5)
    x = np.full((2, 8, 8), floor, np.float32)  # (N, M, T): two clips of silence ...
    x[0, :, :3] = -2.0  # ... the first with sound in frames 0-2
    x[1, 5, 6] = floor + 0.01  # ... the second with one cell just above the floor
    s = silent_positions(x, 4, 1e-5)  # 2 x 2 cells per position
    assert s.shape == (2, 4, 4)
    assert not s[0, :, :2].any() and s[0, :, 2:].all()  # frames 0-3 hold sound, 4-7 do not
    assert s[1].sum() == 15 and not s[1, 2, 3]


def test_cli_bad_data_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minivq.train", "vqvae", "--data", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error:")


def test_cli_quick_on_fsdd(fsdd_path, tmp_path):
    r = subprocess.run([sys.executable, "-m", "minivq.train", "vqvae", "--data", str(fsdd_path), "--cr", "16",
                        "--out", str(tmp_path), "--quick", "--max-per-digit", "2", "--epochs", "1",
                        "--hidden", "16", "--K", "32", "--D", "8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["n_train"] == 20 and m["grid"] == 16 and np.isfinite(m["test_mse"])
    assert 0.2 < m["test_silent_fraction"] < 0.9  # FSDD clips are padded to 1.024 s with silence
    assert 1.0 <= m["test_perplexity_sound"] <= 32 and "digital silence" in r.stdout
    assert np.load(tmp_path / "tokens.npz")["train_tokens"].shape == (20, 16, 16)
