import numpy as np
import pytest

from minivq import backend as B


def test_proxy_follows_backend_switch(backend):
    a = B.xp.arange(5, dtype=B.xp.float32)
    assert B.is_array(a)
    assert np.array_equal(B.to_numpy(a), np.arange(5, dtype=np.float32))
    if backend.device() == "cpu":
        assert isinstance(a, np.ndarray)
    else:
        assert not isinstance(a, np.ndarray)


def test_bad_device_name_is_clear():
    with pytest.raises(ValueError, match="device must be one of"):
        B.use("tpu")


@pytest.mark.skipif(B.gpu_available(), reason="a GPU is present")
def test_gpu_without_cupy_is_clear_error():
    with pytest.raises(RuntimeError, match="MINIVQ_DEVICE=gpu"):
        B.use("gpu")
    assert B.device() == "cpu"


def test_rng_is_host_side_and_reproducible():
    a = B.rng(3).standard_normal(4)
    b = B.rng(3).standard_normal(4)
    assert isinstance(a, np.ndarray) and np.array_equal(a, b)


def test_compute_modules_reach_arrays_only_through_backend():
    """One code path: compute modules never import numpy or cupy themselves."""
    import pathlib
    import re
    root = pathlib.Path(B.__file__).parent
    compute = ["layers", "optim", "attention", "quantizer", "vqvae", "transformer", "classifier", "sampling"]
    pat = re.compile(r"^\s*(import|from)\s+(numpy|cupy)\b", re.M)
    for name in compute:
        f = root / f"{name}.py"
        assert f.exists(), f"compute module {f.name} is missing"
        assert not pat.search(f.read_text()), f"{f.name} imports numpy/cupy directly"
