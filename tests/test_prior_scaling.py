"""benchmarks/prior_scaling.py: configurations parse, a row is what the library measures for
the same prior, rows are kept, and finished priors are not retrained."""
import json
from dataclasses import replace

import numpy as np
import pytest

from minivq import evaluate
from minivq.bundle import DEFAULT_CHECKPOINT, generate_clips, load_bundle
from minivq.transformer import PRIOR_CKPT, load_prior

from fakes import load_benchmark


def load_scaling():
    return load_benchmark("prior_scaling")


def small_tokens(path, n_train=64, n_test=20):
    """The first grids of the shipped tokens.npz: enough for a 2-step prior and a quick judgement."""
    z = np.load(DEFAULT_CHECKPOINT / "tokens.npz")
    np.savez(path, train_tokens=z["train_tokens"][:n_train], train_digit=z["train_digit"][:n_train],
             test_tokens=z["test_tokens"][:n_test], test_digit=z["test_digit"][:n_test], K=z["K"])
    return path


@pytest.mark.parametrize("text, want", [
    ("d128-L4-e12", dict(d_model=128, n_layer=4, epochs=12, dropout=0.0)),
    ("d64-L2-e3-p0.1", dict(d_model=64, n_layer=2, epochs=3, dropout=0.1, class_norm=False)),
    ("d128-L4-e12-norm", dict(d_model=128, n_layer=4, epochs=12, dropout=0.0, class_norm=True)),
    ("d64-L2-e3-p0.1-norm", dict(d_model=64, n_layer=2, epochs=3, dropout=0.1, class_norm=True)),
])
def test_parse_config(text, want):
    c = load_scaling().parse_config(text)
    assert {k: c[k] for k in want} == want and c["name"] == text


@pytest.mark.parametrize("text", ["d128-L4", "d130-L4-e12", "d128-L0-e12", "d128-L4-e12-p1.0", "128-4-12",
                                  "d128-L4-e12-norm-p0.1"])
def test_parse_config_refuses(text):
    with pytest.raises(ValueError):
        load_scaling().parse_config(text)


def test_train_flops_counts_weights_and_attention():
    # 6 N D for the weights plus 12 L T C D for the attention products, D tokens seen
    assert load_scaling().train_flops(1000, 2, 8, 16, 10) == 6 * 1000 * 10 + 12 * 2 * 16 * 8 * 10


def test_rows_match_the_library_and_resume(tmp_path, capsys):
    sc = load_scaling()
    tokens = small_tokens(tmp_path / "tokens.npz")
    work = tmp_path / "work"
    args = ["--work", str(work), "--tokens", str(tokens), "--per-digit", "1", "--seed", "2", "--configs", "d16-L1-e1"]
    assert sc.main(args) == 0
    (row,) = json.loads((work / "scaling.json").read_text())
    metrics = json.loads((work / "d16-L1-e1" / "metrics.json").read_text())
    assert row["test_bits"] == metrics["test_bits"] and row["params"] == metrics["n_params"]
    # The row's figures are the library's on the same prior, grids and seed.
    prior = load_prior(work / "d16-L1-e1" / PRIOR_CKPT)
    z = np.load(tokens)
    pac = evaluate.prior_as_classifier(prior, z["test_tokens"], z["test_digit"])
    assert row["as_classifier"] == pac["accuracy"] and row["mi_bits_lower_bound"] == pac["mi_bits_lower_bound"]
    bundle = load_bundle(DEFAULT_CHECKPOINT)
    res = generate_clips(replace(bundle, prior=prior, guide=None), np.arange(10), seed=2, temperature=1.0)
    assert row["heard"] == pytest.approx(float(np.mean(res["pred"] == np.arange(10))))
    assert row["heard_per_digit"] == [float(p == d) for d, p in enumerate(res["pred"])]
    assert (work / "prior_scaling.png").stat().st_size > 0 and "| d 16, 1 layers |" in (work / "scaling.md").read_text()
    # A re-run measures nothing again and does not retrain the prior.
    stamp = (work / "d16-L1-e1" / PRIOR_CKPT).stat().st_mtime_ns
    capsys.readouterr()
    assert sc.main(args) == 0
    assert "d16-L1-e1: already measured" in capsys.readouterr().out
    assert json.loads((work / "scaling.json").read_text()) == [row]
    assert (work / "d16-L1-e1" / PRIOR_CKPT).stat().st_mtime_ns == stamp


def test_bad_config_is_one_line(tmp_path, capsys):
    assert load_scaling().main(["--work", str(tmp_path), "--configs", "big"]) == 2
    assert "dD-LN-eE" in capsys.readouterr().err
