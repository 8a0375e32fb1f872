"""Prior trainer: learning, exact resume after an interrupt, the NaN guard, the CLI."""
import json

import numpy as np
import pytest

from minivq import checkpoint
from minivq import train_prior as TP
from minivq.progress import NonFiniteLoss
from minivq.train import main as train_main
from minivq.transformer import GPTConfig, load_prior

SMALL_KW = dict(d_model=16, n_layer=1, n_head=2)
SMALL = GPTConfig(**SMALL_KW)
HYPER = dict(epochs=3, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=5, seed=0)


@pytest.fixture(scope="module")
def toks():
    return TP.synthetic_tokens(n_train=96, n_test=32, K=16, grid=4, noise=0.05, seed=0)


def test_learns_and_conditioning_helps(tmp_path, toks):
    res = {}
    for cond in ("class", "none"):
        s = TP.train(toks, tmp_path / cond, GPTConfig(**SMALL_KW, cond=cond),
                     TP.TrainConfig(**{**HYPER, "epochs": 12, "lr": 1e-2, "min_lr": 1e-3}), verbose=False)
        res[cond] = s
        assert s["history"][-1]["train_nats"] < s["history"][0]["train_nats"]
        assert s["test_nats"] < np.log(16) - 0.3  # well below a uniform guess over 16 codes
        m = json.loads((tmp_path / cond / "metrics.json").read_text())
        assert abs(m["test_bits"] - m["test_nats"] / np.log(2)) < 1e-9
        assert len(m["test_bits_per_position"]) == 16
    assert res["class"]["test_nats"] < res["none"]["test_nats"] - 0.03  # 1.01 vs 1.10 nats when written


def test_resume_after_interrupt_is_exact(tmp_path, toks):
    cfg = GPTConfig(**{**SMALL.to_dict(), "dropout": 0.1})  # dropout: the RNG state must resume too
    full = TP.train(toks, tmp_path / "full", cfg, TP.TrainConfig(**HYPER), verbose=False)

    def interrupt(step, loss):
        if step == 8:  # mid-epoch (6 steps per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:  # saved, then raised (trainer.Interrupted)
        TP.train(toks, tmp_path / "cut", cfg, TP.TrainConfig(**HYPER), callback=interrupt, verbose=False)
    part = stopped.value.result
    assert part["interrupted"] and part["step"] == 8
    assert checkpoint.load(tmp_path / "cut" / TP.CKPT_NAME)["meta"]["step"] == 8
    rest = TP.train(toks, tmp_path / "cut", resume=True, verbose=False)
    assert rest["step"] == full["step"] == 18
    a = checkpoint.load(tmp_path / "full" / TP.CKPT_NAME)
    b = checkpoint.load(tmp_path / "cut" / TP.CKPT_NAME)
    for k in a["params"]:
        assert np.array_equal(a["params"][k], b["params"][k]), k
        assert np.array_equal(a["opt_state"][k]["m"], b["opt_state"][k]["m"]), k
    assert rest["test_nats"] == full["test_nats"]
    params, cfg2, meta = load_prior(tmp_path / "full" / TP.CKPT_NAME)
    assert cfg2 == GPTConfig(**{**cfg.to_dict(), "n_code": 16, "context": 16}) and meta["step"] == 18


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, toks, monkeypatch):
    real_forward = TP.forward

    def bad_forward(params, cfg, seq, rng=None):
        loss, cache = real_forward(params, cfg, seq, rng)
        return (float("nan") if bad_forward.calls >= 8 else loss), cache
    bad_forward.calls = 0

    def counting(*a, **k):
        bad_forward.calls += 1
        return bad_forward(*a, **k)

    monkeypatch.setattr(TP, "forward", counting)
    with pytest.raises(NonFiniteLoss, match="step 7"):
        TP.train(toks, tmp_path, SMALL, TP.TrainConfig(**HYPER), verbose=False)
    ck = checkpoint.load(tmp_path / TP.CKPT_NAME)
    assert ck["meta"]["step"] == 6  # the end of epoch 1, the last good state
    assert all(np.isfinite(v).all() for v in ck["params"].values())


