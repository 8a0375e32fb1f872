"""Digit classifier: float64 gradient check of the whole network, shapes and errors,
checkpoint round trip, exact resume, NaN guard, and short trainings that must learn."""
from types import SimpleNamespace

import numpy as np
import pytest

from minivq import checkpoint
from minivq import classifier as C
from minivq import train_classifier as TC
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import numerical_gradient, rel_error
from minivq.progress import NonFiniteLoss

TINY = C.ClassifierConfig(n_mels=16, n_frames=13, channels=(2, 3, 3, 4), embed_dim=5)


def _synthetic(n_per_digit, seed, M=16, T=16):
    """Raw 'log-mels' where digit d is a loud stripe at band 1 + d (plus noise): learnable."""
    g = np.random.default_rng(seed)
    digit = np.repeat(np.arange(10), n_per_digit)  # (N,)
    x = g.normal(-6.0, 1.0, size=(len(digit), M, T)).astype(np.float32)  # (N, M, T)
    x[np.arange(len(digit)), 1 + digit, 3:T - 3] += 6.0
    return SimpleNamespace(x=x, digit=digit)


def _features(n_train, n_test, M=16, T=16):
    return SimpleNamespace(train=_synthetic(n_train, 0, M, T), test=_synthetic(n_test, 1, M, T))


SMALL = C.ClassifierConfig(n_mels=16, n_frames=16, channels=(4, 8, 8, 8), embed_dim=16)


def test_whole_classifier_gradient_float64(backend):
    p = C.init_params(TINY, seed=1, dtype="float64")
    g = np.random.default_rng(0)
    for k in p:  # non-zero biases so every relu sees both signs
        if k.endswith("_b"):
            p[k] = asarray(g.standard_normal(p[k].shape) * 0.1)
    x = asarray(g.standard_normal((3, 1, 16, 13)))  # odd width, batch > 1
    y = asarray(np.array([1, 7, 3]))
    loss, logits, cache = C.forward(p, x, y)
    assert logits.shape == (3, 10)
    grads = C.backward(cache)
    assert set(grads) == set(p)
    for k in p:
        num = numerical_gradient(lambda: float(C.forward(p, x, y)[0]), p[k])
        err = rel_error(grads[k], num)
        assert err < 1e-6, f"{k}: rel_error {err:.2e}"


def test_default_shapes_and_embedding_size(backend):
    cfg = C.ClassifierConfig()
    p = C.init_params(cfg, seed=0)
    x = asarray(np.random.default_rng(0).standard_normal((5, 1, 64, 64)).astype(np.float32))
    e = C.embed(p, x, batch=2)  # three chunks
    probs = C.predict(p, x, batch=2)
    assert e.shape == (5, cfg.embed_dim) and cfg.embed_dim <= 32
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(to_numpy(probs).sum(axis=1), 1.0, rtol=1e-5)
    # batching does not change the answer
    np.testing.assert_allclose(to_numpy(C.predict(p, x, batch=256)), to_numpy(probs), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="embed_dim"):
        C.ClassifierConfig(embed_dim=64)


@pytest.mark.parametrize("shape", [(2, 64, 64, 1, 1), (2, 2, 64, 64), (2, 1, 32, 64), (0, 1, 64, 64)])
def test_bad_input_shapes_raise(shape):
    p = C.init_params(C.ClassifierConfig(), seed=0)
    with pytest.raises(ValueError, match="classifier input"):
        C.forward(p, np.zeros(shape, np.float32))
    norm = {"mean": np.zeros((64, 1), np.float32), "std": np.ones((64, 1), np.float32)}
    with pytest.raises(ValueError):
        C.classify(p, norm, np.zeros((2, 48, 64), np.float32))  # 48 mel bands, stats have 64


