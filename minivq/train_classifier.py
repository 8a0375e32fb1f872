"""Train the digit classifier: python -m minivq.train classifier --data PATH --out DIR
(``--target speaker``: the same CNN recipe trained to tell the speakers apart, the judge of a
digit+speaker prior; its classes are the training split's speaker names, sorted, stored in the
checkpoint as ClassifierConfig.labels)

Library use (no argparse): ``train(features, out_dir, cfg, TrainConfig(epochs=...))`` with the
object ``data.load_features`` returns. Writes into ``out_dir``:
    last.npz        resume state (params + Adam state + epoch), replaced atomically each epoch
                    and on Ctrl-C
    classifier.npz  the final model: params, config, norm stats (extra), meta (accuracy, timing)
    metrics.json    test accuracy, per-digit accuracy, confusion matrix, timing
    confusion.png   the test confusion matrix

Size letters: N clips, B batch, M mel bands, T frames, K classes.

Augmentation (training only, seeded per epoch so --resume replays the same stream) aims at
what generated / reconstructed speech does differently from clean recordings:
  time shift      +-SHIFT frames, vacated frames filled with the log floor (silence)
  gain            a constant added in the log domain (= a volume change)
  noise floor     logaddexp(x, n): a raised, flat background as Griffin-Lim / VQ artefacts give
  masks           one mel-band stripe and one frame stripe set to 0 after standardisation
                  (SpecAugment), so no single band or instant decides the digit
  mel warp        the mel axis stretched by up to +-WARP (a vocal-tract-length change): digit
                  target only, since a speaker classifier must hear exactly that difference
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli, data
from minivq import classifier as C
from minivq.backend import asarray, to_numpy
from minivq.metrics import confusion_matrix
from minivq.plots import plot_confusion
from minivq.optim import adam_step, clip_grad_norm, lr_at
from minivq import trainer  # the shared skeleton: stop flag, loop, resume/save, progress
from minivq.progress import NonFiniteLoss, check_finite  # noqa: F401 (NonFiniteLoss: re-exported)
from minivq import outdir  # output folders: checked, locked, recorded

LOG_FLOOR = math.log(1e-5)  # the front end's floor (audio.FeatureConfig.log_floor), in nats
SHIFT = 6                   # max time shift (frames; 16 ms each)
GAIN = 1.0                  # max |gain| (nats of power; 1 nat = 4.3 dB)
NOISE_P = 0.5               # probability of a raised noise floor
NOISE_MAX = 7.0             # the raised floor lies up to this many nats above LOG_FLOOR
MASK = 8                    # max width of each SpecAugment stripe (bands / frames)
TARGETS = ("digit", "speaker")  # what a classifier can be trained to tell apart
WARP = 0.1                  # mel-axis stretch factor in [1 - WARP, 1 + WARP] (a vocal-tract-length change)


def _split(features, name):
    return features[name] if isinstance(features, dict) else getattr(features, name)


def _field(split, name):
    return split[name] if isinstance(split, dict) else getattr(split, name)


def augment(x, g, norm, warp=WARP):
    """x: raw log-mel (B, M, T) host float32, g: numpy Generator -> standardised,
    augmented batch (B, 1, M, T) on the backend. warp: the largest mel-axis stretch (0: none;
    the draws are the same either way, so the other augmentations do not change with it)."""
    B, M, T = x.shape
    shift = g.integers(-SHIFT, SHIFT + 1, size=B)  # (B,)
    src = np.arange(T)[None, :] - shift[:, None]  # (B, T) source frame of each output frame
    valid = (src >= 0) & (src < T)
    x = np.take_along_axis(x, np.clip(src, 0, T - 1)[:, None, :], axis=2)  # (B, M, T)
    x = np.where(valid[:, None, :], x, LOG_FLOOR)
    # band m reads the (fractional) band m * alpha, linearly interpolated: formants move up
    # (alpha < 1) or down (alpha > 1) as for a shorter / longer vocal tract
    pos = np.minimum(np.arange(M)[None, :] * g.uniform(1 - warp, 1 + warp, size=(B, 1)), M - 1)  # (B, M)
    lo = np.minimum(pos.astype(np.int64), M - 2)  # (B, M)
    frac = (pos - lo)[:, :, None]  # (B, M, 1)
    x = (np.take_along_axis(x, lo[:, :, None], axis=1) * (1 - frac)
         + np.take_along_axis(x, lo[:, :, None] + 1, axis=1) * frac)  # (B, M, T)
    x = np.maximum(x + g.uniform(-GAIN, GAIN, size=(B, 1, 1)), LOG_FLOOR)
    floor = LOG_FLOOR + g.uniform(0, NOISE_MAX, size=(B, 1, 1))  # (B, 1, 1)
    x = np.where(g.random((B, 1, 1)) < NOISE_P, np.logaddexp(x, floor), x)
    x = (x - norm["mean"]) / norm["std"]
    for axis, n in ((1, M), (2, T)):  # one stripe along mel bands, one along frames
        width = g.integers(0, MASK + 1, size=B)  # (B,)
        start = g.integers(0, n, size=B)  # (B,)
        pos = np.arange(n)[None, :]  # (1, n)
        stripe = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (B, n)
        x = np.where(stripe[:, :, None] if axis == 1 else stripe[:, None, :], 0.0, x)
    return asarray(x[:, None].astype(np.float32))  # (B, 1, M, T)


def accuracy_confusion(params, norm, x, digit, batch=256):
    """Raw log-mel (N, M, T) + digits (N,) -> (accuracy, predicted digits (N,), confusion (K, K))."""
    pred = to_numpy(C.classify(params, norm, x, batch)).argmax(axis=1)  # (N,)
    conf = confusion_matrix(digit, pred, num_classes=params["fc2_w"].shape[1])  # (K, K) rows: true, columns: heard
    return float((pred == np.asarray(digit)).mean()), pred, conf


@dataclasses.dataclass
class TrainConfig(trainer.TrainSettings):
    epochs: int = 20            # passes over the training split
    batch_size: int = 64        # clips per step (the last, partial batch of an epoch is kept)
    lr: float = 3e-3            # peak learning rate (linear warmup, then cosine to lr * 0.02)
    grad_clip: float = 5.0      # clip the global gradient norm at this value
    weight_decay: float = 1e-2  # AdamW decay on weights (not biases)
    warmup: int = None          # linear warmup steps (None: min(100, total steps // 10))
    seed: int = 0               # initialisation, shuffling, augmentation
    log_every: float = 2.0      # seconds between progress lines
    augment: bool = True        # augment the training batches (see augment())
    target: str = "digit"       # what the classes are: "digit" (0-9) or "speaker" (the speaker names)

    def check(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        return super().check()

    RULES = dict(trainer.SHARED_RULES, grad_clip=cli.positive_float)
    OPTIONAL = ("warmup",)


def step(params, opt, xb, yb, tcfg, n, total, warmup, no_decay):
    """One optimisation step (number n of total) on xb (B, 1, M, T) with digits yb (B,):
    forward, backward, clip, AdamW. Updates params and opt in place -> (loss, gradient norm)."""
    loss, _, cache = C.forward(params, xb, yb)
    loss = check_finite(loss, n)
    grads, gnorm = clip_grad_norm(C.backward(cache), tcfg.grad_clip)
    adam_step(params, grads, opt, lr_at(n, tcfg.lr, warmup, total, min_lr=tcfg.lr * 0.02),
              weight_decay=tcfg.weight_decay, no_decay=no_decay)
    return loss, gnorm


def _batch(x, idx, tcfg, epoch, n, norm):
    """The standardised (and augmented) batch of step n (B, 1, M, T). Every random draw depends
    only on (seed, epoch, step): the epoch's shuffle (trainer.epoch_order) and this batch's
    augmentation rng([seed, epoch, step]), so a run resumed at any step continues bit for bit."""
    if not tcfg.augment:
        return C.standardise(x[idx], norm)
    return augment(x[idx], np.random.default_rng([tcfg.seed, epoch, n]), norm,
                   warp=WARP if tcfg.target == "digit" else 0.0)


def speaker_labels(features):
    """-> (sorted speaker names of the training split, train ids (N,), test ids (N_test,)).
    ValueError when a test speaker never speaks in the training split (the official FSDD split
    has every speaker in both; a speaker-disjoint split cannot train a speaker classifier)."""
    tr, te = _split(features, "train"), _split(features, "test")
    s_tr, s_te = (np.asarray(_field(s, "speaker")).astype(str) for s in (tr, te))
    names = sorted(set(map(str, s_tr)))
    unseen = sorted(set(map(str, s_te)) - set(names))
    if unseen:
        raise ValueError(f"the test split has speakers the training split lacks ({unseen}): a speaker classifier "
                         "needs every speaker in both (use the official split)")
    index = {s: i for i, s in enumerate(names)}
    return names, np.array([index[s] for s in s_tr], np.int64), np.array([index[s] for s in s_te], np.int64)


def _data(features, cfg, target="digit"):
    """-> (x_tr, y_tr, x_te, y_te, cfg): host arrays checked against the classifier config.
    target "speaker": the labels are speaker ids and the config names the speakers."""
    tr, te = _split(features, "train"), _split(features, "test")
    x_tr, x_te = np.asarray(_field(tr, "x"), dtype=np.float32), np.asarray(_field(te, "x"), dtype=np.float32)
    labels = ()
    if target == "speaker":
        labels, y_tr, y_te = speaker_labels(features)
    else:
        y_tr, y_te = np.asarray(_field(tr, "digit")), np.asarray(_field(te, "digit"))
    if x_tr.ndim != 3 or len(x_tr) == 0 or len(x_tr) != len(y_tr):
        raise ValueError(f"training features must be (N, n_mels, n_frames) with N >= 1 labels, got {x_tr.shape}")
    cfg = cfg or C.ClassifierConfig(n_mels=x_tr.shape[1], n_frames=x_tr.shape[2],
                                    **({"n_classes": len(labels), "labels": labels} if labels else {}))
    if tuple(cfg.labels) != tuple(labels):
        raise ValueError(f"the classifier config names the classes {list(cfg.labels)} but the {target} labels "
                         f"are {list(labels) or 'the digits'}")
    if (cfg.n_mels, cfg.n_frames) != x_tr.shape[1:]:
        raise ValueError(f"features are {x_tr.shape[1]} x {x_tr.shape[2]} but the classifier config "
                         f"expects {cfg.n_mels} x {cfg.n_frames}")
    return x_tr, y_tr, x_te, y_te, cfg


def _start(last, cfg, tcfg, x_tr, resume, verbose):
    """-> dict(params, opt, norm, step, history, train_seconds, samples_seen, epoch_loss_sum)."""
    if resume and last.is_file():
        ck = trainer.load_state(last, "classifier", ("step", "history", "train_seconds", "samples_seen",
                                                     "epoch_loss_sum"))
        if ck["config"] != cfg.to_dict():
            raise ValueError(f"{last} was trained with config {ck['config']}, not {cfg.to_dict()}")
        m = ck["meta"]
        trainer.say(verbose, f"resuming from {last} at step {m['step']}")
        return {"params": ck["params"], "opt": ck["opt_state"],
                "norm": {"mean": ck["extra"]["norm_mean"], "std": ck["extra"]["norm_std"]},
                **{k: m[k] for k in ("step", "history", "train_seconds", "samples_seen", "epoch_loss_sum")}}
    if resume:
        trainer.say(verbose, f"no {last} to resume from; starting fresh")
    return {"params": C.init_params(cfg, tcfg.seed), "opt": {}, "norm": {k: to_numpy(v) for k, v in C.fit_band_stats(x_tr).items()},
            "step": 0, "history": [], "train_seconds": 0.0, "samples_seen": 0, "epoch_loss_sum": 0.0}


def _finish(out_dir, S, cfg, x_tr, y_tr, x_te, y_te, tcfg, meta):
    """Final evaluation -> metrics; writes classifier.npz, metrics.json, confusion.png."""
    params, norm = S["params"], S["norm"]
    acc, pred, conf = accuracy_confusion(params, norm, x_te, y_te)
    train_acc, _, _ = accuracy_confusion(params, norm, x_tr, y_tr)
    per_digit = (np.diag(conf) / np.maximum(conf.sum(axis=1), 1)).tolist()  # per class (per speaker: labels)
    metrics = {"test_accuracy": acc, "train_accuracy": train_acc, "per_digit_accuracy": per_digit,
               **({"target": "speaker", "labels": list(cfg.labels), "per_speaker_accuracy": per_digit}
                  if cfg.labels else {}),
               "confusion": conf.tolist(), "n_train": len(x_tr), "n_test": len(x_te), "epochs": tcfg.epochs,
               "train_seconds": S["train_seconds"], "samples_per_second": S["samples_seen"] / max(S["train_seconds"], 1e-9),
               "history": S["history"], **(meta or {})}
    C.save_classifier(out_dir / "classifier.npz", params, cfg, norm,
                      meta={k: v for k, v in metrics.items() if k != "history"})
    checkpoint.write_json(out_dir / "metrics.json", metrics)
    plot_confusion(out_dir / "confusion.png", conf,
                       f"classifier test accuracy {acc:.3f} (n={len(x_te)})")
    return metrics


@outdir.scoped
def train(features, out_dir, cfg=None, tcfg=None, resume=False, callback=None, verbose=True, meta=None):
    """Train on features.train, evaluate on features.test, write the files listed above.

    features: the result of data.load_features (attributes or keys train/test, each with
    x (N, M, T) raw log-mel and digit (N,)). tcfg: TrainConfig. callback(step, loss): after
    every step. meta: extra entries for metrics.json. Returns dict(params, cfg, norm, metrics).
    Raises NonFiniteLoss (last.npz keeps the last good epoch); Ctrl-C saves last.npz, then
    raises trainer.Interrupted (a KeyboardInterrupt).
    """
    tcfg = (tcfg or TrainConfig()).check()
    x_tr, y_tr, x_te, y_te, cfg = _data(features, cfg, tcfg.target)
    out_dir = Path(out_dir)
    outdir.hold(out_dir)  # a writable folder, locked until train returns
    last = out_dir / "last.npz"
    S = _start(last, cfg, tcfg, x_tr, resume, verbose)
    params, opt, norm = S["params"], S["opt"], S["norm"]
    N, B = len(x_tr), tcfg.batch_size
    spe = math.ceil(N / B)  # steps per epoch
    total = tcfg.epochs * spe  # the LR schedule spans this; resume with the same --epochs
    warmup = min(100, total // 10) if tcfg.warmup is None else tcfg.warmup
    no_decay = tuple(k for k in params if k.endswith("_b"))
    prog = trainer.progress(total, "classifier", tcfg, S["step"], verbose)
    clock = {"t0": time.perf_counter()}  # the start of the training time not yet counted

    def save(interrupted=False):
        if interrupted:
            S["train_seconds"] += time.perf_counter() - clock["t0"]
        meta_ = {k: S[k] for k in ("step", "history", "train_seconds", "samples_seen", "epoch_loss_sum")}
        C.save_classifier(last, params, cfg, norm, opt_state=opt,
                          meta={"kind": "classifier", **meta_, "epoch": S["step"] / spe, "interrupted": interrupted,
                                "seed": tcfg.seed, "train": tcfg.to_dict()})
        return S["step"]

    def run_step(n):
        epoch, idx = trainer.batch_index(tcfg.seed, n, spe, N, B)  # (B,)
        loss, gnorm = step(params, opt, _batch(x_tr, idx, tcfg, epoch, n, norm), y_tr[idx], tcfg, n, total,
                           warmup, no_decay)
        S["epoch_loss_sum"] += loss * len(idx)
        S["samples_seen"] += len(idx)
        S["step"] = n + 1
        if prog:
            prog.update(n + 1, len(idx), epoch=epoch + 1, loss=loss, gnorm=gnorm)
        if callback is not None:
            callback(n + 1, loss)
        if (n + 1) % spe == 0 or n + 1 == total:  # end of an epoch: evaluate, checkpoint
            S["train_seconds"] += time.perf_counter() - clock["t0"]
            acc, _, _ = accuracy_confusion(params, norm, x_te, y_te)
            S["history"].append({"epoch": epoch + 1, "train_loss": S["epoch_loss_sum"] / N, "test_acc": acc})
            trainer.say(verbose, f"epoch {epoch + 1}/{tcfg.epochs}: train loss {S['epoch_loss_sum'] / N:.4f}, "
                                 f"test accuracy {acc:.4f}")
            S["epoch_loss_sum"] = 0.0
            save()
            clock["t0"] = time.perf_counter()
        return n + 1

    trainer.loop(S["step"], total, run_step, lambda: save(interrupted=True), last, verbose)
    metrics = _finish(out_dir, S, cfg, x_tr, y_tr, x_te, y_te, tcfg, meta)
    return {"params": params, "cfg": cfg, "norm": norm, "metrics": metrics}


# ----------------------------------------------------------------------------- command line
def add_arguments(p):
    p.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                   help="FSDD (or AudioMNIST) folder; defaults to $MINIVQ_FSDD")
    p.add_argument("--out", default="out/classifier", help="output folder")
    trainer.add_arguments(p, TrainConfig(), "clips")  # --epochs --batch-size/--batch --lr --grad-clip --weight-decay --warmup --seed --log-every
    p.add_argument("--target", choices=TARGETS, default="digit",
                   help="what to classify: the digit, or the speaker (the training split's speaker names)")
    p.add_argument("--split", choices=("official", "speakers"), default="official",
                   help="official: FSDD takes 0-4 are the test set; speakers: held-out speakers")
    p.add_argument("--max-per-digit", type=cli.positive_int, default=None, help="use at most this many clips per digit")
    p.add_argument("--no-augment", action="store_true", help="train on clean features only")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--force", action="store_true", help="write OUT even where another run's files would be overwritten")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 epochs on 30 clips per digit")


@outdir.scoped
def run(args):
    if not args.data:
        raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
    epochs, mpd = args.epochs, args.max_per_digit
    if args.quick:
        epochs, mpd = min(epochs, 3), mpd or 30
    t0 = time.perf_counter()
    outdir.claim(args.out, "classifier", args)  # writable, locked, not another run's files (see minivq/outdir.py)
    features = data.load_features(args.data, split=args.split, max_per_digit=mpd)
    print(f"data: {len(features.train.x)} train / {len(features.test.x)} test clips "
          f"({args.split} split) loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    if args.target == "speaker" and args.split != "official":
        raise ValueError("--target speaker needs --split official (every speaker must be in the training split)")
    tcfg = trainer.settings_from_args(TrainConfig, args, epochs=epochs, augment=not args.no_augment,
                                      target=args.target)
    code, res = trainer.run_cli(lambda: train(features, args.out, tcfg=tcfg, resume=args.resume,
                                              meta={"split": args.split, "max_per_digit": mpd, "data": str(args.data)}),
                                Path(args.out) / "last.npz")
    if code:
        return code
    m = res["metrics"]
    print(f"test accuracy {m['test_accuracy']:.4f} (train {m['train_accuracy']:.4f}); "
          f"{m['train_seconds']:.0f} s training, {m['samples_per_second']:.0f} samples/s; "
          f"wrote {Path(args.out) / 'classifier.npz'} and metrics.json")
    return 0
