"""Every lesson must run with --quick, exit 0, print what it shows and save a PNG: once with the
dataset (MINIVQ_FSDD, when it is set) and once without it (the lessons then use the shipped bundle
or synthetic input, and say so). --quick is meant to take seconds, not minutes.

The lessons run in a temporary folder with PYTHONPATH removed, so minivq is importable only
through the lesson's own ``sys.path`` line (or an installed copy; the source check below
catches a missing line there too). They inherit MINIVQ_DEVICE, so on a machine with a GPU they
run on it; on any machine they run once more against tests/strict_cupy, a CPU stand-in for
CuPy that refuses host arrays as CuPy does (a lesson that hands a NumPy array to library code,
or a device array to matplotlib, fails there as it would on a GPU).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS_DIR = Path(__file__).resolve().parents[1] / "lessons"
ALL_LESSONS = sorted(p.name for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))
QUICK_LESSONS = ALL_LESSONS  # every lesson, in order
TIMEOUT_S = 300  # --quick takes seconds; this only stops a hang
CHECKOUT_ON_PATH = "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))"


STRICT_CUPY = Path(__file__).resolve().parent / "strict_cupy"


def _run_lesson(name, args, cwd, strict_gpu=False, with_data=True):
    """Run lessons/name with args from cwd, PYTHONPATH removed (see the module docstring);
    strict_gpu: with the strict CuPy stand-in as the only PYTHONPATH entry and MINIVQ_DEVICE=gpu;
    with_data=False: MINIVQ_FSDD removed too (a learner with no dataset)."""
    drop = {"PYTHONPATH"} | (set() if with_data else {"MINIVQ_FSDD"})
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["MPLBACKEND"] = "Agg"
    if strict_gpu:
        env.update(PYTHONPATH=str(STRICT_CUPY), MINIVQ_DEVICE="gpu")
    return subprocess.run([sys.executable, str(LESSONS_DIR / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def test_every_lesson_is_listed():
    assert len(ALL_LESSONS) >= 9 and set(QUICK_LESSONS) <= set(ALL_LESSONS), ALL_LESSONS


def _check_quick_run(name, tmp_path, strict_gpu=False, with_data=True):
    script = LESSONS_DIR / name
    assert script.is_file(), f"{script} is missing"
    out = tmp_path / "out"
    proc = _run_lesson(name, ["--quick", "--out", str(out)], tmp_path, strict_gpu, with_data)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    pngs = sorted(out.rglob("*.png"))
    assert pngs, f"{name} wrote no PNG under {out}"
    assert all(p.stat().st_size > 1000 for p in pngs), f"{name} wrote an empty-looking PNG: {pngs}"
    assert proc.stdout.strip(), f"{name} printed nothing"
    # a lesson's own checks (ours vs the library, finite differences) end their line with a verdict,
    # OK/pass or FAIL (lesson 02 also says FAIL mid-sentence when it explains --break: not a verdict)
    failed = [line for line in proc.stdout.splitlines() if re.search(r"\bFAIL\)?$|^FAILED", line.strip())]
    assert not failed, f"{name} reports a failed check:\n" + "\n".join(failed)


@pytest.mark.parametrize("name", QUICK_LESSONS)
def test_lesson_runs_quick_with_the_dataset(name, tmp_path):
    if not os.environ.get("MINIVQ_FSDD"):
        pytest.skip("MINIVQ_FSDD is not set (the run without data is a separate test)")
    _check_quick_run(name, tmp_path)


@pytest.mark.parametrize("name", QUICK_LESSONS)
def test_lesson_runs_quick_without_a_dataset(name, tmp_path):
    _check_quick_run(name, tmp_path, with_data=False)


@pytest.mark.parametrize("name", QUICK_LESSONS)
def test_lesson_runs_quick_on_strict_cupy_stand_in(name, tmp_path):
    _check_quick_run(name, tmp_path, strict_gpu=True, with_data=False)


@pytest.mark.parametrize("name", ALL_LESSONS)
def test_lesson_imports_minivq_from_the_checkout(name, tmp_path):
    """Every lesson puts the checkout on sys.path before its first minivq import, and starts."""
    lines = (LESSONS_DIR / name).read_text().splitlines()
    first_import = next(i for i, line in enumerate(lines) if re.match(r"(from|import) minivq\b", line))
    path_line = next((i for i, line in enumerate(lines) if line.startswith(CHECKOUT_ON_PATH)), None)
    assert path_line is not None and path_line < first_import, \
        f"{name} must run `{CHECKOUT_ON_PATH}` before its first minivq import (line {first_import + 1})"
    proc = _run_lesson(name, ["--help"], tmp_path)
    assert proc.returncode == 0 and "usage" in proc.stdout, f"{name} --help failed:\n{proc.stderr[-3000:]}"
