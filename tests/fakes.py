"""Small stand-ins shared by several test files (imported as ``from fakes import ...``; pytest puts
this folder on sys.path)."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from minivq.audio import FeatureConfig


def tiny_features(n_train=24, n_test=6, size=16, seed=0):
    """A stand-in for data.load_features: smooth random 'log-mels' (N, size, size) float32 around
    -6 with a rising band profile, so a VQ-VAE has something learnable; digits cycle 0-9."""
    g = np.random.default_rng(seed)

    def split(n):
        base = g.standard_normal((n, size, 1)) + np.linspace(-3, 0, size)[None, None, :]  # (n, size, 1)
        x = (base + 0.3 * g.standard_normal((n, size, size))).astype(np.float32) - 6.0  # (n, size, size)
        return SimpleNamespace(x=x, digit=np.arange(n) % 10, speaker=np.array(["s%d" % (i % 3) for i in range(n)]))

    return SimpleNamespace(train=split(n_train), test=split(n_test), cfg=FeatureConfig())


def load_benchmark(name):
    """benchmarks/NAME.py as a module, loaded by path (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
