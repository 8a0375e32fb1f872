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
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint
from minivq import listener as L
from minivq.optim import adam_step, clip_grad_norm, lr_at
from minivq.progress import NonFiniteLoss, Progress, check_finite

SPEED, SPEED_P = 0.1, 0.5
GAIN_DB = 12.0
SHIFT = 800            # samples (100 ms at 8 kHz)
NOISE_P, SNR_DB = 0.5, (5.0, 40.0)
BAND_MASK = 6          # mel bands (of 40)
TIME_MASK, TIME_MASKS = 8, 2  # frames (10 ms each), stripes


def load_split(root, split_name="official", max_per_digit=None, quiet=False):
    """-> (train, test), each dict(waves [(N_i,) float32 at 8 kHz], digit (N,) int64, path [str]).
    Unreadable or silent files are skipped with one stderr line each."""
    from minivq import audio, data
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
                if not quiet:
                    print(f"skipped {e}", file=sys.stderr)
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
    lm = L.log_mel_frames(augment_wave(w, g), cfg)  # (M, T)
    span = L.speech_span(lm, cfg)  # found before masking, as on the clean clip
    width = int(g.integers(0, BAND_MASK + 1))
    start = int(g.integers(0, cfg.n_mels - width + 1))
    lm[start:start + width] = lm.mean(axis=0)  # (width, T) stripe: the frame's mean log energy
    return L.features_from_log_mel(lm, cfg, span)