def test_training_learns_and_checkpoint_round_trip(tmp_path):
    res = TC.train(_features(12, 6), tmp_path, cfg=SMALL, verbose=False,  # no augmentation: masks 8 bands
                   tcfg=TC.TrainConfig(epochs=15, batch_size=20, lr=1e-2, augment=False))  # wide would hide the 1-band cue
    m = res["metrics"]
    assert m["test_accuracy"] >= 0.8, m["history"]  # chance is 0.1
    params, cfg, norm = C.load_classifier(tmp_path / "classifier.npz")
    assert cfg == SMALL
    x = _synthetic(3, 5).x
    np.testing.assert_array_equal(to_numpy(C.classify(params, norm, x)),
                                  to_numpy(C.classify(res["params"], res["norm"], x)))
    ck = checkpoint.load(tmp_path / "classifier.npz")
    assert abs(ck["meta"]["test_accuracy"] - m["test_accuracy"]) < 1e-12
    saved = checkpoint.load(tmp_path / "classifier.npz")  # no optimiser state in the final model
    assert saved["opt_state"] == {}
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "confusion.png").stat().st_size > 1000


def test_augment_is_seeded_and_keeps_shape():
    x = _synthetic(2, 0, M=64, T=64).x  # (20, 64, 64)
    norm = {"mean": np.full((64, 1), -6.0, np.float32), "std": np.full((64, 1), 2.0, np.float32)}
    a = to_numpy(TC.augment(x, np.random.default_rng(3), norm))
    b = to_numpy(TC.augment(x, np.random.default_rng(3), norm))
    c = to_numpy(TC.augment(x, np.random.default_rng(4), norm))
    plain = to_numpy(C.standardise(x, norm))
    assert a.shape == (20, 1, 64, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.1 and np.abs(a - plain).mean() > 0.1
    assert np.abs(a.mean() - plain.mean()) < 0.5  # perturbs, does not wreck the scale


def test_resume_after_interrupt_is_exact(tmp_path, monkeypatch):
    feats = _features(4, 2)
    kw = dict(cfg=SMALL, tcfg=TC.TrainConfig(epochs=2, batch_size=16, lr=5e-3), verbose=False)  # 3 steps per epoch
    ref = TC.train(feats, tmp_path / "ref", **kw)["params"]
    real_check, calls = TC.check_finite, []

    def interrupt_mid_epoch(loss, step):
        calls.append(step)
        if step == 4:  # the second step of epoch 2
            raise KeyboardInterrupt
        return real_check(loss, step)

    monkeypatch.setattr(TC, "check_finite", interrupt_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        TC.train(feats, tmp_path / "run", **kw)
    assert checkpoint.load(tmp_path / "run" / "last.npz")["meta"]["step"] == 4
    monkeypatch.setattr(TC, "check_finite", real_check)
    got = TC.train(feats, tmp_path / "run", resume=True, **kw)["params"]
    for k in ref:
        np.testing.assert_array_equal(to_numpy(got[k]), to_numpy(ref[k]), err_msg=k)


def test_nan_loss_stops_training(tmp_path):
    feats = _features(2, 1)
    feats.train.x[0, 0, 0] = np.nan
    with pytest.raises(NonFiniteLoss):
        TC.train(feats, tmp_path, cfg=SMALL, tcfg=TC.TrainConfig(epochs=1, batch_size=8), verbose=False)
    assert not (tmp_path / "classifier.npz").exists()


def test_cli_reports_missing_data(tmp_path, capsys):
    from minivq.train import main
    rc = main(["classifier", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_short_fsdd_training_beats_chance(fsdd_path, tmp_path):
    from minivq.data import load_features
    feats = load_features(fsdd_path, split="official", max_per_digit=30)
    res = TC.train(feats, tmp_path, tcfg=TC.TrainConfig(epochs=15, batch_size=32, lr=5e-3), verbose=False)
    acc = res["metrics"]["test_accuracy"]
    assert len(feats.train.x) == 300
    assert acc >= 0.5, res["metrics"]["history"]  # chance is 0.1


def _voices(n_per_speaker, seed, names=("ola", "ben", "ida"), M=16, T=16):
    """Raw 'log-mels' where speaker k is a loud stripe at band 2 + 4k (plus noise) and the digit is
    random: only the speaker is learnable."""
    g = np.random.default_rng(seed)
    k = np.repeat(np.arange(len(names)), n_per_speaker)  # (N,)
    x = g.normal(-6.0, 1.0, size=(len(k), M, T)).astype(np.float32)  # (N, M, T)
    x[np.arange(len(k)), 2 + 4 * k, 3:T - 3] += 6.0
    return SimpleNamespace(x=x, digit=g.integers(0, 10, len(k)), speaker=np.array(names)[k])


def test_speaker_classifier_learns_names_and_round_trips(tmp_path):
    """--target speaker: the classes are the sorted training speakers, stored in the checkpoint
    (ClassifierConfig.labels); evaluate.judge_speaker reads the names back."""
    from minivq import evaluate
    feats = SimpleNamespace(train=_voices(12, 0), test=_voices(6, 1))
    res = TC.train(feats, tmp_path, verbose=False,
                   tcfg=TC.TrainConfig(epochs=15, batch_size=12, lr=1e-2, augment=False, target="speaker"))
    m = res["metrics"]
    assert m["test_accuracy"] >= 0.8 and m["labels"] == ["ben", "ida", "ola"], m["history"]  # chance is 1/3
    clf = C.load_classifier(tmp_path / "classifier.npz")
    assert clf[1].labels == ("ben", "ida", "ola") and clf[1].n_classes == 3
    v = evaluate.judge_speaker(clf, feats.test.x, want=feats.test.speaker)
    assert abs(v["accuracy"] - m["test_accuracy"]) < 1e-12 and set(v["names"]) <= {"ben", "ida", "ola"}
    with pytest.raises(ValueError, match=r"does not know \['zed'\]; it knows ben, ida, ola"):
        evaluate.judge_speaker(clf, feats.test.x[:1], want=["zed"])
    digit_cfg = C.ClassifierConfig()
    assert "labels" not in digit_cfg.to_dict()  # the digit classifier's record is as it was
    with pytest.raises(ValueError, match="speaker names"):
        evaluate.judge_speaker((None, digit_cfg, None), feats.test.x)
    unseen = SimpleNamespace(train=feats.train, test=_voices(2, 1, names=("ola", "ben", "max")))
    with pytest.raises(ValueError, match=r"speakers the training split lacks \(\['max'\]\)"):
        TC.train(unseen, tmp_path / "u", verbose=False, tcfg=TC.TrainConfig(epochs=1, target="speaker"))
    with pytest.raises(ValueError, match="target must be one of digit, speaker"):
        TC.TrainConfig(target="gender")


def test_augment_without_warp_changes_only_the_warp():
    """warp=0 (the speaker target) draws the same random numbers: a batch whose bands are all equal
    is unchanged by a mel-axis warp, so it must augment identically with and without it."""
    x = np.repeat(np.random.default_rng(0).normal(-5, 1, (3, 1, 16)), 16, axis=1).astype(np.float32)  # (3, 16, 16)
    norm = {"mean": np.zeros((16, 1), np.float32), "std": np.ones((16, 1), np.float32)}
    a = to_numpy(TC.augment(x, np.random.default_rng(3), norm))
    b = to_numpy(TC.augment(x, np.random.default_rng(3), norm, warp=0.0))
    assert np.abs(a - b).max() < 1e-5  # interpolating equal bands: round-off only
    y = _synthetic(1, 0).x[:3]
    c, d = (to_numpy(TC.augment(y, np.random.default_rng(3), norm, warp=w)) for w in (0.1, 0.0))
    assert np.abs(c - d).max() > 0.1  # on real structure the warp does move the bands
