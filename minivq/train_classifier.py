"""Train the digit classifier: python -m minivq.train classifier --data PATH --out DIR

Library use (no argparse): ``train(features, out_dir, cfg, epochs, ...)`` with the object
``data.load_features`` returns. Writes into ``out_dir``:
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
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli, data
from minivq import classifier as C
from minivq.backend import asarray, to_numpy
from minivq.plots import plot_confusion
from minivq.optim import adam_step, clip_grad_norm, lr_at
from minivq.progress import NonFiniteLoss, Progress, check_finite
from minivq import outdir  # output folders: checked, locked, recorded

LOG_FLOOR = math.log(1e-5)  # the front end's floor (audio.FeatureConfig.log_floor), in nats
SHIFT = 6                   # max time shift (frames; 16 ms each)
GAIN = 1.0                  # max |gain| (nats of power; 1 nat = 4.3 dB)
NOISE_P = 0.5               # probability of a raised noise floor
NOISE_MAX = 7.0             # the raised floor lies up to this many nats above LOG_FLOOR
MASK = 8                    # max width of each SpecAugment stripe (bands / frames)
WARP = 0.1                  # mel-axis stretch factor in [1 - WARP, 1 + WARP] (a vocal-tract-length change)


def _split(features, name):
    return features[name] if isinstance(features, dict) else getattr(features, name)


def _field(split, name):
    return split[name] if isinstance(split, dict) else getattr(split, name)


def augment(x, g, norm):
    """x: raw log-mel (B, M, T) host float32, g: numpy Generator -> standardised,
    augmented batch (B, 1, M, T) on the backend."""
    B, M, T = x.shape
    shift = g.integers(-SHIFT, SHIFT + 1, size=B)  # (B,)
    src = np.arange(T)[None, :] - shift[:, None]  # (B, T) source frame of each output frame
    valid = (src >= 0) & (src < T)
    x = np.take_along_axis(x, np.clip(src, 0, T - 1)[:, None, :], axis=2)  # (B, M, T)
    x = np.where(valid[:, None, :], x, LOG_FLOOR)
    # band m reads the (fractional) band m * alpha, linearly interpolated: formants move up
    # (alpha < 1) or down (alpha > 1) as for a shorter / longer vocal tract
    pos = np.minimum(np.arange(M)[None, :] * g.uniform(1 - WARP, 1 + WARP, size=(B, 1)), M - 1)  # (B, M)
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


def evaluate(params, norm, x, digit, batch=256):
    """Raw log-mel (N, M, T) + digits (N,) -> (accuracy, predicted digits (N,), confusion (K, K))."""
    pred = to_numpy(C.classify(params, norm, x, batch)).argmax(axis=1)  # (N,)
    K = params["fc2_w"].shape[1]
    conf = np.zeros((K, K), dtype=np.int64)  # (K, K) rows: true digit, columns: predicted
    np.add.at(conf, (np.asarray(digit), pred), 1)
    return float((pred == np.asarray(digit)).mean()), pred, conf


class _Null:
    """A stream that swallows progress lines (quiet=True)."""
    def write(self, _):
        pass

    def flush(self):
        pass


TRAIN_RULES = dict(epochs=cli.positive_int, batch=cli.positive_int, lr=cli.positive_float, seed=cli.nonneg_int,
                   weight_decay=cli.nonneg_float, clip=cli.positive_float)


def _opt_to_backend(opt):
    return {k: {"m": asarray(s["m"]), "v": asarray(s["v"]), "t": int(s["t"])} for k, s in opt.items()}


@outdir.scoped
def train(features, out_dir, cfg=None, epochs=20, batch=64, lr=3e-3, seed=0, weight_decay=1e-2,
          clip=5.0, use_augment=True, resume=False, quiet=False, every=2.0, meta=None):
    """Train on features.train, evaluate on features.test, write the files listed above.

    features: the result of data.load_features (attributes or keys train/test, each with
    x (N, M, T) raw log-mel and digit (N,)). Returns dict(params, cfg, norm, metrics).
    Raises NonFiniteLoss (last.npz keeps the last good epoch) and re-raises KeyboardInterrupt
    after saving last.npz.
    """
    cli.check_settings(dict(epochs=epochs, batch=batch, lr=lr, seed=seed, weight_decay=weight_decay, clip=clip),
                       TRAIN_RULES)
    tr, te = _split(features, "train"), _split(features, "test")
    x_tr, y_tr = np.asarray(_field(tr, "x"), dtype=np.float32), np.asarray(_field(tr, "digit"))
    x_te, y_te = np.asarray(_field(te, "x"), dtype=np.float32), np.asarray(_field(te, "digit"))
    if x_tr.ndim != 3 or len(x_tr) == 0 or len(x_tr) != len(y_tr):
        raise ValueError(f"training features must be (N, n_mels, n_frames) with N >= 1 labels, got {x_tr.shape}")
    cfg = cfg or C.ClassifierConfig(n_mels=x_tr.shape[1], n_frames=x_tr.shape[2])
    if (cfg.n_mels, cfg.n_frames) != x_tr.shape[1:]:
        raise ValueError(f"features are {x_tr.shape[1]} x {x_tr.shape[2]} but the classifier config "
                         f"expects {cfg.n_mels} x {cfg.n_frames}")
    out_dir = Path(out_dir)
    outdir.hold(out_dir)  # a writable folder, locked until train returns
    last = out_dir / "last.npz"
    norm = {k: to_numpy(v) for k, v in C.norm_stats(x_tr).items()}
    params, opt, start, history, train_time, n_seen, loss_sum = C.init_params(cfg, seed), {}, 0, [], 0.0, 0, 0.0
    if resume and last.is_file():
        ck = checkpoint.load(last, kind="classifier")
        checkpoint.check_resumable(ck, last, ("step", "history", "train_seconds", "samples_seen", "epoch_loss_sum"))
        if ck["config"] != cfg.to_dict():
            raise ValueError(f"{last} was trained with config {ck['config']}, not {cfg.to_dict()}")
        params = {k: asarray(v) for k, v in ck["params"].items()}
        opt, norm = _opt_to_backend(ck["opt_state"]), {"mean": ck["extra"]["norm_mean"], "std": ck["extra"]["norm_std"]}
        m = ck["meta"]
        start, history, train_time, n_seen, loss_sum = (m["step"], m["history"], m["train_seconds"],
                                                        m["samples_seen"], m["epoch_loss_sum"])
        if not quiet:
            print(f"resuming from {last} at step {start}", flush=True)
    elif resume and not quiet:
        print(f"no {last} to resume from; starting fresh", flush=True)

    N = len(x_tr)
    steps_per_epoch = math.ceil(N / batch)
    total = epochs * steps_per_epoch  # the LR schedule spans this; resume with the same --epochs
    warmup = min(100, total // 10)
    no_decay = tuple(k for k in params if k.endswith("_b"))
    prog = Progress(total, "classifier", every=every, start_step=start, stream=_Null() if quiet else None)

    def save_state(step, interrupted=False):
        C.save_classifier(last, params, cfg, norm, opt_state=opt,
                          meta={"kind": "classifier", "step": step, "epoch": step / steps_per_epoch, "history": history,
                                "train_seconds": train_time, "samples_seen": n_seen,
                                "epoch_loss_sum": loss_sum, "interrupted": interrupted, "seed": seed})

    # Every random draw depends only on (seed, epoch, step): the epoch's shuffle comes from
    # rng([seed, epoch]) and each batch's augmentation from rng([seed, epoch, step]), so a
    # run resumed at any step (after Ctrl-C, mid-epoch) continues bit for bit.
    step, t0 = start, time.perf_counter()
    try:
        while step < total:
            epoch, i = divmod(step, steps_per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(N)  # (N,)
            idx = order[i * batch:(i + 1) * batch]  # (B,)
            g = np.random.default_rng([seed, epoch, step])
            xb = augment(x_tr[idx], g, norm) if use_augment else C.standardise(x_tr[idx], norm)
            loss, _, cache = C.forward(params, xb, y_tr[idx])
            loss = check_finite(loss, step)
            grads, gnorm = clip_grad_norm(C.backward(cache), clip)
            adam_step(params, grads, opt, lr_at(step, lr, warmup, total, min_lr=lr * 0.02),
                      weight_decay=weight_decay, no_decay=no_decay)
            loss_sum += loss * len(idx)
            n_seen += len(idx)
            step += 1
            prog.update(step, len(idx), epoch=epoch + 1, loss=loss, gnorm=gnorm)
            if step % steps_per_epoch == 0 or step == total:
                train_time += time.perf_counter() - t0
                acc, _, _ = evaluate(params, norm, x_te, y_te)
                history.append({"epoch": epoch + 1, "train_loss": loss_sum / N, "test_acc": acc})
                if not quiet:
                    print(f"epoch {epoch + 1}/{epochs}: train loss {loss_sum / N:.4f}, "
                          f"test accuracy {acc:.4f}", flush=True)
                loss_sum = 0.0
                save_state(step)
                t0 = time.perf_counter()
    except KeyboardInterrupt:
        train_time += time.perf_counter() - t0
        save_state(step, interrupted=True)
        raise

    acc, pred, conf = evaluate(params, norm, x_te, y_te)
    train_acc, _, _ = evaluate(params, norm, x_tr, y_tr)
    per_digit = (np.diag(conf) / np.maximum(conf.sum(axis=1), 1)).tolist()
    metrics = {"test_accuracy": acc, "train_accuracy": train_acc, "per_digit_accuracy": per_digit,
               "confusion": conf.tolist(), "n_train": N, "n_test": len(x_te), "epochs": epochs,
               "train_seconds": train_time, "samples_per_second": n_seen / max(train_time, 1e-9),
               "history": history, **(meta or {})}
    C.save_classifier(out_dir / "classifier.npz", params, cfg, norm,
                      meta={k: v for k, v in metrics.items() if k != "history"})
    checkpoint.write_json(out_dir / "metrics.json", metrics)
    plot_confusion(out_dir / "confusion.png", conf,
                       f"classifier test accuracy {acc:.3f} (n={len(x_te)})")
    return {"params": params, "cfg": cfg, "norm": norm, "metrics": metrics}


# ----------------------------------------------------------------------------- command line
def add_arguments(p):
    p.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                   help="FSDD (or AudioMNIST) folder; defaults to $MINIVQ_FSDD")
    p.add_argument("--out", default="out/classifier", help="output folder")
    p.add_argument("--epochs", type=cli.positive_int, default=20, help="passes over the training split")
    p.add_argument("--batch", type=cli.positive_int, default=64, help="clips per step")
    p.add_argument("--lr", type=cli.positive_float, default=3e-3, help="peak learning rate (warmup, then cosine)")
    p.add_argument("--seed", type=cli.nonneg_int, default=0, help="initialisation / shuffling / augmentation seed")
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
    try:
        res = train(features, args.out, epochs=epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                    use_augment=not args.no_augment, resume=args.resume,
                    meta={"split": args.split, "max_per_digit": mpd, "data": str(args.data)})
    except KeyboardInterrupt:
        print(f"interrupted; state saved to {Path(args.out) / 'last.npz'} (continue with --resume)")
        return 130
    except NonFiniteLoss as e:
        print(f"error: {e}")
        return 3
    m = res["metrics"]
    print(f"test accuracy {m['test_accuracy']:.4f} (train {m['train_accuracy']:.4f}); "
          f"{m['train_seconds']:.0f} s training, {m['samples_per_second']:.0f} samples/s; "
          f"wrote {Path(args.out) / 'classifier.npz'} and metrics.json")
    return 0
