"""Output folders: a run never overwrites another run's files without --force, two runs never
write one folder at once, a bad --out fails before any work, and killed or interrupted runs
leave nothing half-written behind (minivq/outdir.py)."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from minivq import checkpoint, generate, pipeline
from minivq import train_prior as TP
from minivq import train_vqvae as TV
from minivq import vqvae as V
from minivq.transformer import load_prior
from minivq.train import main as train_main

from fakes import tiny_features

VQ_ARGS = ["--epochs", "1", "--batch", "8", "--K", "16", "--D", "4", "--hidden", "8", "--log-every", "1e9"]
PRIOR_ARGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--epochs", "1", "--batch-size", "32"]


@pytest.fixture
def fake_data(monkeypatch):
    """The trainers' command lines read these features instead of FSDD."""
    import minivq.data
    monkeypatch.setattr(minivq.data, "load_features", lambda *a, **k: tiny_features(16, 4, size=64))


def _vq_cli(out, *extra):
    return train_main(["vqvae", "--data", "unused", "--out", str(out), *VQ_ARGS, *extra])


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokens.npz"
    np.savez(path, **TP.synthetic_tokens(n_train=64, n_test=16, K=16, grid=4, seed=0))
    return path


def _prior_cli(tokens, out, *extra):
    return train_main(["prior", "--tokens", str(tokens), "--out", str(out), *PRIOR_ARGS, *extra])


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """One finished `train vqvae --cr 16` folder (tiny model, fake features); tests copy it."""
    out = tmp_path_factory.mktemp("vq") / "run"
    mp = pytest.MonkeyPatch()
    import minivq.data
    mp.setattr(minivq.data, "load_features", lambda *a, **k: tiny_features(16, 4, size=64))
    try:
        assert _vq_cli(out, "--cr", "16") == 0
    finally:
        mp.undo()
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".npz", ".json")}


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


# ----------------------------------------------------------------------------- A: another run's files
def test_vqvae_with_other_cr_does_not_overwrite_a_cr16_run(vq_run, tmp_path, fake_data, capsys):
    out = _copy(vq_run, tmp_path / "run")
    before = _snapshot(out)
    assert {"vqvae.npz", "last.npz", "tokens.npz", "metrics.json"} <= set(before)
    capsys.readouterr()
    assert _vq_cli(out, "--cr", "4") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--cr 16 there, 4 now" in line and "--force" in line
    assert _snapshot(out) == before  # vqvae.npz, last.npz, tokens.npz untouched


