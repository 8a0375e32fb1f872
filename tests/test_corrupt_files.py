"""Damaged or mismatched files give one clear error naming the file: a byte flip inside a
checkpoint, a bad manifest.json, --resume on another kind of checkpoint, and a bundle file
that is not the one its manifest records (byte count and sha256)."""
import json
import shutil
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from minivq import checkpoint, generate
from minivq import classifier as C
from minivq import train_classifier as TC
from minivq import train_prior as TP
from minivq import train_vqvae as TV
from minivq import vqvae as V
from minivq.audio import FeatureConfig
from minivq.bundle import DEFAULT_CHECKPOINT, SAMPLING_DEFAULTS, export_bundle, load_bundle
from minivq.train import main as train_main

SHIPPED = DEFAULT_CHECKPOINT


def flip_member_byte(path, member_prefix="p/"):
    """Invert one byte in the middle of the stored data of the first member named
    ``member_prefix``... (np.savez stores members uncompressed, so this breaks its CRC only)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.startswith(member_prefix) and i.file_size > 200)
    b = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(b[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(b[info.header_offset + 28:info.header_offset + 30], "little")
    data_start = info.header_offset + 30 + name_len + extra_len
    b[data_start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(b))
    return info.filename


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- checkpoints
def test_byte_flip_inside_a_checkpoint_is_reported_as_damage(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", {"w": np.arange(400, dtype=np.float32)}, config={"model": {}})
    member = flip_member_byte(path)
    with pytest.raises(ValueError, match=f"checkpoint {path} is damaged .*{member}"):
        checkpoint.load(path)


def test_truncated_checkpoint_is_damaged(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", {"w": np.arange(400, dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"checkpoint {path} is damaged"):
        checkpoint.load(path)


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("shipped") / "bundle"
    shutil.copytree(SHIPPED, dst)
    return dst


def _bundle(tmp_path, bundle_copy):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_copy, dst)
    return dst


def test_generate_on_a_damaged_bundle_file(tmp_path, bundle_copy, capsys):
    b = _bundle(tmp_path, bundle_copy)
    flip_member_byte(b / "vqvae.npz")
    with pytest.raises(ValueError, match="vqvae.npz is damaged"):
        load_bundle(b)
    assert generate.main(["--checkpoint", str(b), "--out", str(tmp_path / "out")]) == 2
    assert "vqvae.npz is damaged" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", "must hold a JSON object"),
    ('{"format": 1,', "is not valid JSON"),
    ('{"format": 1, "features": {"sr": NaN}}', "is not valid JSON"),
    ("\xff\xfe", "is not valid JSON"),
])
def test_unreadable_manifest_names_the_file(tmp_path, bundle_copy, text, words, capsys):
    b = _bundle(tmp_path, bundle_copy)
    (b / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=words):
        load_bundle(b)
    assert generate.main(["--checkpoint", str(b), "--out", str(tmp_path / "out")]) == 2
    err = _one_line_error(capsys)
    assert str(b / "manifest.json") in err and words in err


@pytest.mark.parametrize("change, words", [
    (lambda m: m.pop("features"), "lacks 'features'"),
    (lambda m: m.update(features=[64, 64]), "lacks 'features'"),
    (lambda m: m.update(features={"sr": 8000, "colour": "blue"}), "'features' is not a valid feature record"),
    (lambda m: m.update(files=["vqvae.npz"]), "'files' must map file names"),
    (lambda m: m.update(sampling={"temperature": -1}), "bad sampling default: temperature must be positive"),
    (lambda m: m.update(sampling={"warmth": 1}), "'sampling' must be an object with some of"),
])
def test_manifest_contents_are_checked(tmp_path, bundle_copy, change, words):
    b = _bundle(tmp_path, bundle_copy)
    m = json.loads((b / "manifest.json").read_text())
    change(m)
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=words) as e:
        load_bundle(b)
    assert str(b / "manifest.json") in str(e.value)


# ----------------------------------------------------------------------------- bundle integrity
def test_shipped_manifest_records_size_and_sha256_of_every_file():
    m = json.loads((SHIPPED / "manifest.json").read_text())
    assert set(m["files"]) == {"vqvae.npz", "classifier.npz", "prior_class.npz", "prior_none.npz", "listener.npz"}
    for name, rec in m["files"].items():
        assert rec["bytes"] == (SHIPPED / name).stat().st_size
        assert rec["sha256"] == checkpoint.file_sha256(SHIPPED / name), name


def _other_run(path):
    """Rewrite a bundle file as another run of the same shape would: same arrays and byte count."""
    ck = checkpoint.load(path)
    cb = ck["params"]["codebook"]
    params = dict(ck["params"], codebook=(cb * 1.001).astype(cb.dtype))
    size = path.stat().st_size
    checkpoint.save(path, params, config=ck["config"], meta=ck["meta"], extra=ck["extra"])
    assert path.stat().st_size == size  # the byte count alone cannot tell


def test_a_file_from_another_run_does_not_belong(tmp_path, bundle_copy, capsys):
    b = _bundle(tmp_path, bundle_copy)
    _other_run(b / "vqvae.npz")
    with pytest.raises(ValueError, match="vqvae.npz does not match the sha256 .* does not belong to this bundle"):
        load_bundle(b)
    assert generate.main(["--checkpoint", str(b), "--out", str(tmp_path / "out")]) == 2
    assert "does not belong to this bundle" in _one_line_error(capsys)


def test_manifest_without_sha256_still_loads_and_checks_sizes(tmp_path, bundle_copy):
    b = _bundle(tmp_path, bundle_copy)
    m = json.loads((b / "manifest.json").read_text())
    for rec in m["files"].values():
        del rec["sha256"]
    (b / "manifest.json").write_text(json.dumps(m))
    bundle = load_bundle(b)  # an older manifest: byte counts only
    assert bundle.vqvae[1].K == 512
    m["files"]["classifier.npz"]["bytes"] += 1
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="classifier.npz has .* bytes, the manifest records .* does not belong"):
        load_bundle(b)


def test_unlisted_file_does_not_belong(tmp_path, bundle_copy):
    b = _bundle(tmp_path, bundle_copy)
    m = json.loads((b / "manifest.json").read_text())
    del m["files"]["prior_none.npz"]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="prior_none.npz is not listed in .* does not belong to this bundle"):
        load_bundle(b)


def test_exported_manifest_records_sha256(tmp_path, bundle_copy):
    """export_bundle on a pipeline folder laid out from the shipped files writes byte counts and
    sha256s that load_bundle accepts."""
    out = tmp_path / "work"
    for name, sub, metrics in (("vqvae.npz", "vqvae_cr16", {}), ("classifier.npz", "classifier", {}),
                               ("prior_class.npz", "prior_class", {}), ("prior_none.npz", "prior_none", {})):
        (out / sub).mkdir(parents=True)
        target = TP.CKPT_NAME if sub.startswith("prior") else name
        shutil.copy(bundle_copy / name, out / sub / target)
        (out / sub / "metrics.json").write_text(json.dumps(metrics))
    res = {"settings": {"sampling": SAMPLING_DEFAULTS}, "reconstruction": {"accuracy": 0.9}}
    export_bundle(out, tmp_path / "export", 16, ["class", "none"], FeatureConfig(), res, tmp_path)
    m = json.loads((tmp_path / "export" / "manifest.json").read_text())
    for name, rec in m["files"].items():
        assert rec["sha256"] == checkpoint.file_sha256(tmp_path / "export" / name)
    load_bundle(tmp_path / "export")


# ----------------------------------------------------------------------------- --resume on the wrong file
def _vqvae_checkpoint(path):
    checkpoint.save(path, {"codebook": np.zeros((4, 2), np.float32)}, config={"vqvae": {"K": 4}, "train": {}},
                    meta={"step": 1}, extra={"norm_mean": 0.0, "norm_std": 1.0})


def _classifier_checkpoint(path):
    cfg = C.ClassifierConfig(n_mels=16, n_frames=16, channels=(2, 2, 2, 2), embed_dim=4)
    C.save_classifier(path, C.init_params(cfg, 0), cfg, {"mean": np.zeros((16, 1)), "std": np.ones((16, 1))},
                      meta={"step": 1})


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens.npz"
    np.savez(path, **TP.synthetic_tokens(n_train=32, n_test=8, K=16, grid=4, seed=0))
    return path


@pytest.mark.parametrize("make, words", [
    (_vqvae_checkpoint, "holds a VQ-VAE checkpoint, not a transformer prior checkpoint"),
    (_classifier_checkpoint, "holds a classifier checkpoint, not a transformer prior checkpoint"),
    (lambda p: shutil.copy(SHIPPED / "prior_class.npz", p),
     "holds a transformer prior model without its training state"),
])
def test_prior_resume_on_another_checkpoint(tmp_path, tokens_file, make, words, capsys):
    make(tmp_path / TP.CKPT_NAME)
    argv = ["prior", "--tokens", str(tokens_file), "--out", str(tmp_path), "--resume"]
    assert train_main(argv) == 2
    err = _one_line_error(capsys)
    assert str(tmp_path / TP.CKPT_NAME) in err and words in err


def test_prior_resume_on_damaged_checkpoint(tmp_path, tokens_file, capsys):
    TP.train(str(tokens_file), tmp_path, TP.GPTConfig(d_model=8, n_layer=1, n_head=2),
             TP.TrainConfig(epochs=1, batch_size=16, warmup=1), verbose=False)
    assert checkpoint.load(tmp_path / TP.CKPT_NAME)["meta"]["kind"] == "prior"
    flip_member_byte(tmp_path / TP.CKPT_NAME, "o/")
    capsys.readouterr()  # the first run's progress lines
    before = (tmp_path / TP.CKPT_NAME).read_bytes()
    argv = ["prior", "--tokens", str(tokens_file), "--out", str(tmp_path), "--resume"]
    assert train_main(argv) == 2
    assert f"checkpoint {tmp_path / TP.CKPT_NAME} is damaged" in _one_line_error(capsys)
    assert (tmp_path / TP.CKPT_NAME).read_bytes() == before  # nothing overwritten


def _vq_features(n=8, size=16):
    g = np.random.default_rng(0)
    split = SimpleNamespace(x=g.normal(-6, 1, (n, size, size)).astype(np.float32), digit=np.arange(n) % 10,
                            speaker=np.array(["s"] * n))
    return SimpleNamespace(train=split, test=split, cfg=FeatureConfig())


VQ_TINY = V.VQVAEConfig(in_size=16, ch1=4, hidden=8, res_hidden=4, n_res=1, D=4, K=16)


def _truncated_vqvae_checkpoint(path):
    _vqvae_checkpoint(path)
    path.write_bytes(path.read_bytes()[:-50])


@pytest.mark.parametrize("make, words", [
    (_classifier_checkpoint, "holds a classifier checkpoint, not a VQ-VAE checkpoint"),
    (_truncated_vqvae_checkpoint, "is damaged"),
])
def test_vqvae_resume_on_another_checkpoint(tmp_path, make, words):
    make(tmp_path / "last.npz")
    before = (tmp_path / "last.npz").read_bytes()
    with pytest.raises(ValueError, match=words):
        TV.train(VQ_TINY, _vq_features(), tmp_path, TV.TrainConfig(epochs=1, batch_size=4, log_every=1e9),
                 resume=True, verbose=False)
    assert (tmp_path / "last.npz").read_bytes() == before


def test_vqvae_resume_on_a_finished_model(tmp_path):
    """A final vqvae.npz copied to last.npz has no step or optimiser state to resume from."""
    checkpoint.save(tmp_path / "last.npz", V.init_params(VQ_TINY), config={"vqvae": VQ_TINY.to_dict()},
                    meta={"history": [], "train_seconds": 1.0}, extra={"norm_mean": 0.0, "norm_std": 1.0})
    with pytest.raises(ValueError, match="holds a VQ-VAE model without its training state .*step"):
        TV.train(VQ_TINY, _vq_features(), tmp_path, TV.TrainConfig(epochs=1, batch_size=4, log_every=1e9),
                 resume=True, verbose=False)


def test_vqvae_last_records_its_kind(tmp_path):
    TV.train(VQ_TINY, _vq_features(), tmp_path, TV.TrainConfig(epochs=1, batch_size=4, warmup=1, log_every=1e9),
             finish=False, verbose=False)
    ck = checkpoint.load(tmp_path / "last.npz", kind="vqvae")
    assert ck["meta"]["kind"] == "vqvae"


def _clf_features(n=20, size=16):
    g = np.random.default_rng(0)
    split = SimpleNamespace(x=g.normal(-6, 1, (n, size, size)).astype(np.float32), digit=np.arange(n) % 10)
    return SimpleNamespace(train=split, test=split)


CLF_TINY = C.ClassifierConfig(n_mels=16, n_frames=16, channels=(2, 2, 2, 2), embed_dim=4)


def test_classifier_resume_on_a_vqvae_checkpoint(tmp_path):
    _vqvae_checkpoint(tmp_path / "last.npz")
    with pytest.raises(ValueError, match="holds a VQ-VAE checkpoint, not a classifier checkpoint"):
        TC.train(_clf_features(), tmp_path, CLF_TINY, TC.TrainConfig(epochs=1, batch_size=10), resume=True, verbose=False)


def test_classifier_resume_on_a_finished_model(tmp_path):
    TC.train(_clf_features(), tmp_path, CLF_TINY, TC.TrainConfig(epochs=1, batch_size=10), verbose=False)
    shutil.copy(tmp_path / "classifier.npz", tmp_path / "last.npz")
    with pytest.raises(ValueError, match="holds a classifier model without its training state"):
        TC.train(_clf_features(), tmp_path, CLF_TINY, TC.TrainConfig(epochs=1, batch_size=10), resume=True, verbose=False)


def test_classifier_resume_on_damaged_checkpoint(tmp_path):
    TC.train(_clf_features(), tmp_path, CLF_TINY, TC.TrainConfig(epochs=1, batch_size=10), verbose=False)
    assert checkpoint.load(tmp_path / "last.npz")["meta"]["kind"] == "classifier"
    flip_member_byte(tmp_path / "last.npz", "o/")
    with pytest.raises(ValueError, match="last.npz is damaged"):
        TC.train(_clf_features(), tmp_path, CLF_TINY, TC.TrainConfig(epochs=1, batch_size=10), resume=True, verbose=False)
