"""Finite-difference gradient checking.

For a layer out = f(x, w, ...) and an upstream gradient ``dout`` we check the backward
pass against the scalar L = sum(f(...) * dout): its centred difference
    dL/dx[i] ~ (L(x + h e_i) - L(x - h e_i)) / (2h)
has error O(h^2), so in float64 with h = 1e-6 the comparison is good to ~1e-9 relative.
Projecting on a random ``dout`` checks every output element at once, for any layer,
without needing a scalar loss.
"""
import numpy as np

from minivq.backend import asarray, to_numpy


def rel_error(a, b):
    """Relative error ||a - b|| / max(||a|| + ||b||, 1e-300) (norms over all elements).
    A norm ratio, not an element-wise max: elements that are ~0 in both gradients would
    otherwise turn float64 round-off into huge 'relative' errors."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def numerical_gradient(f, x, h=1e-6):
    """Centred differences of the scalar function f() w.r.t. every element of array x,
    which f reads (x is perturbed in place and restored). Returns a NumPy array shaped like x.
    Works for numpy and cupy arrays alike (x must be contiguous so reshape(-1) is a view)."""
    grad = np.zeros(x.shape, dtype=np.float64)  # (x.shape)
    flat = x.reshape(-1)  # a view: writing it perturbs x
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + h
        fp = float(f())
        flat[i] = old - h
        fm = float(f())
        flat[i] = old
        grad.reshape(-1)[i] = (fp - fm) / (2 * h)
    return grad


def check_layer(forward, backward, inputs, grad_names=None, seed=0, h=1e-6, kwargs=None):
    """Check ``backward`` against finite differences of ``forward``.

    forward(*inputs.values(), **kwargs) -> (out, cache); backward(dout, cache) -> gradients in
    the order of ``grad_names`` (default: every float array in ``inputs``, in order) — a single
    array, a tuple, or a dict keyed by name. Returns {name: rel_error}.
    """
    kwargs = kwargs or {}
    if grad_names is None:
        grad_names = [k for k, v in inputs.items() if getattr(v, "dtype", None) is not None
                      and v.dtype.kind == "f"]
    vals = list(inputs.values())
    out, cache = forward(*vals, **kwargs)
    dout = asarray(np.random.default_rng(seed).standard_normal(out.shape))  # same backend as out
    grads = backward(dout, cache)
    if isinstance(grads, dict):
        grads = [grads[n] for n in grad_names]
    elif not isinstance(grads, (tuple, list)):
        grads = [grads]
    if len(grads) != len(grad_names):
        raise ValueError(f"backward returned {len(grads)} gradients for {grad_names}")

    def loss():
        o, _ = forward(*vals, **kwargs)
        return float((to_numpy(o) * to_numpy(dout)).sum())

    errors = {}
    for name, g in zip(grad_names, grads):
        x = inputs[name]
        if g.shape != x.shape:
            raise AssertionError(f"gradient for {name} has shape {g.shape}, expected {x.shape}")
        num = numerical_gradient(loss, x, h)
        errors[name] = rel_error(g, num)
    return errors

