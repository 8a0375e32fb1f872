"""Optimiser: Adam with decoupled weight decay (AdamW), gradient clipping, LR schedule.

A model is a dict of named parameter arrays; its gradients are a dict with the same keys
and shapes (check_grads asserts it). Optimiser state is a dict of the same keys, each
holding the moment estimates, so it can be saved in a checkpoint next to the params.
"""
import math

from minivq.backend import xp


def check_grads(params, grads):
    """Assert grads has exactly params' keys, each with the parameter's shape."""
    if set(params) != set(grads):
        missing, extra = set(params) - set(grads), set(grads) - set(params)
        raise AssertionError(f"grads keys differ from params: missing {sorted(missing)}, extra {sorted(extra)}")
    for k, p in params.items():
        if grads[k].shape != p.shape:
            raise AssertionError(f"grad {k!r} has shape {grads[k].shape}, parameter has {p.shape}")


def adam(w, dw, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """One AdamW step on array w (updated in place) with gradient dw.

    state: dict holding 'm', 'v' (same shape as w) and 't' (step count); created when empty.
        m <- b1 m + (1 - b1) dw            v <- b2 v + (1 - b2) dw^2
        m_hat = m / (1 - b1^t)             v_hat = v / (1 - b2^t)
        w <- w - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * w)
    The decay is decoupled (applied to w, not added to dw), as in AdamW.
    """
    b1, b2 = betas
    if not state:
        state["m"] = xp.zeros_like(w)
        state["v"] = xp.zeros_like(w)
        state["t"] = 0
    state["t"] += 1
    t = state["t"]
    m, v = state["m"], state["v"]
    m *= b1
    m += (1 - b1) * dw
    v *= b2
    v += (1 - b2) * (dw * dw)
    step = (m / (1 - b1 ** t)) / (xp.sqrt(v / (1 - b2 ** t)) + eps)
    if weight_decay:
        step += weight_decay * w
    w -= lr * step
    return w


def adam_step(params, grads, opt_state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              no_decay=()):
    """AdamW over a params dict (in place). opt_state: dict name -> per-array state (filled on
    first use). Names listed in ``no_decay`` (biases, norms, embeddings) get no weight decay."""
    check_grads(params, grads)
    for k in params:
        wd = 0.0 if k in no_decay else weight_decay
        adam(params[k], grads[k], opt_state.setdefault(k, {}), lr, betas, eps, wd)


def global_norm(grads):
    """sqrt of the sum of squares of every gradient element (a Python float)."""
    return math.sqrt(sum(float((g * g).sum()) for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients by min(1, max_norm / global_norm). Returns (new grads dict, norm before)."""
    norm = global_norm(grads)
    scale = min(1.0, max_norm / (norm + 1e-12))
    if scale == 1.0:
        return dict(grads), norm
    return {k: g * scale for k, g in grads.items()}, norm


def lr_at(step, base_lr, warmup, total, min_lr=0.0):
    """Linear warmup for `warmup` steps, then cosine decay from base_lr to min_lr at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