def test_other_kinds_do_not_overwrite_a_vqvae_folder(vq_run, tmp_path, fake_data, capsys):
    out = _copy(vq_run, tmp_path / "run")
    before = _snapshot(out)
    capsys.readouterr()
    # the prior learning this folder's tokens would write its metrics.json over the VQ-VAE's
    assert _prior_cli(out / "tokens.npz", out, "--batch-size", "8") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "vqvae run" in line and "metrics.json" in line
    assert train_main(["classifier", "--data", "unused", "--out", str(out), "--epochs", "1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "vqvae run" in line and "last.npz" in line
    assert _snapshot(out) == before
    assert not (out / "prior.npz").exists() and not (out / "classifier.npz").exists()


def test_prior_same_settings_again_other_settings_refused_resume_and_force(tokens_file, tmp_path, capsys):
    out = tmp_path / "prior"
    assert _prior_cli(tokens_file, out) == 0
    assert _prior_cli(tokens_file, out) == 0  # the same command again goes on as before
    before = _snapshot(out)
    capsys.readouterr()
    assert _prior_cli(tokens_file, out, "--d-model", "32") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--d-model 16 there, 32 now" in line
    assert _snapshot(out)["prior.npz"] == before["prior.npz"]
    # --resume continues whatever the other options say (documented: other settings ignored)
    assert _prior_cli(tokens_file, out, "--d-model", "32", "--resume") == 0
    assert json.loads((out / "run.json").read_text())["prior"]["settings"]["d_model"] == 16
    assert _prior_cli(tokens_file, out, "--d-model", "32", "--force") == 0
    assert load_prior(out / TP.CKPT_NAME)[1].d_model == 32
    assert _prior_cli(tokens_file, out, "--d-model", "32") == 0  # now the recorded settings


def test_files_without_a_record_are_not_overwritten(tokens_file, tmp_path, capsys):
    """A folder written before run.json existed (or by hand): only --resume or --force go on."""
    out = tmp_path / "old"
    TP.train(tokens_file, out, TP.GPTConfig(d_model=16, n_layer=1, n_head=2),
             TP.TrainConfig(epochs=1, batch_size=32, log_every=1e9), verbose=False)
    before = _snapshot(out)
    capsys.readouterr()
    assert _prior_cli(tokens_file, out) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no run.json record" in line and "prior.npz" in line and "--resume" in line
    assert _snapshot(out) == before
    assert _prior_cli(tokens_file, out, "--resume") == 0


# ----------------------------------------------------------------------------- B: one run per folder
HOLDER = ("import sys, time\n"
          "try:\n"
          "    from minivq import outdir\n"
          "    held = outdir.locked(sys.argv[1])\n"
          "    held.__enter__()\n"
          "except ImportError:\n"  # a minivq without output locks: the other run just runs
          "    pass\n"
          "print('held', flush=True)\n"
          "time.sleep(120)\n")


@pytest.fixture
def held(tmp_path):
    """A folder locked by another process (what a run writing it looks like); SIGKILLed at the end."""
    folder = tmp_path / "busy"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield folder, proc
    finally:
        proc.kill()
        proc.wait()


def _cli_calls(tokens):
    return {
        "vqvae": lambda out: train_main(["vqvae", "--data", "/nonexistent", "--out", str(out)]),
        "classifier": lambda out: train_main(["classifier", "--data", "/nonexistent", "--out", str(out)]),
        "prior": lambda out: _prior_cli(tokens, out),
        "pipeline": lambda out: pipeline.main(["--data", "/nonexistent", "--out", str(out)]),
        "generate": lambda out: generate.main(["--checkpoint", "/nonexistent", "--out", str(out)]),
    }


@pytest.mark.parametrize("cli", ["vqvae", "classifier", "prior", "pipeline", "generate"])
def test_second_run_into_a_locked_folder_is_refused(cli, held, tokens_file, capsys):
    folder, proc = held
    assert _cli_calls(tokens_file)[cli](folder) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(folder) in line and f"PID {proc.pid}" in line and "in use by another run" in line
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written


def test_lock_of_a_killed_run_is_taken_over(held, tokens_file, capsys):
    folder, proc = held
    proc.send_signal(signal.SIGKILL)  # killed: its .lock stays behind, naming a dead PID
    proc.wait()
    assert str(proc.pid) in (folder / ".lock").read_text()
    assert _prior_cli(tokens_file, folder) == 0
    err = capsys.readouterr().err
    assert f"was left by PID {proc.pid}" in err and "taking it over" in err
    assert not (folder / ".lock").exists()  # released at the end of the run
    assert (folder / "prior.npz").is_file()


def test_nested_folders_lock_separately_and_release(tmp_path):
    """The pipeline holds OUT while a trainer holds OUT/<stage>; both are released afterwards."""
    top, stage = tmp_path / "pipe", tmp_path / "pipe" / "vqvae_cr4"
    seen = []

    from minivq import outdir

    def look(step, parts):
        seen.append(((top / ".lock").is_file(), (stage / ".lock").is_file()))
        with outdir.locked(stage):  # the same thread holding a folder again only counts up
            pass
        assert (stage / ".lock").is_file()

    @outdir.scoped
    def run():
        outdir.hold(top)
        cfg = V.VQVAEConfig(cr=4, in_size=16, ch1=4, hidden=8, res_hidden=4, n_res=1, D=4, K=16)
        TV.train(cfg, tiny_features(8, 2, size=16), stage, TV.TrainConfig(epochs=1, batch_size=8, log_every=1e9),
                 finish=False, callback=look, verbose=False)
        assert (top / ".lock").is_file() and not (stage / ".lock").exists()

    run()
    assert seen == [(True, True)]
    assert not (top / ".lock").exists()


# ----------------------------------------------------------------------------- C: bad --out
def _bad_out(kind, tmp_path, monkeypatch):
    f = tmp_path / "a_file"
    f.write_text("not a folder")
    if kind == "file":
        return f, "is a file, not a folder"
    if kind == "under_file":
        return f / "out", f"{f} is a file, not a folder"
    if kind == "proc":  # fails for root too: nothing can be created under /proc
        return Path("/proc/minivq-outdir-test/out"), "cannot be created"
    # read-only: root may write into a chmod 0o500 folder, so refuse file creation instead
    out = tmp_path / "ro"
    out.mkdir()
    real = tempfile.mkstemp

    def no_write(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve() == out.resolve():
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*a, dir=dir, **k)
    monkeypatch.setattr(tempfile, "mkstemp", no_write)
    return out, "is not writable (Read-only file system)"


@pytest.mark.parametrize("kind", ["file", "under_file", "proc", "read_only"])
@pytest.mark.parametrize("cli", ["vqvae", "classifier", "prior", "pipeline", "generate"])
def test_bad_out_fails_at_once_with_one_line(cli, kind, tmp_path, monkeypatch, tokens_file, capsys):
    out, says = _bad_out(kind, tmp_path, monkeypatch)

    def no_work(*a, **k):
        raise AssertionError("work started before --out was checked")
    import minivq.data
    monkeypatch.setattr(minivq.data, "load_features", no_work)
    monkeypatch.setattr(TP, "load_tokens", no_work)
    monkeypatch.setattr(generate, "load_bundle", no_work)
    calls = _cli_calls(tokens_file)
    calls.update(vqvae=lambda o: train_main(["vqvae", "--data", "unused", "--out", str(o)]),
                 classifier=lambda o: train_main(["classifier", "--data", "unused", "--out", str(o)]),
                 pipeline=lambda o: pipeline.main(["--data", "unused", "--out", str(o)]),
                 generate=lambda o: generate.main(["--out", str(o)]))
    assert calls[cli](out) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and says in line, line


# ----------------------------------------------------------------------------- D: killed and interrupted runs
def test_temporary_files_of_a_killed_run_are_removed(tokens_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    ours = ["prior.npzk3_9qzx1.tmp", "metrics.json.tmp", "run.json.tmp", "tokens.npzabcdefgh.tmp"]
    theirs = ["notes.tmp", "prior.npz.tmp", "my.tmp.txt"]
    for name in ours + theirs:
        (out / name).write_bytes(b"half")
    assert _prior_cli(tokens_file, out) == 0
    left = {p.name for p in out.iterdir()}
    assert not left & set(ours) and set(theirs) <= left
    assert "removed 4 temporary file(s)" in capsys.readouterr().err


def test_ctrl_c_while_writing_tokens_says_what_is_saved(tmp_path, fake_data, monkeypatch, capsys):
    out = tmp_path / "run"
    real_savez = np.savez

    def interrupted_savez(file, *a, **k):
        if "train_tokens" not in k:
            return real_savez(file, *a, **k)
        if isinstance(file, (str, os.PathLike)):
            Path(file).write_bytes(b"PK\x03\x04 half a zip")
        else:
            file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing tokens.npz

    monkeypatch.setattr(np, "savez", interrupted_savez)
    assert _vq_cli(out, "--cr", "16") == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert str(out / "last.npz") in err[-1] and "--resume" in err[-1] and "tokens.npz" in err[-1]
    assert not (out / "tokens.npz").exists()  # no half-written file ...
    assert not list(out.glob("*.tmp"))  # ... and no temporary one
    monkeypatch.setattr(np, "savez", real_savez)
    assert _vq_cli(out, "--cr", "16", "--resume") == 0  # writes the final files from last.npz
    z = np.load(out / "tokens.npz")
    assert z["train_tokens"].shape == (16, 16, 16)
    last, final = checkpoint.load(out / "last.npz"), checkpoint.load(out / "vqvae.npz")
    for k in last["params"]:
        np.testing.assert_array_equal(last["params"][k], final["params"][k], err_msg=k)


def test_atomic_write_replaces_or_leaves_nothing(tmp_path):
    path = tmp_path / "x.npz"
    checkpoint.atomic_write(path, lambda f: np.savez(f, a=np.arange(3)))
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, fail)
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))  # the old file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_a_run_that_fails_before_writing_leaves_no_trace(tokens_file, tmp_path, capsys):
    out = tmp_path / "new" / "prior"
    assert _prior_cli(tmp_path / "missing.npz", out) == 2
    assert "missing.npz does not exist" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()  # no folder, no run.json, no .lock
    assert _prior_cli(tokens_file, out) == 0
    rec = (out / "run.json").read_bytes()
    assert _prior_cli(tokens_file, out, "--tokens", str(tmp_path / "missing.npz"), "--force") == 2
    assert "missing.npz does not exist" in _one_error_line(capsys.readouterr().err)
    assert (out / "run.json").read_bytes() == rec  # the failed --force run wrote nothing: the record stays
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "prior.npz", "run.json"]


def test_prior_ctrl_c_during_the_final_evaluation_is_one_line(tokens_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "prior"
    real, calls = TP.mean_nll, []

    def evaluate(*a, **k):  # the first call ends epoch 1 (in the loop), the second is the final one
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(TP, "mean_nll", evaluate)
    try:
        rc = _prior_cli(tokens_file, out)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the command line (a traceback, no word on what was saved)")
    assert rc == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(out / TP.CKPT_NAME) in err.strip().splitlines()[-1]
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(TP, "mean_nll", real)
    assert _prior_cli(tokens_file, out, "--resume") == 0  # writes metrics.json from the saved model
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
