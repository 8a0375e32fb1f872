"""Shared fixtures: the array backend and the real-data folder."""
import os
from pathlib import Path

import pytest

from minivq import backend as B


def _backend_params():
    reason = B.gpu_unavailable_reason()
    return [pytest.param("cpu", id="cpu"),
            pytest.param("gpu", id="gpu", marks=pytest.mark.skipif(
                reason is not None, reason=f"no GPU backend: {reason}"))]


@pytest.fixture(params=_backend_params())
def backend(request):
    """Runs the test once per available backend; yields the backend module with it selected."""
    with B.using(request.param):
        yield B


@pytest.fixture(scope="session")
def fsdd_path():
    """The FSDD folder from MINIVQ_FSDD; skip when unset, fail when set but missing."""
    p = os.environ.get("MINIVQ_FSDD")
    if not p:
        pytest.skip("MINIVQ_FSDD is not set")
    path = Path(p)
    assert path.is_dir(), f"MINIVQ_FSDD={p} is set but is not a folder"
    return path
