"""The training skeleton every trainer shares (train_vqvae, train_prior, train_classifier, train_listener).

A trainer defines a config dataclass (shared field names below), a ``step()`` that does one
optimisation step (forward, backward, update), and a short ``train()`` that wires them to this
module. What every trainer needs, written once here:

    TrainSettings  the fields every trainer config has, with the same names and meanings
    StopFlag       SIGINT sets a flag: the current step finishes, the state is saved, then
                   ``Interrupted`` (a KeyboardInterrupt) is raised
    loop()         the step loop: runs step(), checks the flag, saves and raises on Ctrl-C
    epoch_order()  the data order of an epoch, a pure function of (seed, epoch)
    batch_index()  the examples of one step: (epoch, indices) from (seed, step)
    load_state()   a resumable checkpoint -> params + optimiser state (on the backend), config,
                   meta, extra arrays; checked for kind and completeness (checkpoint.py)
    opt_to_backend()  optimiser state read from a checkpoint -> arrays on the backend
    (saving stays with each model's checkpoint writer, all of them checkpoint.save: params,
    optimiser state, config, meta and extra arrays in one atomic .npz)
    progress()     progress lines with throughput and ETA (progress.Progress), or none
    add_arguments() / settings_from_args() / run_cli()   the shared flags and exit codes

Stopping, the same in all three trainers and their command lines:
    Ctrl-C (or a KeyboardInterrupt raised by a callback)  -> state saved, ``Interrupted`` raised;
                                                            the CLIs exit EXIT_INTERRUPTED (130)
    a NaN/inf loss or gradient norm                         -> ``NonFiniteLoss`` raised, the last good
                                                            checkpoint is kept; the CLIs exit
                                                            EXIT_NONFINITE (3)
Exit code 3 (not 1) keeps "training diverged" apart from a crash (1) and a bad input (2).

Reproducibility: every random draw a trainer makes is derived from the seed and a counter
(epoch, step), or its generator state is saved, so a resumed run repeats the uninterrupted
one bit for bit.
"""
import dataclasses
import signal
import sys
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli
from minivq.backend import asarray
from minivq.progress import NonFiniteLoss, Progress, check_finite  # noqa: F401 (re-exported)

EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT
EXIT_NONFINITE = 3      # the loss or gradient became NaN/inf

# the rules for the shared fields (cli.py words the errors; the trainers' configs add their own)
SHARED_RULES = dict(epochs=cli.positive_int, batch_size=cli.positive_int, lr=cli.positive_float,
                    grad_clip=cli.nonneg_float, weight_decay=cli.nonneg_float, warmup=cli.nonneg_int,
                    seed=cli.nonneg_int, log_every=cli.nonneg_float)


@dataclasses.dataclass
class TrainSettings:
    """The settings every trainer has. A trainer's config subclasses this, changes defaults
    and adds its own fields; RULES maps each numeric field to its cli rule."""
    epochs: int = 1             # passes over the training split
    batch_size: int = 32        # examples per step
    lr: float = 1e-3            # peak learning rate (linear warmup, then cosine)
    grad_clip: float = 1.0      # clip the global gradient norm at this value
    weight_decay: float = 0.0   # AdamW decay (decoupled) on the decayed parameters
    warmup: int = 0             # linear warmup steps
    seed: int = 0               # initialisation, data order and every other random draw
    log_every: float = 10.0     # seconds between progress lines

    RULES = SHARED_RULES
    OPTIONAL = ()  # fields that may be None (a default resolved at train time)

    def __post_init__(self):
        self.check()

    def check(self):
        """Every numeric field by the command line's rules (ValueError naming the field)."""
        cli.check_settings(self.to_dict(), self.RULES, optional=self.OPTIONAL)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """From a checkpoint's record; unknown keys are refused, missing ones take defaults."""
        return checkpoint.config_from_dict(cls, d)


class Interrupted(KeyboardInterrupt):
    """Raised by a trainer after Ctrl-C once its resumable state is saved.
    step: the step the state was saved at; checkpoint: its path; result: what the trainer
    reports about the partial run (a dict, or None)."""

    def __init__(self, step, checkpoint, result=None, message=None):
        super().__init__(message or f"interrupted at step {step}; state saved to {checkpoint} (continue with --resume)")
        self.step, self.checkpoint, self.result = step, checkpoint, result


