"""Train the listener (the second judge): python -m minivq.train_listener --data FSDD --out DIR

Trains minivq.listener on the recordings of FSDD's official training split (takes 5-49)
and tests it on the official test split (takes 0-4); ``--split speakers`` holds out
speakers instead (as minivq.data defines them). Writes into ``--out``:
    listener.npz   params, ListenerConfig, per-coefficient norm stats, meta (accuracy, timing)
    metrics.json   test accuracy, per-digit accuracy, confusion, history, timing, command

Augmentation (training only; each batch's draws depend on (seed, epoch, step) alone) changes
what any recording may vary in, and never shows the listener what minivq's models or its
vocoder produce (no VQ-VAE reconstructions, no Griffin-Lim audio):
  speed        with probability SPEED_P, resampled by a factor in [1 - SPEED, 1 + SPEED]
               (tempo and pitch together, as from a different speaker)
  gain         a volume change of up to +-GAIN_DB dB
  time shift   up to SHIFT samples of silence before and after (moves the frame grid)
  noise        with probability NOISE_P, white noise at an SNR drawn from SNR_DB (dB)
  masks        SpecAugment: one stripe of up to BAND_MASK mel bands replaced by the frame's
               mean log energy before the DCT, and TIME_MASKS stripes of up to TIME_MASK
               frames set to 0 after standardisation

Library use (no argparse): ``train(train_set, test_set, out_dir, cfg, TrainConfig(epochs=...))``
with the dicts ``load_split`` returns. The listener keeps no resumable state (it trains in
minutes): Ctrl-C ends the run after the current step and writes nothing, a NaN/inf loss too;
the command line then exits 130 or 3 (trainer.run_cli), like the other trainers.

Size letters: N clips, B batch, C0 input channels (cepstra and deltas), T frames, K classes.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from minivq import audio, checkpoint, cli, data
from minivq import listener as L
from minivq import mfcc as M
from minivq.metrics import confusion_matrix
from minivq.optim import adam_step, clip_grad_norm, lr_at
from minivq import trainer  # the shared skeleton: stop flag, progress, settings, exit codes
from minivq.progress import NonFiniteLoss, check_finite  # noqa: F401 (NonFiniteLoss: re-exported)
from minivq import outdir  # output folders: checked, locked, recorded

SPEED, SPEED_P = 0.1, 0.5
GAIN_DB = 12.0
SHIFT = 800            # samples (100 ms at 8 kHz)
NOISE_P, SNR_DB = 0.5, (5.0, 40.0)
BAND_MASK = 6          # mel bands (of 40)
TIME_MASK, TIME_MASKS = 8, 2  # frames (10 ms each), stripes


def load_split(root, split_name="official", max_per_digit=None, verbose=True):
    """-> (train, test), each dict(waves [(N_i,) float32 at 8 kHz], digit (N,) int64, path [str]).
    Unreadable or silent files are skipped with one stderr line each."""
    listing = data.scan(root)
    train, test = data.split_clips(listing, split_name)
    out = []
    for clips in (data.subset(train, max_per_digit), data.subset(test, max_per_digit)):
        waves, digit, paths = [], [], []
        for c in clips:
            try:
                w = audio.load_wav(c.path, 8000)
                if np.abs(w).max() < data.SILENT_PEAK:
                    raise ValueError(f"{c.path} is silent")
            except ValueError as e:
                trainer.say(verbose, f"skipped {e}")
                continue
            waves.append(w)
            digit.append(c.digit)
            paths.append(str(c.path))
        out.append({"waves": waves, "digit": np.array(digit, dtype=np.int64), "path": paths})
    if not out[0]["waves"] or not out[1]["waves"]:
        raise ValueError(f"data folder {root} gives {len(out[0]['waves'])} training and {len(out[1]['waves'])} "
                         "test clips; the listener needs both")
    return out[0], out[1]


def augment_wave(w, g):
    """(N,) float wave at 8 kHz, g: numpy Generator -> (N',) augmented wave (float64)."""
    w = np.asarray(w, dtype=np.float64)
    if g.random() < SPEED_P:  # linear interpolation onto a denser / sparser time grid
        n = max(2, int(round(len(w) / g.uniform(1 - SPEED, 1 + SPEED))))
        w = np.interp(np.linspace(0, len(w) - 1, n), np.arange(len(w)), w)  # (n,)
    w = w * 10.0 ** (g.uniform(-GAIN_DB, GAIN_DB) / 20.0)
    w = np.pad(w, (int(g.integers(0, SHIFT + 1)), int(g.integers(0, SHIFT + 1))))  # (N',)
    if g.random() < NOISE_P:
        power = float(np.mean(w ** 2))
        snr = g.uniform(*SNR_DB)
        w = w + g.standard_normal(len(w)) * math.sqrt(power * 10.0 ** (-snr / 10.0))
    return w


def augmented_features(w, g, cfg):
    """One training clip: augmented wave -> log-mel with one band stripe masked -> (C0, T') raw features."""
    lm = M.log_mel_frames(augment_wave(w, g), cfg)  # (M, T)
    span = M.speech_span(lm, cfg)  # found before masking, as on the clean clip
    width = int(g.integers(0, BAND_MASK + 1))
    start = int(g.integers(0, cfg.n_mels - width + 1))
    lm[start:start + width] = lm.mean(axis=0)  # (width, T) stripe: the frame's mean log energy
    return M.features_from_log_mel(lm, cfg, span)


def time_masks(x, lengths, g):
    """Zero TIME_MASKS stripes of up to TIME_MASK frames inside each clip of x (B, C0, 1, T) (a new array)."""
    x = x.copy()
    for i, n in enumerate(lengths):
        for _ in range(TIME_MASKS):
            width = int(g.integers(0, min(TIME_MASK, n // 4) + 1))
            start = int(g.integers(0, n - width + 1))
            x[i, :, :, start:start + width] = 0.0
    return x


def batches(lengths, batch_size, g):
    """Shuffled batches of clip indices, each from a run of 16 batches sorted by length (less padding)."""
    order = g.permutation(len(lengths))  # (N,)
    out = []
    for i in range(0, len(order), 16 * batch_size):
        chunk = order[i:i + 16 * batch_size]
        chunk = chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [out[k] for k in g.permutation(len(out))]


def accuracy_confusion(listener, feats, digit, n_classes=10):
    """Clean features [(C0, T_i)] + digits (N,) -> (accuracy, predictions (N,), confusion (K, K))."""
    params, cfg, norm = listener
    order = np.argsort([f.shape[1] for f in feats], kind="stable")
    pred = np.zeros(len(feats), dtype=np.int64)
    for i in range(0, len(order), 128):
        idx = order[i:i + 128]
        x, lengths = L.standardise([feats[j] for j in idx], norm)
        pred[idx] = L.predict(params, x, lengths, cfg).argmax(axis=1)
    conf = confusion_matrix(digit, pred, num_classes=n_classes)  # (K, K) rows: true digit, columns: heard
    return float((pred == digit).mean()), pred, conf


@dataclasses.dataclass
class TrainConfig(trainer.TrainSettings):
    epochs: int = 40            # passes over the training split
    batch_size: int = 32        # clips per step (the last, partial batch of an epoch is kept)
    lr: float = 2e-3            # peak learning rate (linear warmup, then cosine to lr * 0.02)
    grad_clip: float = 5.0      # clip the global gradient norm at this value
    weight_decay: float = 1e-2  # AdamW decay on weights (not biases)
    warmup: int = None          # linear warmup steps (None: min(100, total steps // 10))
    seed: int = 0               # initialisation, shuffling, augmentation
    log_every: float = 5.0      # seconds between progress lines
    augment: bool = True        # augment the training clips (module docstring); False: an ablation

    RULES = dict(trainer.SHARED_RULES, grad_clip=cli.positive_float)  # a clip of 0 would zero every step
    OPTIONAL = ("warmup",)


def length_batch_index(seed, step, steps_per_epoch, lengths, batch_size):
    """-> (epoch, clip indices (B,)) of ``step``: batch i of its epoch's length-sorted batches
    (batches()), drawn from rng([seed, epoch]) alone, as trainer.batch_index draws its order.
    batches() gives ceil(N / B) batches, so steps_per_epoch = ceil(N / B)."""
    epoch, i = divmod(step, steps_per_epoch)
    return epoch, batches(lengths, batch_size, np.random.default_rng([seed, epoch]))[i]


def step(params, opt, x, lengths, y, cfg, tcfg, n, total, warmup, no_decay):
    """One optimisation step (number n of total) on x (B, C0, 1, T) with valid lengths (B,) and
    digits y (B,): forward, backward, clip, AdamW. Updates params and opt in place
    -> (loss, gradient norm)."""
    loss, _, cache = L.forward(params, x, lengths, y, strides=cfg.strides)
    loss = check_finite(loss, n)
    grads, gnorm = clip_grad_norm(L.backward(cache), tcfg.grad_clip)
    adam_step(params, grads, opt, lr_at(n, tcfg.lr, warmup, total, min_lr=tcfg.lr * 0.02),
              weight_decay=tcfg.weight_decay, no_decay=no_decay)
    return loss, gnorm


def _batch(waves, clean, idx, norm, cfg, tcfg, epoch, n):
    """The standardised (and augmented) batch of step n -> (x (B, C0, 1, T), lengths (B,)).
    Every augmentation draw comes from rng([seed, epoch, step]) alone."""
    if not tcfg.augment:
        return L.standardise([clean[i] for i in idx], norm)
    g = np.random.default_rng([tcfg.seed, epoch, n])
    x, lengths = L.standardise([augmented_features(waves[i], g, cfg) for i in idx], norm)
    return time_masks(x, lengths, g), lengths


def _front_end(train_set, test_set, cfg, verbose):
    """-> (clean training features [(C0, T_i)], clean test features, norm stats of the training ones)."""
    t0 = time.perf_counter()
    clean_tr = [L.features(w, 8000, cfg) for w in train_set["waves"]]  # [(C0, T_i)]
    clean_te = [L.features(w, 8000, cfg) for w in test_set["waves"]]
    trainer.say(verbose, f"front end: {len(clean_tr)} train / {len(clean_te)} test clips in "
                         f"{time.perf_counter() - t0:.1f} s")
    return clean_tr, clean_te, L.norm_stats(clean_tr)


def _loop(total, run_step, verbose):
    """Run ``n = run_step(n)`` from 0 to ``total`` (trainer.loop for a trainer without resumable
    state). Ctrl-C lets the running step finish; it, or a KeyboardInterrupt from a callback,
    raises trainer.Interrupted with nothing written."""
    n = 0
    with trainer.StopFlag() as flag:
        try:
            while n < total:
                n = run_step(n)
                if flag.stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            err = trainer.Interrupted(n, None, message=f"interrupted at step {n}; nothing was written "
                                                       "(the listener does not resume: start it again)")
            trainer.say(verbose, str(err))
            raise err from None


def _finish(out_dir, S, listener, clean_tr, y_tr, clean_te, y_te, tcfg, meta):
    """Final evaluation -> metrics; writes listener.npz and metrics.json."""
    params, cfg, norm = listener
    acc, pred, conf = accuracy_confusion(listener, clean_te, y_te)
    train_acc, _, _ = accuracy_confusion(listener, clean_tr, y_tr)
    metrics = {"test_accuracy": acc, "train_accuracy": train_acc,
               "per_digit_accuracy": (np.diag(conf) / np.maximum(conf.sum(axis=1), 1)).tolist(),
               "confusion": conf.tolist(), "n_train": len(y_tr), "n_test": len(clean_te), "epochs": tcfg.epochs,
               "batch": tcfg.batch_size, "lr": tcfg.lr, "seed": tcfg.seed, "weight_decay": tcfg.weight_decay,
               "augment": tcfg.augment, "n_params": int(sum(int(np.prod(p.shape)) for p in params.values())),
               "train_seconds": S["train_seconds"], "samples_per_second": S["samples_seen"] / max(S["train_seconds"], 1e-9),
               "config": cfg.to_dict(), "history": S["history"], **(meta or {})}
    with trainer.StopFlag():  # Ctrl-C waits for both files: never a new listener.npz beside an old metrics.json
        L.save_listener(out_dir / "listener.npz", params, cfg, norm,
                        meta={k: v for k, v in metrics.items() if k not in ("history", "config")})
        checkpoint.write_json(out_dir / "metrics.json", metrics)
    return metrics


@outdir.scoped
def train(train_set, test_set, out_dir, cfg=None, tcfg=None, callback=None, verbose=True, meta=None):
    """Train on train_set, test on test_set (dicts from load_split: waves [(N_i,) at 8 kHz],
    digit (N,)), write listener.npz and metrics.json into out_dir. tcfg: TrainConfig
    (augment=False trains on the clean features, an ablation). callback(step, loss): after every
    step. meta: extra entries for metrics.json. Returns dict(params, cfg, norm, metrics).
    Raises NonFiniteLoss, or trainer.Interrupted (a KeyboardInterrupt) after Ctrl-C; either way
    nothing is written.
    """
    tcfg = (tcfg or TrainConfig()).check()
    cfg = cfg or L.ListenerConfig()
    out_dir = Path(out_dir)
    outdir.hold(out_dir)  # a writable folder, locked until train returns
    clean_tr, clean_te, norm = _front_end(train_set, test_set, cfg, verbose)
    waves, y_tr, y_te = train_set["waves"], train_set["digit"], test_set["digit"]
    raw_len = [len(w) for w in waves]  # batches group clips of similar length (less padding)
    params, opt = L.init_params(cfg, tcfg.seed), {}
    no_decay = tuple(k for k in params if k.endswith("_b"))
    N, B = len(y_tr), tcfg.batch_size
    spe = math.ceil(N / B)  # steps per epoch
    total = tcfg.epochs * spe
    warmup = min(100, total // 10) if tcfg.warmup is None else tcfg.warmup
    prog = trainer.progress(total, "listener", tcfg, 0, verbose)
    S = {"history": [], "samples_seen": 0, "epoch_loss_sum": 0.0}
    t0 = time.perf_counter()

    def run_step(n):
        epoch, idx = length_batch_index(tcfg.seed, n, spe, raw_len, B)  # (B,)
        x, lengths = _batch(waves, clean_tr, idx, norm, cfg, tcfg, epoch, n)  # (B, C0, 1, T), (B,)
        loss, gnorm = step(params, opt, x, lengths, y_tr[idx], cfg, tcfg, n, total, warmup, no_decay)
        S["epoch_loss_sum"] += loss * len(idx)
        S["samples_seen"] += len(idx)
        if prog:
            prog.update(n + 1, len(idx), epoch=epoch + 1, loss=loss, gnorm=gnorm)
        if callback is not None:
            callback(n + 1, loss)
        if (n + 1) % spe == 0:  # end of an epoch: evaluate on the clean test clips
            acc, _, _ = accuracy_confusion((params, cfg, norm), clean_te, y_te)
            S["history"].append({"epoch": epoch + 1, "train_loss": S["epoch_loss_sum"] / N, "test_acc": acc})
            trainer.say(verbose, f"epoch {epoch + 1}/{tcfg.epochs}: train loss {S['epoch_loss_sum'] / N:.4f}, "
                                 f"test accuracy {acc:.4f}")
            S["epoch_loss_sum"] = 0.0
        return n + 1

    _loop(total, run_step, verbose)
    S["train_seconds"] = time.perf_counter() - t0
    metrics = _finish(out_dir, S, (params, cfg, norm), clean_tr, y_tr, clean_te, y_te, tcfg, meta)
    return {"params": params, "cfg": cfg, "norm": norm, "metrics": metrics}


# ----------------------------------------------------------------------------- command line
def add_arguments(p):
    p.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                   help="FSDD folder; defaults to $MINIVQ_FSDD")
    p.add_argument("--out", default="out/listener", help="output folder")
    trainer.add_arguments(p, TrainConfig(), "clips")  # --epochs --batch-size/--batch --lr --grad-clip --weight-decay --warmup --seed --log-every
    p.add_argument("--split", choices=("official", "speakers"), default="official",
                   help="official: FSDD takes 0-4 are the test set; speakers: held-out speakers")
    p.add_argument("--max-per-digit", type=cli.positive_int, default=None, help="use at most this many clips per digit")
    p.add_argument("--no-augment", action="store_true", help="train on clean features only (an ablation)")
    d = L.ListenerConfig()
    p.add_argument("--win", type=cli.positive_int, default=d.win, help="analysis window (samples at 8 kHz)")
    p.add_argument("--hop", type=cli.positive_int, default=d.hop, help="frame step (samples at 8 kHz)")
    p.add_argument("--n-fft", type=cli.positive_int, default=d.n_fft, help="FFT size (>= --win)")
    p.add_argument("--n-mels", type=cli.positive_int, default=d.n_mels, help="mel bands")
    p.add_argument("--n-ceps", type=cli.positive_int, default=d.n_ceps, help="cepstra kept after the DCT")
    p.add_argument("--kernel", type=cli.positive_int, default=d.kernel, help="width of the 1-D convolutions (frames, odd)")
    p.add_argument("--strides", type=cli.positive_int, nargs=3, default=list(d.strides),
                   help="strides of the three convolutions")
    p.add_argument("--force", action="store_true", help="write OUT even where another run's files would be overwritten")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 epochs on 30 clips per digit")


@outdir.scoped
def run(args, argv=None):
    """A parsed command line -> exit code (argv: the arguments as given, for metrics.json)."""
    if not args.data:
        raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
    epochs, mpd = args.epochs, args.max_per_digit
    if args.quick:
        epochs, mpd = min(epochs, 3), mpd or 30
    cfg = L.ListenerConfig(win=args.win, hop=args.hop, n_fft=args.n_fft, n_mels=args.n_mels, n_ceps=args.n_ceps,
                           kernel=args.kernel, strides=tuple(args.strides))
    outdir.claim(args.out, "listener", args)  # writable, locked, not another run's files (see minivq/outdir.py)
    t0 = time.perf_counter()
    tr, te = load_split(args.data, args.split, max_per_digit=mpd)
    print(f"data: {len(tr['waves'])} train / {len(te['waves'])} test recordings ({args.split} split) "
          f"read in {time.perf_counter() - t0:.1f} s", flush=True)
    tcfg = trainer.settings_from_args(TrainConfig, args, epochs=epochs, augment=not args.no_augment)
    command = "python -m minivq.train_listener " + " ".join(sys.argv[1:] if argv is None else argv)
    code, res = trainer.run_cli(lambda: train(tr, te, args.out, cfg, tcfg,
                                              meta={"data": str(args.data), "split": args.split, "max_per_digit": mpd,
                                                    "command": command}),
                                os.devnull)  # no checkpoint to name: a Ctrl-C outside the steps says nothing was saved
    if code:
        return code
    m = res["metrics"]
    print(f"test accuracy {m['test_accuracy']:.4f} (train {m['train_accuracy']:.4f}); "
          f"{m['train_seconds']:.0f} s training, {m['samples_per_second']:.0f} samples/s; "
          f"wrote {Path(args.out) / 'listener.npz'} and metrics.json")
    return 0


def main(argv=None):
    p = cli.ArgumentParser(prog="python -m minivq.train_listener", description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    try:
        return run(p.parse_args(argv), argv)  # a bad option is a cli.UsageError (a ValueError)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while reading the data: nothing was written
        print("interrupted; nothing was written", file=sys.stderr)
        return trainer.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