def time_masks(x, lengths, g):
    """Zero TIME_MASKS stripes of up to TIME_MASK frames inside each clip of x (B, C0, 1, T) (a new array)."""
    x = x.copy()
    for i, n in enumerate(lengths):
        for _ in range(TIME_MASKS):
            width = int(g.integers(0, min(TIME_MASK, n // 4) + 1))
            start = int(g.integers(0, n - width + 1))
            x[i, :, :, start:start + width] = 0.0
    return x


def batches(lengths, batch, g):
    """Shuffled batches of clip indices, each from a run of 16 batches sorted by length (less padding)."""
    order = g.permutation(len(lengths))  # (N,)
    out = []
    for i in range(0, len(order), 16 * batch):
        chunk = order[i:i + 16 * batch]
        chunk = chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
        out += [chunk[j:j + batch] for j in range(0, len(chunk), batch)]
    return [out[k] for k in g.permutation(len(out))]


def evaluate(listener, feats, digit, n_classes=10):
    """Clean features [(C0, T_i)] + digits (N,) -> (accuracy, predictions (N,), confusion (K, K))."""
    params, cfg, norm = listener
    order = np.argsort([f.shape[1] for f in feats], kind="stable")
    pred = np.zeros(len(feats), dtype=np.int64)
    for i in range(0, len(order), 128):
        idx = order[i:i + 128]
        x, lengths = L.standardise([feats[j] for j in idx], norm)
        pred[idx] = L.predict(params, x, lengths, cfg).argmax(axis=1)
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)  # rows: true digit, columns: heard
    np.add.at(conf, (np.asarray(digit), pred), 1)
    return float((pred == digit).mean()), pred, conf


def train(train_set, test_set, out_dir, cfg=None, epochs=40, batch=32, lr=2e-3, seed=0, weight_decay=1e-2,
          clip=5.0, use_augment=True, quiet=False, meta=None):
    """Train on train_set, test on test_set (dicts from load_split), write listener.npz and
    metrics.json into out_dir. use_augment=False trains on the clean features (an ablation).
    Returns dict(params, cfg, norm, metrics)."""
    cfg = cfg or L.ListenerConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_feat = time.perf_counter()
    clean_tr = [L.features(w, 8000, cfg) for w in train_set["waves"]]  # [(C0, T_i)]
    clean_te = [L.features(w, 8000, cfg) for w in test_set["waves"]]
    norm = L.norm_stats(clean_tr)
    y_tr = train_set["digit"]
    if not quiet:
        print(f"front end: {len(clean_tr)} train / {len(clean_te)} test clips in "
              f"{time.perf_counter() - t_feat:.1f} s", flush=True)
    params, opt = L.init_params(cfg, seed), {}
    no_decay = tuple(k for k in params if k.endswith("_b"))
    steps_per_epoch = math.ceil(len(y_tr) / batch)
    total = epochs * steps_per_epoch
    warmup = min(100, total // 10)
    prog = Progress(total, "listener", every=5.0, stream=open(os.devnull, "w") if quiet else None)
    history, step, t0, loss_sum, n_seen = [], 0, time.perf_counter(), 0.0, 0
    raw_len = [len(w) for w in train_set["waves"]]
    for epoch in range(epochs):
        for idx in batches(raw_len, batch, np.random.default_rng([seed, epoch])):
            g = np.random.default_rng([seed, epoch, step])
            if use_augment:
                x, lengths = L.standardise([augmented_features(train_set["waves"][i], g, cfg) for i in idx], norm)
                x = time_masks(x, lengths, g)
            else:
                x, lengths = L.standardise([clean_tr[i] for i in idx], norm)
            loss, _, cache = L.forward(params, x, lengths, y_tr[idx], strides=cfg.strides)
            loss = check_finite(loss, step)
            grads, gnorm = clip_grad_norm(L.backward(cache), clip)
            adam_step(params, grads, opt, lr_at(step, lr, warmup, total, min_lr=lr * 0.02),
                      weight_decay=weight_decay, no_decay=no_decay)
            loss_sum += loss * len(idx)
            n_seen += len(idx)
            step += 1
            prog.update(step, len(idx), epoch=epoch + 1, loss=loss, gnorm=gnorm)
        acc, _, _ = evaluate((params, cfg, norm), clean_te, test_set["digit"])
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(y_tr), "test_acc": acc})
        if not quiet:
            print(f"epoch {epoch + 1}/{epochs}: train loss {loss_sum / len(y_tr):.4f}, test accuracy {acc:.4f}",
                  flush=True)
        loss_sum = 0.0
    train_time = time.perf_counter() - t0
    acc, pred, conf = evaluate((params, cfg, norm), clean_te, test_set["digit"])
    train_acc, _, _ = evaluate((params, cfg, norm), clean_tr, y_tr)
    metrics = {"test_accuracy": acc, "train_accuracy": train_acc,
               "per_digit_accuracy": (np.diag(conf) / np.maximum(conf.sum(axis=1), 1)).tolist(),
               "confusion": conf.tolist(), "n_train": len(y_tr), "n_test": len(clean_te), "epochs": epochs,
               "batch": batch, "lr": lr, "seed": seed, "weight_decay": weight_decay, "augment": use_augment,
               "n_params": int(sum(int(np.prod(p.shape)) for p in params.values())),
               "train_seconds": train_time, "samples_per_second": n_seen / max(train_time, 1e-9),
               "config": cfg.to_dict(), "history": history, **(meta or {})}
    L.save_listener(out_dir / "listener.npz", params, cfg, norm,
                    meta={k: v for k, v in metrics.items() if k not in ("history", "config")})
    checkpoint.write_json(out_dir / "metrics.json", metrics)
    return {"params": params, "cfg": cfg, "norm": norm, "metrics": metrics}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minivq.train_listener", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                   help="FSDD folder; defaults to $MINIVQ_FSDD")
    p.add_argument("--out", default="out/listener", help="output folder")
    p.add_argument("--epochs", type=int, default=40, help="passes over the training split")
    p.add_argument("--batch", type=int, default=32, help="clips per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warmup, then cosine)")
    p.add_argument("--seed", type=int, default=0, help="initialisation / shuffling / augmentation seed")
    p.add_argument("--split", choices=("official", "speakers"), default="official",
                   help="official: FSDD takes 0-4 are the test set; speakers: held-out speakers")
    p.add_argument("--no-augment", action="store_true", help="train on clean features only (an ablation)")
    d = L.ListenerConfig()
    p.add_argument("--win", type=int, default=d.win, help="analysis window (samples at 8 kHz)")
    p.add_argument("--hop", type=int, default=d.hop, help="frame step (samples at 8 kHz)")
    p.add_argument("--n-fft", type=int, default=d.n_fft, help="FFT size (>= --win)")
    p.add_argument("--n-mels", type=int, default=d.n_mels, help="mel bands")
    p.add_argument("--n-ceps", type=int, default=d.n_ceps, help="cepstra kept after the DCT")
    p.add_argument("--kernel", type=int, default=d.kernel, help="width of the 1-D convolutions (frames, odd)")
    p.add_argument("--strides", type=int, nargs=3, default=list(d.strides), help="strides of the three convolutions")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 epochs on 30 clips per digit")
    a = p.parse_args(argv)
    try:
        if not a.data:
            raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
        for name, v in (("--epochs", a.epochs), ("--batch", a.batch)):
            if v < 1:
                raise ValueError(f"{name} must be at least 1, got {v}")
        if not a.lr > 0:
            raise ValueError(f"--lr must be positive, got {a.lr}")
        epochs, mpd = (min(a.epochs, 3), 30) if a.quick else (a.epochs, None)
        t0 = time.perf_counter()
        cfg = L.ListenerConfig(win=a.win, hop=a.hop, n_fft=a.n_fft, n_mels=a.n_mels, n_ceps=a.n_ceps,
                               kernel=a.kernel, strides=tuple(a.strides))
        tr, te = load_split(a.data, a.split, max_per_digit=mpd)
        print(f"data: {len(tr['waves'])} train / {len(te['waves'])} test recordings ({a.split} split) "
              f"read in {time.perf_counter() - t0:.1f} s", flush=True)
        res = train(tr, te, a.out, cfg, epochs=epochs, batch=a.batch, lr=a.lr, seed=a.seed,
                    use_augment=not a.no_augment,
                    meta={"data": str(a.data), "split": a.split, "max_per_digit": mpd,
                          "command": "python -m minivq.train_listener " + " ".join(sys.argv[1:] if argv is None else argv)})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    m = res["metrics"]
    print(f"test accuracy {m['test_accuracy']:.4f} (train {m['train_accuracy']:.4f}); "
          f"{m['train_seconds']:.0f} s training; wrote {Path(a.out) / 'listener.npz'} and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
