"""Source checks for habits that break only on the GPU, so that a machine without one catches them.

CuPy refuses to turn its arrays into NumPy arrays behind your back, so code that is fine on the
CPU backend fails on the GPU when it
- hands an array to NumPy's strided-view helpers (``np.lib.stride_tricks.as_strided(cupy_array)``
  raises "Cannot convert memoryview to cupy.cuda.memory.MemoryPointer"): code that computes with
  ``xp`` takes strided views through ``xp.lib.stride_tricks``;
- compares arrays with ``np.testing`` (it calls ``np.asarray``): library code and lessons print or
  check numbers themselves, tests convert with ``to_numpy`` first;
- reaches into a private helper from a lesson (lessons call public library functions only, whose
  contract includes the device: ``L._im2col`` took a padded array and output sizes, and the
  lesson handed it a host array).
The checks read the code through ``ast``, so comments and docstrings may mention these names.
The last test runs tests that once failed only on a GPU against tests/strict_cupy, a CPU
stand-in for CuPy that is as strict about host arrays.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "minivq").glob("*.py"))
LESSONS = sorted((ROOT / "lessons").glob("*.py"))
NUMPY_TESTING = ("np.testing", "numpy.testing")
NUMPY_STRIDE_TRICKS = ("np.lib.stride_tricks", "numpy.lib.stride_tricks")


def _dotted(node):
    """'a.b.c' for an attribute chain on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id] + parts[::-1]) if isinstance(node, ast.Name) else None


def _names(tree):
    """(line, dotted name) of every attribute chain and every imported name in the module."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _dotted(node):
            out.add((node.lineno, _dotted(node)))
        elif isinstance(node, ast.Import):
            out |= {(node.lineno, a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {(node.lineno, f"{node.module}.{a.name}") for a in node.names}
    return out


def _hits(path, prefixes):
    tree = ast.parse(path.read_text(), filename=str(path))
    return sorted(f"{path.name}:{line}: {name}" for line, name in _names(tree)
                  if any(name == p or name.startswith(p + ".") for p in prefixes))


def _computes_with_xp(path):
    """True for a module that imports xp from minivq.backend (its arrays may be CuPy arrays)."""
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.ImportFrom) and n.module == "minivq.backend" and any(a.name == "xp" for a in n.names)
               for n in ast.walk(tree))


def test_sources_are_found():
    assert len(LIBRARY) > 10 and len(LESSONS) >= 9
    assert _computes_with_xp(ROOT / "minivq" / "layers.py") and not _computes_with_xp(ROOT / "minivq" / "audio.py")


@pytest.mark.parametrize("path", LIBRARY + LESSONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_numpy_testing_outside_tests(path):
    assert not _hits(path, NUMPY_TESTING), "np.testing converts CuPy arrays implicitly and fails on the GPU"


@pytest.mark.parametrize("path", [p for p in LIBRARY if _computes_with_xp(p)] + LESSONS,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_strided_views_go_through_xp(path):
    """Host-only modules (audio.py: NumPy in, NumPy out) may use NumPy's stride tricks; code that
    computes with xp, and the lessons, which run on either device, may not."""
    assert not _hits(path, NUMPY_STRIDE_TRICKS), "use xp.lib.stride_tricks (NumPy's fails on CuPy arrays)"


def _private_library_uses(tree):
    """Lines that import a private minivq name or reach one through a minivq module alias."""
    aliases, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minivq":
            for a in node.names:
                aliases.add(a.asname or a.name)
                if a.name.startswith("_"):
                    bad.append(f"line {node.lineno}: imports {node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.split(".")[0] == "minivq"}
    for line, name in _names(tree):
        parts = name.split(".")
        if parts[0] in aliases and any(p.startswith("_") and not p.startswith("__") for p in parts[1:]):
            bad.append(f"line {line}: {name}")
    return sorted(bad)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lessons_call_public_library_functions_only(path):
    bad = _private_library_uses(ast.parse(path.read_text()))
    assert not bad, f"{path.name} uses private library names: {bad}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The checks themselves on a file that breaks every rule (a check that never fires is no check)."""
    f = tmp_path / "bad.py"
    f.write_text("import numpy as np\nfrom numpy.lib.stride_tricks import as_strided\n"
                 "# np.testing in a comment is fine\nnp.testing.assert_allclose(1, 1)\n"
                 "v = np.lib.stride_tricks.sliding_window_view\n")
    hits = [h.split(": ")[-1] for h in _hits(f, NUMPY_TESTING + NUMPY_STRIDE_TRICKS)]
    assert "numpy.lib.stride_tricks.as_strided" in hits and "np.testing.assert_allclose" in hits
    assert "np.lib.stride_tricks.sliding_window_view" in hits and not any("comment" in h for h in hits)
    lesson = ast.parse("from minivq import layers as L\nfrom minivq.vqvae import _to_vectors\n"
                       "cols = L._im2col(x, 2, 2, 2, 2, 2)\ny, cache = L.linear_forward(x, w, b)\n")
    assert _private_library_uses(lesson) == ["line 2: imports minivq.vqvae._to_vectors", "line 3: L._im2col"]


STRICT_CUPY = ROOT / "tests" / "strict_cupy"
RAN_ON_GPU_ONLY = ["tests/test_train_vqvae.py::test_interrupt_and_resume_is_exact",  # np.testing on CuPy params
                   "tests/test_train_prior.py::test_resume_after_interrupt_is_exact",
                   "tests/test_layers.py::test_embedding_backward_matches_loop_and_repeats_bit_for_bit"]


def test_gpu_only_failures_stay_fixed_on_the_strict_cupy_stand_in():
    """With the stand-in first on the path, MINIVQ_DEVICE=auto picks it as 'the GPU' and the
    trainers return its arrays, which np.testing refuses just as it refuses CuPy's."""
    env = {**os.environ, "PYTHONPATH": str(STRICT_CUPY), "MINIVQ_DEVICE": "auto"}
    probe = subprocess.run([sys.executable, "-c", "from minivq import backend; print(backend.device())"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "gpu", probe.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *RAN_ON_GPU_ONLY],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
