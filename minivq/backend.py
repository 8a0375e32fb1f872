"""The one place that chooses between NumPy (CPU) and CuPy (GPU).

Every compute module does ``from minivq.backend import xp`` and writes ``xp.zeros(...)``,
``xp.matmul(...)`` and so on. ``xp`` is a thin proxy that forwards each attribute to the
array module in use *now*, so tests (and users) can switch device after import:

    from minivq import backend
    backend.use("cpu")            # or "gpu", or "auto"
    with backend.using("gpu"):    # temporarily, e.g. in a test fixture
        ...

The device is chosen once at import from ``MINIVQ_DEVICE`` (``cpu``, ``gpu`` or ``auto``;
default ``auto``: CuPy when it imports and sees a GPU, else NumPy).

Host-only work (file I/O, SciPy, Matplotlib) converts with :func:`to_numpy` at the boundary.
Random numbers for initialisation are drawn on the host with NumPy (:func:`rng`) and moved
with :func:`asarray`, so a seed gives the same weights on CPU and GPU.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

_DEVICES = ("cpu", "gpu", "auto")
_cupy = None          # the cupy module once imported successfully
_cupy_error = None    # why cupy is unavailable (str), once we have tried
_current = np         # the array module in use
_current_name = "cpu"


def _try_cupy():
    """Import cupy and check that a GPU is visible; return (module or None, reason)."""
    global _cupy, _cupy_error
    if _cupy is not None or _cupy_error is not None:
        return _cupy, _cupy_error
    try:
        import cupy  # noqa: the only cupy import in minivq
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            raise RuntimeError("no CUDA device is visible")
        _cupy = cupy
    except Exception as e:  # ImportError, CUDA driver errors, ...
        _cupy_error = f"{type(e).__name__}: {e}"
    return _cupy, _cupy_error


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device is visible."""
    return _try_cupy()[0] is not None


def gpu_unavailable_reason() -> str | None:
    """Why the GPU backend cannot be used (None when it can)."""
    return _try_cupy()[1]


def use(device: str = "auto") -> str:
    """Select the array backend: 'cpu', 'gpu' or 'auto'. Returns the name chosen ('cpu'/'gpu')."""
    global _current, _current_name
    device = str(device).lower()
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, got {device!r} (check MINIVQ_DEVICE)")
    if device in ("gpu", "auto"):
        cp, why = _try_cupy()
        if cp is not None:
            _current, _current_name = cp, "gpu"
            return _current_name
        if device == "gpu":
            raise RuntimeError(f"MINIVQ_DEVICE=gpu was requested but CuPy/GPU is unavailable ({why}); "
                               "install the 'gpu' extra on a machine with an NVIDIA GPU or use MINIVQ_DEVICE=cpu")
    _current, _current_name = np, "cpu"
    return _current_name


def device() -> str:
    """Name of the backend in use: 'cpu' or 'gpu'."""
    return _current_name


@contextlib.contextmanager
def using(device_name: str):
    """Temporarily switch backend (for tests and benchmarks)."""
    old = _current_name
    use(device_name)
    try:
        yield
    finally:
        use(old)


class _ArrayModuleProxy:
    """Forwards attribute access to the current array module (numpy or cupy)."""

    def __getattr__(self, name):
        return getattr(_current, name)

    def __repr__(self):
        return f"<minivq xp -> {_current.__name__}>"


xp = _ArrayModuleProxy()


def to_numpy(a):
    """Return a NumPy array (copying from the GPU when needed); scalars pass through."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def asarray(a, dtype=None):
    """Move/convert ``a`` to the current backend (no copy when it is already there)."""
    return _current.asarray(a, dtype=dtype)


def is_array(a) -> bool:
    """True for a numpy or cupy ndarray."""
    return isinstance(a, np.ndarray) or (_cupy is not None and isinstance(a, _cupy.ndarray))


def rng(seed=None) -> np.random.Generator:
    """A host NumPy Generator; draw there and move with asarray() so CPU and GPU agree."""
    return np.random.default_rng(seed)


def seed_everything(seed: int) -> None:
    """Seed NumPy's and (if active) CuPy's global generators."""
    np.random.seed(seed)
    if _cupy is not None:
        _cupy.random.seed(seed)


def synchronize() -> None:
    """Wait for queued GPU work (for honest timings); no-op on CPU."""
    if _current_name == "gpu":
        _cupy.cuda.Stream.null.synchronize()


use(os.environ.get("MINIVQ_DEVICE", "auto"))