class StopFlag:
    """SIGINT sets ``stop`` instead of raising, so Ctrl-C stops between steps, never mid-update.
    Outside the main thread signals are left alone (Ctrl-C then arrives as KeyboardInterrupt)."""

    def __init__(self):
        self.stop = False
        self.old = None

    def __enter__(self):
        try:
            self.old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.old = None
        return self

    def _handler(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def loop(step, total, run_step, save, where, verbose=True, report=None):
    """Run ``step = run_step(step)`` until ``total``; returns the final step.

    run_step(step) does one optimisation step and its bookkeeping (progress, callback, the
    end-of-epoch summary and checkpoint) and returns step + 1. save() writes the resumable
    state as it stands and returns the step it saved. On Ctrl-C the running step finishes;
    on a KeyboardInterrupt from inside a step (a callback) the state is saved as it is. Either
    way ``Interrupted`` follows the save; report(), when given, makes its ``result``.
    NonFiniteLoss passes through unsaved (the last good checkpoint stays)."""
    with StopFlag() as flag:
        try:
            while step < total:
                step = run_step(step)
                if flag.stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            err = Interrupted(save(), where, report() if report else None)
            say(verbose, str(err))
            raise err from None
    return step


def epoch_order(seed, epoch, n):
    """The data order of one epoch: a permutation of n derived from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)  # (n,)


def batch_index(seed, step, steps_per_epoch, n, batch_size):
    """-> (epoch, index array (B,)) of the examples of ``step`` (partial last batches are the
    trainer's business: the slice simply runs short)."""
    epoch, i = divmod(step, steps_per_epoch)
    return epoch, epoch_order(seed, epoch, n)[i * batch_size:(i + 1) * batch_size]


def opt_to_backend(opt_state):
    """Optimiser state as read from a checkpoint (host arrays) -> the same dict on the backend."""
    return {k: {"m": asarray(s["m"]), "v": asarray(s["v"]), "t": int(s["t"])} for k, s in opt_state.items()}


def load_state(path, kind, meta_keys=("step",)):
    """Read a resumable checkpoint -> dict(params, opt_state (on the backend), config, meta,
    extra). Refuses a checkpoint of another kind or one lacking ``meta_keys``."""
    ck = checkpoint.load(path, kind=kind)
    checkpoint.check_resumable(ck, path, meta_keys)
    return {"params": {k: asarray(v) for k, v in ck["params"].items()}, "opt_state": opt_to_backend(ck["opt_state"]),
            "config": ck["config"], "meta": ck["meta"], "extra": ck["extra"]}


def progress(total, desc, tcfg, start_step, verbose=True):
    """Progress lines every tcfg.log_every seconds (throughput, ETA), or None when quiet."""
    return Progress(total, desc=desc, every=tcfg.log_every, start_step=start_step) if verbose else None


def say(verbose, msg):
    """A trainer's message line (stderr, with the progress lines), unless quiet."""
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def run_cli(train_call, checkpoint_path):
    """Call ``train_call()`` for a command line -> (exit code, its result or None): 0, or
    EXIT_INTERRUPTED after Ctrl-C, or EXIT_NONFINITE when training diverged."""
    try:
        return 0, train_call()
    except Interrupted:  # the trainer saved its state and said where
        return EXIT_INTERRUPTED, None
    except KeyboardInterrupt:  # outside the step loop: reading the data, or the final evaluation
        print(f"interrupted; {checkpoint_path} holds the last saved state (continue with --resume)"
              if Path(checkpoint_path).is_file() else "interrupted before the first checkpoint; nothing was saved",
              file=sys.stderr)
        return EXIT_INTERRUPTED, None
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE, None


# ----------------------------------------------------------------------------- command lines
def add_arguments(p, d, what="examples", batch_flag="--batch"):
    """The shared flags, with the defaults of config instance ``d`` and its validation rules.
    Both spellings of the batch size work (--batch-size and --batch); an error names
    ``batch_flag``, the trainer's original spelling (argparse reports the last one)."""
    r = d.RULES
    batch_flags = ("--batch", "--batch-size") if batch_flag == "--batch-size" else ("--batch-size", "--batch")
    p.add_argument("--epochs", type=r["epochs"], default=d.epochs, help="passes over the training split")
    p.add_argument(*batch_flags, dest="batch_size", type=r["batch_size"], default=d.batch_size,
                   help=f"{what} per step")
    p.add_argument("--lr", type=r["lr"], default=d.lr, help="peak learning rate (linear warmup, then cosine)")
    p.add_argument("--grad-clip", type=r["grad_clip"], default=d.grad_clip, help="clip the global gradient norm")
    p.add_argument("--weight-decay", type=r["weight_decay"], default=d.weight_decay, help="AdamW decoupled decay")
    p.add_argument("--warmup", type=r["warmup"], default=d.warmup,
                   help="linear warmup steps" + (" (None: a tenth of the steps, at most 100)" if d.warmup is None else ""))
    p.add_argument("--seed", type=r["seed"], default=d.seed, help="initialisation / data order / augmentation seed")
    p.add_argument("--log-every", type=r["log_every"], default=d.log_every, help="seconds between progress lines")


def settings_from_args(cls, args, **fields):
    """A trainer config from the parsed shared flags, plus ``fields``."""
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)}
    return cls(**{**shared, **fields})
