"""Nonsense numbers are refused before any work, on the command line (one 'error:' line naming
the option, exit 2) and in the library (ValueError naming the argument), by the same rules."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from minivq import checkpoint, generate, pipeline
from minivq import sampling as S
from minivq.bundle import generate_clips
from minivq import train_classifier as TC
from minivq import train_prior as TP
from minivq import train_vqvae as TV
from minivq.train import main as train_main
from minivq.transformer import GPTConfig

NOWHERE = "/nonexistent/minivq-test"  # every command fails fast here, so a case that is not refused
#                                       by its option still exits without training or sampling

# (option, bad value, words the one-line error must hold)
GENERATE = [
    ("--n", "0", "--n must be at least 1"), ("--n", "-2", "--n must be at least 1"),
    ("--n", "1.5", "--n must be a whole number"),
    ("--temperature", "nan", "--temperature must be positive and finite"),
    ("--temperature", "inf", "--temperature must be positive and finite"),
    ("--temperature", "0", "--temperature must be positive"),
    ("--temperature", "-1", "--temperature must be positive"),
    ("--guidance", "nan", "--guidance must be at least 0 and finite"),
    ("--guidance", "-5", "--guidance must be at least 0"),
    ("--guidance", "inf", "--guidance must be at least 0 and finite"),
    ("--top-k", "0", "--top-k must be at least 1"), ("--top-k", "-3", "--top-k must be at least 1"),
    ("--top-p", "0", "--top-p must be in (0, 1]"), ("--top-p", "1.5", "--top-p must be in (0, 1]"),
    ("--top-p", "nan", "--top-p must be in (0, 1]"),
    ("--gl-iters", "0", "--gl-iters must be at least 1"), ("--gl-iters", "-3", "--gl-iters must be at least 1"),
    ("--seed", "-1", "--seed must be at least 0"),
]
PRIOR = [
    ("--epochs", "0", "--epochs must be at least 1"), ("--epochs", "-1", "--epochs must be at least 1"),
    ("--batch-size", "0", "--batch-size must be at least 1"),
    ("--lr", "-1", "--lr must be positive"), ("--lr", "nan", "--lr must be positive and finite"),
    ("--lr", "inf", "--lr must be positive and finite"),
    ("--min-lr", "-1", "--min-lr must be at least 0"), ("--min-lr", "nan", "--min-lr must be at least 0 and finite"),
    ("--warmup", "-1", "--warmup must be at least 0"),
    ("--weight-decay", "-0.1", "--weight-decay must be at least 0"),
    ("--weight-decay", "nan", "--weight-decay must be at least 0 and finite"),
    ("--grad-clip", "0", "--grad-clip must be positive"), ("--grad-clip", "inf", "--grad-clip must be positive"),
    ("--seed", "-1", "--seed must be at least 0"),
    ("--max-train", "-5", "--max-train must be at least 1"), ("--max-train", "0", "--max-train must be at least 1"),
    ("--d-model", "0", "--d-model must be at least 1"), ("--n-layer", "0", "--n-layer must be at least 1"),
    ("--n-head", "0", "--n-head must be at least 1"),
    ("--dropout", "1", "--dropout must be in [0, 1)"), ("--dropout", "nan", "--dropout must be in [0, 1)"),
]
VQVAE = [
    ("--epochs", "0", "--epochs must be at least 1"), ("--batch", "0", "--batch must be at least 1"),
    ("--lr", "inf", "--lr must be positive and finite"), ("--lr", "nan", "--lr must be positive and finite"),
    ("--lr", "0", "--lr must be positive"),
    ("--restart-after", "-1", "--restart-after must be at least 0"),
    ("--restart-share", "nan", "--restart-share must be in [0, 1]"),
    ("--restart-share", "-0.5", "--restart-share must be in [0, 1]"),
    ("--restart-share", "2", "--restart-share must be in [0, 1]"),
    ("--K", "0", "--K must be at least 1"), ("--D", "0", "--D must be at least 1"),
    ("--hidden", "0", "--hidden must be at least 1"), ("--seed", "-1", "--seed must be at least 0"),
    ("--max-per-digit", "0", "--max-per-digit must be at least 1"),
    ("--max-per-digit", "-2", "--max-per-digit must be at least 1"),
    ("--log-every", "nan", "--log-every must be at least 0 and finite"),
    ("--log-every", "-1", "--log-every must be at least 0"),
]
CLASSIFIER = [
    ("--epochs", "0", "--epochs must be at least 1"), ("--batch", "0", "--batch must be at least 1"),
    ("--lr", "inf", "--lr must be positive and finite"), ("--lr", "-3", "--lr must be positive"),
    ("--seed", "-1", "--seed must be at least 0"),
    ("--max-per-digit", "0", "--max-per-digit must be at least 1"),
]
PIPELINE = [
    ("--seed", "-1", "--seed must be at least 0"),
    ("--n-per-digit", "0", "--n-per-digit must be at least 1"),
    ("--n-per-digit", "-1", "--n-per-digit must be at least 1"),
    ("--guidance", "nan", "--guidance must be at least 0 and finite"),
    ("--guidance", "-5", "--guidance must be at least 0"),
    ("--temperature", "0", "--temperature must be positive"),
    ("--temperature", "nan", "--temperature must be positive and finite"),
]


def _cases(command, table):
    return [pytest.param(command, opt, val, words, id=f"{command}{opt}={val}") for opt, val, words in table]


def _run(command, argv):
    if command == "generate":
        return generate.main(["--checkpoint", NOWHERE, "--out", NOWHERE] + argv)
    if command == "pipeline":
        return pipeline.main(["--data", NOWHERE, "--out", NOWHERE] + argv)
    if command == "prior":
        return train_main(["prior", "--tokens", NOWHERE + "/tokens.npz", "--out", NOWHERE] + argv)
    return train_main([command, "--data", NOWHERE, "--out", NOWHERE] + argv)


@pytest.mark.parametrize("command, opt, val, words",
                         _cases("generate", GENERATE) + _cases("prior", PRIOR) + _cases("vqvae", VQVAE)
                         + _cases("classifier", CLASSIFIER) + _cases("pipeline", PIPELINE))
def test_bad_number_is_one_line_naming_the_option(command, opt, val, words, capsys):
    assert _run(command, [opt, val]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert words in err and val in err, err


@pytest.mark.parametrize("command, argv", [
    ("generate", ["--cr", "4"]), ("prior", ["--order", "diagonal"]), ("vqvae", ["--cr", "8"]),
    ("pipeline", ["--bogus"]), ("classifier", ["--split", "random"]),
])
def test_other_argparse_errors_are_one_line_too(command, argv, capsys):
    assert _run(command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--help" in err, err


def test_boundary_values_are_accepted():
    from minivq import cli
    p = cli.ArgumentParser(prog="t")
    TP.add_arguments(p)
    a = p.parse_args(["--tokens", "t", "--out", "o", "--warmup", "0", "--min-lr", "0", "--weight-decay", "0",
                      "--seed", "0", "--dropout", "0", "--max-train", "1", "--lr", "1e-9"])
    assert (a.warmup, a.min_lr, a.weight_decay, a.seed, a.dropout, a.max_train, a.lr) == (0, 0.0, 0.0, 0, 0.0, 1, 1e-9)
    assert cli.prob("1") == 1.0 and cli.nonneg_float("0") == 0.0 and cli.unit_interval("1") == 1.0
    assert cli.fraction("0.999") == 0.999 and cli.positive_int("7") == 7
    assert cli.check_sampling(0.5, 1, 1.0, 0.0) == {"temperature": 0.5, "top_k": 1, "top_p": 1.0, "guidance": 0.0}


# ----------------------------------------------------------------------------- the library, called directly
_FAKE_BUNDLE = SimpleNamespace(prior=(None, None, None), vqvae=(None, None, None))  # checks run first


@pytest.mark.parametrize("kw, words", [
    (dict(temperature=math.nan), "temperature must be positive and finite"),
    (dict(temperature=math.inf), "temperature must be positive and finite"),
    (dict(guidance=math.nan), "guidance must be at least 0 and finite"),
    (dict(guidance=-5.0), "guidance must be at least 0"),
    (dict(top_k=0), "top_k must be at least 1"), (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"), (dict(gl_iters=0), "gl_iters must be at least 1"),
    (dict(gl_iters=-3), "gl_iters must be at least 1"), (dict(seed=-1), "seed must be at least 0"),
    (dict(digits=None, n=0), "n must be at least 1"),
])
def test_generate_function_refuses_nonsense(kw, words):
    kw = {"digits": [3], **kw}
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("]", r"\]")):
        generate_clips(_FAKE_BUNDLE, **kw)


@pytest.mark.parametrize("kw, words", [
    (dict(temperature=math.nan), "temperature"), (dict(guidance=math.nan), "guidance"),
    (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"), (dict(n=0), "n must be at least 1"),
])
def test_sample_refuses_nonsense(kw, words):
    kw = {"n": 2, **kw}
    with pytest.raises(ValueError, match=words):
        S.sample({}, GPTConfig(cond="none"), cond=None, **kw)


@pytest.fixture(scope="module")
def toks():
    return TP.synthetic_tokens(n_train=32, n_test=8, K=16, grid=4, seed=0)


@pytest.mark.parametrize("kw, words", [
    (dict(batch_size=0), "batch_size must be at least 1"), (dict(epochs=0), "epochs must be at least 1"),
    (dict(epochs=-1), "epochs must be at least 1"), (dict(lr=-1.0), "lr must be positive"),
    (dict(lr=math.nan), "lr must be positive and finite"), (dict(max_train=-5), "max_train must be at least 1"),
    (dict(grad_clip=0.0), "grad_clip must be positive"), (dict(warmup=-1), "warmup must be at least 0"),
    (dict(seed=-1), "seed must be at least 0"), (dict(epochs=1.5), "epochs must be a whole number"),
])
def test_prior_train_refuses_nonsense(kw, words, toks, tmp_path):
    with pytest.raises(ValueError, match=words):
        TP.train(toks, tmp_path, GPTConfig(d_model=8, n_layer=1, n_head=2), TP.TrainConfig(**kw), verbose=False)
    assert not (tmp_path / TP.CKPT_NAME).exists() and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("kw, words", [
    (dict(epochs=0), "epochs must be at least 1"), (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(lr=math.inf), "lr must be positive and finite"), (dict(grad_clip=-1.0), "grad_clip must be at least 0"),
    (dict(restart_share=1.5), "restart_share must be in"), (dict(seed=-2), "seed must be at least 0"),
])
def test_vqvae_train_config_refuses_nonsense(kw, words):
    with pytest.raises(ValueError, match=words):
        TV.TrainConfig(**kw)


@pytest.mark.parametrize("kw, words", [
    (dict(epochs=0), "epochs must be at least 1"), (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(lr=math.inf), "lr must be positive and finite"), (dict(grad_clip=0.0), "grad_clip must be positive"),
    (dict(weight_decay=math.nan), "weight_decay"), (dict(seed=-1), "seed must be at least 0"),
])
def test_classifier_train_refuses_nonsense(kw, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        TC.train({"train": {"x": np.zeros((2, 8, 8)), "digit": [0, 1]},
                  "test": {"x": np.zeros((1, 8, 8)), "digit": [0]}}, tmp_path, tcfg=TC.TrainConfig(**kw), verbose=False)
    assert not any(tmp_path.iterdir())


def _strict(text):
    def refuse(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_writer_never_writes_nan(tmp_path):
    checkpoint.write_json(tmp_path / "m.json", {"a": math.nan, "b": [1.0, math.inf, np.float32("nan")],
                                                "c": np.array([0.5, -np.inf]), "d": np.float64(2.5)})
    assert _strict((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None, None],
                                                          "c": [0.5, None], "d": 2.5}
