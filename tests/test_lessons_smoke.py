"""Smoke test of the lessons that run in seconds: each must run with --quick, exit 0 and save a PNG.

The lessons that train a model (03, 05, 07) or need a trained bundle (08) take too long for the
suite and are run by hand. A lesson missing from the list below fails the test (never a skip).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS_DIR = Path(__file__).resolve().parents[1] / "lessons"
QUICK_LESSONS = ["01_stft.py", "02_layers.py", "04_vector_quantizer.py", "06_attention.py", "09_topp&r.py"]
TIMEOUT_S = 180  # each takes 3-7 s on a loaded 2-core machine; this only stops a hang


@pytest.mark.parametrize("name", QUICK_LESSONS)
def test_lesson_runs_quick(name, tmp_path):
    script = LESSONS_DIR / name
    assert script.is_file(), f"{script} is missing"
    out = tmp_path / "out"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    pngs = sorted(out.rglob("*.png"))
    assert pngs, f"{name} wrote no PNG under {out}"
    assert all(p.stat().st_size > 1000 for p in pngs), f"{name} wrote an empty-looking PNG: {pngs}"
    assert proc.stdout.strip(), f"{name} printed nothing"