def test_cli(tmp_path, toks, capsys):
    np.savez(tmp_path / "tokens.npz", **toks)
    argv = ["prior", "--tokens", str(tmp_path / "tokens.npz"), "--out", str(tmp_path / "run"), "--cond", "class",
            "--class-token", "shared", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--epochs", "1",
            "--batch-size", "32"]
    assert train_main(argv) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["model"]["class_token"] == "shared" and m["step"] == 3 and not m["model"]["class_every"]
    small = argv[:7] + argv[9:] + ["--force"]  # dedicated class tokens (other settings: --force to overwrite)
    assert train_main(small + ["--order", "time"]) == 0  # class_every is on by default for these
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["model"]["class_every"] and m["model"]["order"] == "time"
    assert train_main(small + ["--no-class-every", "--out", str(tmp_path / "plain")]) == 0
    assert not json.loads((tmp_path / "plain" / "metrics.json").read_text())["model"]["class_every"]
    assert train_main(small + ["--class-norm", "--out", str(tmp_path / "norm")]) == 0
    m = json.loads((tmp_path / "norm" / "metrics.json").read_text())
    assert m["model"]["class_norm"] and m["model"]["class_every"]
    params = checkpoint.load(tmp_path / "norm" / "prior.npz")["params"]
    assert params["h0.ln1.cg"].shape == (11, 16) and np.abs(params["ln_f.cb"]).max() > 0  # trained off zero
    assert train_main(small + ["--epochs", "2", "--patience", "1", "--out", str(tmp_path / "es")]) == 0
    m = json.loads((tmp_path / "es" / "metrics.json").read_text())
    assert m["train"]["patience"] == 1 and m["kept_epoch"] in (1, 2) and (tmp_path / "es" / TP.BEST_NAME).is_file()
    assert train_main(small + ["--patience", "0", "--out", str(tmp_path / "es0")]) == 2
    assert "--patience" in capsys.readouterr().err
    assert train_main(small + ["--cond", "none", "--class-every", "--out", str(tmp_path / "bad")]) == 2
    assert "class_every needs" in capsys.readouterr().err
    assert train_main(small + ["--cond", "none", "--class-norm", "--out", str(tmp_path / "bad2")]) == 2
    assert "class_norm needs" in capsys.readouterr().err
    assert train_main(["prior", "--tokens", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert "missing.npz does not exist" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", train_tokens=toks["train_tokens"])
    assert train_main(["prior", "--tokens", str(tmp_path / "bad.npz"), "--out", str(tmp_path)]) == 2
    assert "lacks the array" in capsys.readouterr().err


def test_null_class_drop_is_seeded_and_trained(tmp_path, toks, capsys):
    cfg = GPTConfig(**SMALL_KW, null_class=True)
    batch = np.arange(200 * 3).reshape(200, 3) % 10  # (B, 1 + T) prefix in column 0
    a = TP.drop_classes(batch, cfg, 0.25, seed=0, n=7)
    assert np.array_equal(a, TP.drop_classes(batch, cfg, 0.25, seed=0, n=7))  # a pure function of (seed, step)
    dropped = a[:, 0] == cfg.null_token
    assert 30 < dropped.sum() < 70 and np.array_equal(a[:, 1:], batch[:, 1:])  # ~50 of 200; codes untouched
    assert np.array_equal(a[~dropped], batch[~dropped]) and batch.max() < cfg.null_token  # the input is not written
    assert not np.array_equal(dropped, TP.drop_classes(batch, cfg, 0.25, seed=0, n=8)[:, 0] == cfg.null_token)
    assert TP.drop_classes(batch, cfg, 0.0, seed=0, n=7) is batch
    hyper = TP.TrainConfig(**{**HYPER, "epochs": 1, "p_uncond": 0.3})
    s = TP.train(toks, tmp_path / "null", cfg, hyper, verbose=False)
    params, cfg2, _ = load_prior(tmp_path / "null" / TP.CKPT_NAME)
    assert cfg2.null_class and s["train"]["p_uncond"] == 0.3
    init = TP.init_params(GPTConfig(**{**cfg.to_dict(), "n_code": 16, "context": 16}), seed=0)
    assert np.abs(params["wte"][cfg2.null_token] - np.asarray(init["wte"][cfg2.null_token])).max() > 1e-4
    with pytest.raises(ValueError, match="needs a prior with a null class"):
        TP.train(toks, tmp_path / "a", SMALL, hyper, verbose=False)
    with pytest.raises(ValueError, match="never trained"):
        TP.train(toks, tmp_path / "b", cfg, TP.TrainConfig(**HYPER), verbose=False)
    np.savez(tmp_path / "tokens.npz", **toks)
    argv = ["prior", "--tokens", str(tmp_path / "tokens.npz"), "--out", str(tmp_path / "cli"), "--d-model", "16",
            "--n-layer", "1", "--n-head", "2", "--epochs", "1", "--batch-size", "32", "--p-uncond", "0.2"]
    assert train_main(argv) == 0
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["model"]["null_class"] and m["train"]["p_uncond"] == 0.2
    assert train_main(argv[:-1] + ["1.0", "--force"]) == 2  # a fraction in [0, 1)
    assert "--p-uncond" in capsys.readouterr().err


def _voiced(toks, names=("zoe", "abe", "kim")):
    """The synthetic tokens with a speaker per grid whose voice moves every non-silent code by
    5 * (speaker index) (mod K - 1, code 0 stays silence): the digit and the speaker together
    decide the codes, so a digit+speaker prior can predict what a digit-only prior cannot."""
    out, K = dict(toks), toks["K"]
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        t = toks[f"{split}_tokens"]
        s = rng.integers(0, len(names), len(t))  # (N,)
        out[f"{split}_tokens"] = np.where(t > 0, (t - 1 + 5 * s[:, None, None]) % (K - 1) + 1, 0)
        out[f"{split}_speaker"] = np.array(names)[s]
    return out


def test_speaker_prior_learns_the_voice_and_round_trips(tmp_path, toks):
    """A digit+speaker prior on voiced tokens: its vocabulary is the sorted training speakers, it
    is saved with the checkpoint and read back by load_prior, it resumes with it, and it beats the
    digit-only prior on the test split (it knows the speaker's shift of every code)."""
    v = _voiced(TP.synthetic_tokens(n_train=480, n_test=96, K=16, grid=4, noise=0.05, seed=0))
    names = TP.speaker_vocabulary(v)
    assert names == ["abe", "kim", "zoe"]
    hyper = TP.TrainConfig(**{**HYPER, "epochs": 10, "lr": 1e-2, "min_lr": 1e-3})
    spk = TP.train(v, tmp_path / "spk", GPTConfig(**SMALL_KW, speakers=names), hyper, verbose=False)
    plain = TP.train(v, tmp_path / "plain", GPTConfig(**SMALL_KW), hyper, verbose=False)
    # the first code of a grid (the word starts at column 0 here) is where the voice matters: after it
    # the shift can be read off the codes so far; a digit-only prior must guess it among 3 (at most
    # log2 3 = 1.58 bits to gain; 1.18 vs 1.92 bits when written, 10 epochs on 480 grids)
    first = [r["test_bits_per_position"][0] for r in (spk, plain)]
    assert first[0] < first[1] - 0.4, first
    params, cfg, _ = load_prior(tmp_path / "spk" / "prior.npz")
    assert cfg.speakers == ("abe", "kim", "zoe") and params["wse"].shape == (3, 16)
    assert "wse" not in load_prior(tmp_path / "plain" / "prior.npz")[0]
    again = TP.train(v, tmp_path / "spk", resume=True, verbose=False)  # finished: resumes to the same end
    assert again["model"]["speakers"] == names and abs(again["test_nats"] - spk["test_nats"]) < 1e-12


def test_speaker_cli_and_its_errors(tmp_path, toks, capsys):
    v = _voiced(toks)
    np.savez(tmp_path / "voiced.npz", **v)
    np.savez(tmp_path / "plain.npz", **toks)
    base = ["prior", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--epochs", "1", "--batch-size", "32"]
    assert train_main(base + ["--tokens", str(tmp_path / "voiced.npz"), "--out", str(tmp_path / "a"), "--speaker"]) == 0
    assert load_prior(tmp_path / "a" / "prior.npz")[1].speakers == ("abe", "kim", "zoe")
    capsys.readouterr()
    assert train_main(base + ["--tokens", str(tmp_path / "plain.npz"), "--out", str(tmp_path / "b"), "--speaker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --speaker: ") and "no speaker labels" in err and "\n" not in err
    bad = dict(v, test_speaker=np.where(v["test_speaker"] == "kim", "ivy", v["test_speaker"]))
    np.savez(tmp_path / "unseen.npz", **bad)
    assert train_main(base + ["--tokens", str(tmp_path / "unseen.npz"), "--out", str(tmp_path / "c"), "--speaker"]) == 2
    assert "the test split has speakers the prior does not know: ['ivy']" in capsys.readouterr().err


def _overfit():
    """16 noisy training grids, one step per epoch at a constant high learning rate: the test
    loss is lowest after a few epochs and then wanders above it (noise and memorisation)."""
    toks = TP.synthetic_tokens(n_train=16, n_test=32, K=16, grid=4, noise=0.3, seed=1)
    hyper = dict(HYPER, epochs=30, lr=3e-2, min_lr=3e-2, warmup=0)
    return toks, GPTConfig(d_model=32, n_layer=1, n_head=2), hyper


def test_early_stopping_keeps_the_best_epoch_and_resumes(tmp_path):
    toks, cfg, hyper = _overfit()
    full = TP.train(toks, tmp_path / "all", cfg, TP.TrainConfig(**hyper), verbose=False)
    bits = [h["test_bits"] for h in full["history"]]
    # where patience 3 must stop, read off the full run's curve: the first epoch that is 3 past
    # the lowest so far (the runs are the same computation up to there)
    stop = next(i for i in range(len(bits)) if i - int(np.argmin(bits[:i + 1])) >= 3)
    best = int(np.argmin(bits[:stop + 1]))
    assert bits[stop] > bits[best] + 0.05  # the set-up over-fits (else the test is void)

    es = TP.train(toks, tmp_path / "es", cfg, TP.TrainConfig(**hyper, patience=3), verbose=False)
    assert es["stopped_early"] and es["kept_epoch"] == best + 1  # epochs count from 1
    # the same computation up to the stop (same process, same arrays): exact by construction
    assert [h["test_bits"] for h in es["history"]] == bits[:stop + 1]
    assert es["test_bits"] == bits[best]  # the kept weights are the best epoch's, re-measured
    kept = load_prior(tmp_path / "es" / TP.CKPT_NAME)
    assert kept[2]["kept_epoch"] == best + 1
    best_file = checkpoint.load(tmp_path / "es" / TP.BEST_NAME)
    for k, v in kept[0].items():
        assert np.array_equal(np.asarray(v), best_file["params"][k]), k
    assert json.loads((tmp_path / "es" / "metrics.json").read_text())["kept_epoch"] == best + 1

    # interrupted before the stop and resumed: the same stop and the same weights
    def interrupt(step, loss):
        if step == stop:  # one step per epoch: before the last epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TP.train(toks, tmp_path / "cut", cfg, TP.TrainConfig(**hyper, patience=3), callback=interrupt, verbose=False)
    rest = TP.train(toks, tmp_path / "cut", resume=True, verbose=False)
    assert rest["kept_epoch"] == best + 1 and rest["test_bits"] == es["test_bits"]
    again = TP.train(toks, tmp_path / "cut", resume=True, verbose=False)  # a finished, stopped run trains no more
    assert again["step"] == rest["step"] and len(again["history"]) == len(rest["history"])


def test_patience_without_overfitting_keeps_the_last_epoch(tmp_path, toks):
    s = TP.train(toks, tmp_path, SMALL, TP.TrainConfig(**HYPER, patience=2), verbose=False)
    bits = [h["test_bits"] for h in s["history"]]
    assert bits == sorted(bits, reverse=True)  # 3 short epochs keep improving
    assert not s["stopped_early"] and s["kept_epoch"] == 3 and s["step"] == 18
