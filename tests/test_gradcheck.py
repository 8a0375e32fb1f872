"""The gradient checker itself: it must accept a correct backward and reject a wrong one."""
import numpy as np
import pytest

from minivq.backend import asarray, to_numpy
from minivq.gradcheck import check_layer, numerical_gradient, rel_error


def test_rel_error_is_norm_based():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert abs(rel_error(np.array([1.0, 0.0]), np.array([1.0, 1e-3])) - 1e-3 / (1 + np.hypot(1, 1e-3))) < 1e-15
    assert rel_error(np.zeros(4), np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


def test_numerical_gradient_of_known_function(backend):
    x = asarray(np.array([[0.3, -1.2, 2.0], [0.5, 0.1, -0.7]]))
    before = to_numpy(x).copy()
    g = numerical_gradient(lambda: float((to_numpy(x) ** 3).sum()), x)
    np.testing.assert_allclose(g, 3 * before ** 2, rtol=1e-8)
    assert np.array_equal(to_numpy(x), before), "x must be restored"


def _square_forward(x, w):
    return x * x * w, (x, w)


def _square_backward(dout, cache):
    x, w = cache
    return 2 * x * w * dout, x * x * dout


def _square_backward_wrong(dout, cache):
    x, w = cache
    return x * w * dout, x * x * dout  # missing factor 2 in dx


def test_check_layer_accepts_correct_and_rejects_wrong(backend):
    rng = np.random.default_rng(0)
    inputs = {"x": asarray(rng.standard_normal((3, 4))), "w": asarray(rng.standard_normal((3, 4)))}
    good = check_layer(_square_forward, _square_backward, inputs)
    assert set(good) == {"x", "w"} and max(good.values()) < 1e-8
    bad = check_layer(_square_forward, _square_backward_wrong, inputs)
    assert bad["x"] > 0.1 and bad["w"] < 1e-8


def test_check_layer_dict_grads_and_shape_errors(backend):
    inputs = {"x": asarray(np.arange(6.0).reshape(2, 3)), "w": asarray(np.ones((2, 3)))}
    errs = check_layer(_square_forward, lambda d, c: {"w": c[0] * c[0] * d, "x": 2 * c[0] * c[1] * d},
                       inputs, grad_names=["x", "w"])
    assert max(errs.values()) < 1e-8
    with pytest.raises(AssertionError, match="shape"):
        check_layer(_square_forward, lambda d, c: (d.T, d), inputs)
    with pytest.raises(ValueError, match="gradients"):
        check_layer(_square_forward, lambda d, c: (d,), inputs)
