"""Progress lines with throughput and ETA for long work, and the non-finite-loss guard."""
import math
import sys
import time


class NonFiniteLoss(RuntimeError):
    """Raised when a loss becomes NaN or infinite; trainers keep the last good checkpoint."""


def check_finite(value, step, what="loss"):
    v = float(value)
    if not math.isfinite(v):
        raise NonFiniteLoss(f"{what} became {v} at step {step}; stopping (the last good checkpoint is kept). "
                            "Try a lower --lr or check the input data.")
    return v


def fmt_time(seconds):
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Print 'desc step/total | fields | N samples/s | ETA' at most every `every` seconds.

    total: total number of steps; update(step, n_samples, **fields) after each step.
    """

    def __init__(self, total, desc="", every=2.0, stream=None, start_step=0):
        self.total, self.desc, self.every = total, desc, every
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.start_step = start_step
        self.samples = 0

    def update(self, step, n_samples=0, force=False, **fields):
        self.samples += n_samples
        now = time.perf_counter()
        if not force and now - self.last < self.every and step < self.total:
            return
        self.last = now
        el = now - self.t0
        done = max(step - self.start_step, 1e-9)
        eta = el / done * (self.total - step)
        parts = [f"{self.desc} {step}/{self.total}".strip()]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        parts.append(f"{self.samples / max(el, 1e-9):.0f} samples/s")
        parts.append(f"elapsed {fmt_time(el)} ETA {fmt_time(eta)}")
        print(" | ".join(parts), file=self.stream, flush=True)
