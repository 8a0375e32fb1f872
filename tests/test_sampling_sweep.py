"""benchmarks/sampling_sweep.py: rows agree with generate_clips, are kept, and are not re-measured."""
import json

import numpy as np
import pytest

from minivq.bundle import DEFAULT_CHECKPOINT, generate_clips, load_bundle

from fakes import load_benchmark

def load_sweep():
    return load_benchmark("sampling_sweep")


def test_sweep_rows_match_generate_and_resume(tmp_path, capsys):
    sw = load_sweep()
    assert sw.main(["--out", str(tmp_path), "--seed", "3", "--n", "1", "--settings", "2,0.7", "1,1.0,0.9"]) == 0
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [(r["guidance"], r["temperature"], r["top_p"]) for r in rows] == [(2.0, 0.7, None), (1.0, 1.0, 0.9)]
    # The sweep's figure is what generate_clips gives for the same call: 1 clip of each digit.
    digits = np.arange(10)
    res = generate_clips(load_bundle(DEFAULT_CHECKPOINT), digits, seed=3, guidance=2.0, temperature=0.7)
    assert rows[0]["classifier"] == pytest.approx(float((res["pred"] == digits).mean()))
    assert rows[0]["classifier_per_digit"] == [float(p == d) for d, p in enumerate(res["pred"])]
    assert rows[0]["listener"] == pytest.approx(float((res["listener"]["pred"] == digits).mean()))
    # A second run keeps the rows and measures only the new setting.
    capsys.readouterr()
    assert sw.main(["--out", str(tmp_path), "--seed", "3", "--n", "1", "--settings", "2,0.7", "1.5,0.7"]) == 0
    assert "g=2 T=0.7 top_p=None seed=3 n=1: already measured" in capsys.readouterr().out
    rows2 = json.loads((tmp_path / "sweep.json").read_text())
    assert rows2[:2] == rows and len(rows2) == 3
    assert "| 1.5 | 0.7 |" in (tmp_path / "sweep.md").read_text()


def test_sweep_rejects_a_bad_setting(tmp_path, capsys):
    assert load_sweep().main(["--out", str(tmp_path), "--settings", "2"]) == 2
    assert "guidance,temperature[,top_p]" in capsys.readouterr().err
