"""A built wheel, installed into a fresh virtual environment, generates from any folder.

The wheel is built from a copy of this checkout (so the build leaves nothing behind in it),
offline and without build isolation (setuptools from the test extra).  The new environment gets
numpy/scipy/soundfile/matplotlib from the test interpreter's site-packages through a .pth file,
so nothing is downloaded; minivq itself must come from the wheel, never from the checkout.
"""
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ("manifest.json", "vqvae.npz", "prior_class.npz", "prior_none.npz", "classifier.npz",
          "vqvae.json", "prior_class.json", "prior_none.json", "classifier.json", "README.md")
# what a source tree copy leaves out: VCS data, environments, build and run outputs
SKIP = shutil.ignore_patterns(".git", ".ci-venv", ".venv", "venv", "build", "dist", "*.egg-info",
                              "__pycache__", ".pytest_cache", ".minivq_cache", "out", "samples", "runs", "wheels")


def _run(cmd, cwd, env, timeout):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_generates(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools (the test extra)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(MPLBACKEND="Agg", MINIVQ_DEVICE="cpu", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")

    # 1. a wheel of a copy of the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(wheels), str(src)], cwd=tmp_path, env=env, timeout=120)
    (wheel,) = wheels.glob("minivq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in BUNDLE if f"minivq/pretrained/{f}" not in names]
    assert not missing, f"{wheel.name} lacks the shipped bundle files {missing}"

    # 2. a fresh venv that sees the test interpreter's packages, but not the checkout
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path, env=env, timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=tmp_path, env=env, timeout=30).stdout.strip())
    parents = [p for p in site.getsitepackages() + [sysconfig.get_path("purelib")]
               if Path(p).is_dir() and Path(p).resolve() != ROOT]
    (purelib / "_test_parent_site.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")
    # --no-index: the dependencies must already be there (through the .pth), nothing is fetched
    _run([str(py), "-m", "pip", "install", "--no-index", "-q", str(wheel)], cwd=tmp_path, env=env, timeout=120)

    # 3. generate from a folder that is not the checkout
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = _run([str(py), "-c", "import minivq.generate as g; print(g.__file__); print(g.DEFAULT_CHECKPOINT)"],
             cwd=work, env=env, timeout=60)
    module, bundle = (Path(line) for line in r.stdout.split())
    assert module.resolve().is_relative_to(purelib.resolve()), f"minivq imported from {module}, not the venv"
    out = tmp_path / "samples"
    r = _run([str(py), "-m", "minivq.generate", "--n", "1", "--digit", "3", "--out", str(out)],
             cwd=work, env=env, timeout=120)
    wavs = sorted(out.glob("digit3_*.wav"))
    assert len(wavs) == 1 and wavs[0].stat().st_size > 10_000, r.stdout
    assert "classifier agrees on" in r.stdout
    # the default bundle is the installed copy inside the package
    assert bundle.resolve() == (purelib / "minivq" / "pretrained").resolve()
