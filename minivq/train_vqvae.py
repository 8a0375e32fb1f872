"""Train the VQ-VAE on log-mel features: python -m minivq.train vqvae --data PATH --cr 16 --out DIR

Library use (no argparse): ``train(cfg, features, out_dir, TrainConfig(...))``. A trained model
is used through minivq.vqvae, never through this trainer: ``load_vqvae(path) -> (params, cfg,
norm)``, ``encode_logmel`` / ``decode_logmel`` (raw, un-standardised log-mels in and out).

Outputs in OUT: last.npz (resumable state, written atomically each epoch and on Ctrl-C),
vqvae.npz (final params + config + normalisation), metrics.json, tokens.npz (train/test token
grids with digit/speaker labels, for the transformer), recon.png, recon_*.wav.

Reproducibility: every random choice is derived from the seed and a counter (epoch for
the data order, step for dead-code restarts), so a resumed run needs no saved generator
state and repeats the uninterrupted run exactly.
"""
import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli, data, optim
from minivq import quantizer as Q
from minivq import vqvae as V
from minivq.backend import asarray
from minivq.progress import NonFiniteLoss, Progress, check_finite
from minivq.vqvae_report import finish_run  # host-side end of a run: metrics, tokens, figure, WAVs
from minivq import outdir  # output folders: checked, locked, recorded


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 8             # passes over the training split (CR=16: ~1 CPU-second per step of 32)
    batch: int = 32             # clips per step
    lr: float = 2e-3            # peak Adam learning rate (linear warmup, then cosine to lr/10)
    warmup: int = 30            # warmup steps
    clip: float = 5.0           # clip the global gradient norm at this value (0: off)
    seed: int = 0               # initialisation, data order, k-means, restarts
    kmeans_init: bool = True    # initialise the codebook by k-means of the first batch's z_e
    restart_after: int = 10     # move codes unused for this many steps to encoder outputs (0: off)
    restart_share: float = None  # also move codes used less than this fraction of an even share
    #                              (0: off; None: restart_share_for(cr), 0.5 at CR=4, off at CR=16)
    log_every: float = 10.0     # seconds between progress lines

    def __post_init__(self):
        _check_train_config(self)

    def to_dict(self):
        return dataclasses.asdict(self)


TRAIN_RULES = dict(epochs=cli.positive_int, batch=cli.positive_int, lr=cli.positive_float, warmup=cli.nonneg_int,
                   clip=cli.nonneg_float, seed=cli.nonneg_int, restart_after=cli.nonneg_int,
                   restart_share=cli.unit_interval, log_every=cli.nonneg_float)
MODEL_RULES = dict(in_size=cli.positive_int, ch1=cli.positive_int, hidden=cli.positive_int,
                   res_hidden=cli.positive_int, n_res=cli.nonneg_int, D=cli.positive_int, K=cli.positive_int,
                   beta=cli.nonneg_float, ema_decay=cli.fraction)


def _check_train_config(tcfg):
    """TrainConfig's numbers, by the same rules as the command line (ValueError naming the field)."""
    cli.check_settings(tcfg.to_dict(), TRAIN_RULES, optional=("restart_share",))


def restart_share_for(cr):
    """Default rare-code restart threshold. At CR=4 more than half of the 32x32 positions of an
    FSDD clip are digital silence (the padding to 1.024 s) and one code ends up holding a
    quarter of all positions; restarting codes below half an even share spreads the others
    (FSDD test perplexity 170 instead of 107, MSE 0.0032 instead of 0.0034; see README).
    CR=16 keeps it off: its codebook is already well used (259 of 512) and the shipped models
    were trained without it."""
    return 0.5 if cr == 4 else 0.0


# ----------------------------------------------------------------------------- checkpoints
def _save_state(path, params, opt_state, qstate, norm, cfg, tcfg, feat_cfg, meta):
    extra = {"norm_mean": np.float64(norm["mean"]), "norm_std": np.float64(norm["std"])}
    extra.update({f"q_{k}": v for k, v in qstate.items()})
    checkpoint.save(path, params, config={"vqvae": cfg.to_dict(), "train": tcfg.to_dict(), "features": feat_cfg},
                    opt_state=opt_state, meta={"kind": "vqvae", **meta}, extra=extra)


# ----------------------------------------------------------------------------- training
def _epoch_order(seed, epoch, n):
    """The data order of one epoch: a permutation derived from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class _StopFlag:
    """SIGINT sets a flag instead of raising, so Ctrl-C stops between steps, never mid-update."""

    def __init__(self):
        self.stop = False
        self.old = None

    def __enter__(self):
        try:
            self.old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self.old = None
        return self

    def _handler(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


@outdir.scoped
def train(cfg, features, out_dir, tcfg=None, resume=False, finish=True, callback=None, verbose=True):
    """Train a VQ-VAE on ``features`` (data.Features: .train/.test with x (N, M, T) raw log-mel,
    digit, speaker; .cfg FeatureConfig) and write outputs to ``out_dir``.

    resume: continue from out_dir/last.npz. finish: write metrics/tokens/figures at the end.
    callback(step, parts): called after every step (may raise KeyboardInterrupt to stop).
    Returns a dict: params, cfg, norm, metrics (when finished), step, history.
    Raises KeyboardInterrupt after saving last.npz when interrupted, NonFiniteLoss on NaN/inf
    (last.npz then still holds the last good epoch)."""
    tcfg = tcfg or TrainConfig()
    cfg.validate()
    cli.check_settings(cfg.to_dict(), MODEL_RULES)
    _check_train_config(tcfg)  # again: fields may have been set after construction
    if tcfg.restart_share is None:  # resolve the per-CR default, so checkpoints record the value used
        tcfg = dataclasses.replace(tcfg, restart_share=restart_share_for(cfg.cr))
    out = Path(out_dir)
    outdir.hold(out)  # a writable folder, locked until train returns
    last = out / "last.npz"
    xtr_raw = features.train.x
    if len(xtr_raw) == 0:
        raise ValueError("the training split is empty")
    if tuple(xtr_raw.shape[1:]) != (cfg.in_size, cfg.in_size):
        raise ValueError(f"features are {xtr_raw.shape[1:]} but the VQ-VAE expects ({cfg.in_size}, {cfg.in_size})")
    feat_cfg = features.cfg.to_dict() if hasattr(features.cfg, "to_dict") else dict(features.cfg or {})
    N = len(xtr_raw)
    B = min(tcfg.batch, N)
    spe = N // B  # steps per epoch (the last partial batch is dropped; it differs every epoch)
    total = tcfg.epochs * spe

    if resume and last.is_file():
        ck = checkpoint.load(last, kind="vqvae")
        checkpoint.check_resumable(ck, last, ("step",))
        saved = V.VQVAEConfig.from_dict(ck["config"]["vqvae"])
        if saved != cfg:
            raise ValueError(f"{last} was trained with a different model config ({saved}); "
                             "use the same --cr/settings or a new --out folder")
        params = {k: asarray(v) for k, v in ck["params"].items()}
        opt_state = {k: {"m": asarray(s["m"]), "v": asarray(s["v"]), "t": int(s["t"])}
                     for k, s in ck["opt_state"].items()}
        qstate = {k[2:]: asarray(v) for k, v in ck["extra"].items() if k.startswith("q_")}
        norm = {"mean": float(ck["extra"]["norm_mean"]), "std": float(ck["extra"]["norm_std"])}
        step = int(ck["meta"]["step"])
        history = ck["meta"].get("history", [])
        elapsed0 = float(ck["meta"].get("train_seconds", 0.0))
        es = ck["meta"].get("epoch_stats")
        epoch_stats = None if es is None else dict(es, counts=np.asarray(es["counts"], np.int64))
        if verbose:
            print(f"resuming from {last} at step {step}/{total}", file=sys.stderr)
    else:
        if resume and verbose:
            print(f"no {last} to resume from; starting fresh", file=sys.stderr)
        norm = V.standardise_stats(xtr_raw)
        params = V.init_params(cfg, seed=tcfg.seed)
        opt_state, step, history, elapsed0, epoch_stats = {}, 0, [], 0.0, None
        qstate = Q.init_state(params["codebook"])
    xtr = V.standardise(xtr_raw, norm)  # (N, 1, M, T)
    names = [k for k in params if not (cfg.ema and k == "codebook")]
    meta = lambda s, el: {"step": s, "epoch": s // spe, "steps_per_epoch": spe, "total_steps": total,  # noqa: E731
                          "history": history, "train_seconds": el, "n_train": N,
                          "epoch_stats": None if epoch_stats is None else dict(epoch_stats, counts=epoch_stats["counts"].tolist())}
    save = lambda s, el: _save_state(last, params, opt_state, qstate, norm, cfg, tcfg, feat_cfg,  # noqa: E731
                                     meta(s, el))

    prog = Progress(total, desc="vqvae", every=tcfg.log_every, start_step=step) if verbose else None
    t0 = time.perf_counter()
    with _StopFlag() as flag:
        try:
            while step < total:
                epoch, i = divmod(step, spe)
                if i == 0 or epoch_stats is None:
                    epoch_stats = {"loss": 0.0, "recon": 0.0, "n": 0, "counts": np.zeros(cfg.K, np.int64)}
                order = _epoch_order(tcfg.seed, epoch, N)
                xb = xtr[asarray(order[i * B:(i + 1) * B])]  # (B, 1, M, T)
                if step == 0 and tcfg.kmeans_init:
                    z_e, _ = V.encoder_forward(params, xb, cfg)  # (B, D, h, w)
                    params["codebook"][...] = Q.kmeans(V._to_vectors(z_e), cfg.K, iters=10, seed=[tcfg.seed, 7])
                    qstate = Q.init_state(params["codebook"])
                loss, parts, cache = V.forward(params, xb, cfg)
                check_finite(loss, step)
                grads = V.backward(cache)
                if tcfg.clip > 0:
                    grads, _ = optim.clip_grad_norm(grads, tcfg.clip)
                lr = optim.lr_at(step, tcfg.lr, tcfg.warmup, total, min_lr=tcfg.lr / 10)
                optim.adam_step({k: params[k] for k in names}, {k: grads[k] for k in names}, opt_state, lr)
                idx, z_e = cache["idx"].reshape(-1), cache["z_e"]
                if cfg.ema:
                    Q.ema_update(params["codebook"], qstate, z_e, idx, decay=cfg.ema_decay)
                dead = Q.restart_dead_codes(params["codebook"], qstate, z_e, idx, after=tcfg.restart_after,
                                            seed=[tcfg.seed, step, 11], min_share=tcfg.restart_share)
                if dead.shape[0] and "codebook" in opt_state:  # fresh codes start with fresh moments
                    opt_state["codebook"]["m"][dead] = 0
                    opt_state["codebook"]["v"][dead] = 0
                step += 1
                st = Q.usage_stats(idx, cfg.K)
                epoch_stats["loss"] += parts["loss"]
                epoch_stats["recon"] += parts["recon"]
                epoch_stats["n"] += 1
                epoch_stats["counts"] += st["hist"]
                if prog:
                    prog.update(step, B, epoch=epoch + 1, loss=parts["loss"], recon=parts["recon"],
                                commit=parts["commit"], ppl=st["perplexity"], active=st["active"],
                                restarts=int(dead.shape[0]), lr=lr)
                if callback is not None:
                    callback(step, parts)
                if step % spe == 0:  # end of an epoch: summary + checkpoint
                    c = epoch_stats["counts"]
                    ep = Q.usage_stats(np.repeat(np.arange(cfg.K), c), cfg.K)
                    history.append({"epoch": epoch + 1, "step": step, "loss": epoch_stats["loss"] / epoch_stats["n"],
                                    "recon": epoch_stats["recon"] / epoch_stats["n"],
                                    "perplexity": ep["perplexity"], "active": ep["active"]})
                    save(step, elapsed0 + time.perf_counter() - t0)
                    if verbose:
                        h = history[-1]
                        print(f"epoch {h['epoch']}/{tcfg.epochs}: loss {h['loss']:.4f} recon {h['recon']:.4f} "
                              f"perplexity {h['perplexity']:.1f} active {h['active']:.2%} -> {last}", file=sys.stderr)
                if flag.stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            save(step, elapsed0 + time.perf_counter() - t0)
            if verbose:
                print(f"interrupted at step {step}/{total}; state saved to {last} (continue with --resume)",
                      file=sys.stderr)
            raise
    train_seconds = elapsed0 + time.perf_counter() - t0
    if step == total and (not history or history[-1]["step"] != step):
        save(step, train_seconds)
    result = {"params": params, "cfg": cfg, "norm": norm, "step": step, "history": history,
              "train_seconds": train_seconds}
    if finish:
        try:
            result["metrics"] = finish_run(params, cfg, norm, features, out, tcfg, history, train_seconds,
                                           verbose=verbose)
        except KeyboardInterrupt:
            if verbose:
                print(f"interrupted while writing the final files; the trained model is saved in {last} "
                      "(continue with --resume to write vqvae.npz, tokens.npz and metrics.json)", file=sys.stderr)
            raise
    return result


# ----------------------------------------------------------------------------- CLI
def add_arguments(p):
    d = TrainConfig()
    p.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                   help="FSDD (or AudioMNIST) folder; defaults to $MINIVQ_FSDD")
    p.add_argument("--cr", type=int, choices=(4, 16), default=16, help="compression ratio: 16 -> 16x16 tokens, 4 -> 32x32")
    p.add_argument("--out", default=None, help="output folder; when omitted, out/vqvae_cr{CR}")
    p.add_argument("--epochs", type=cli.positive_int, default=d.epochs, help="passes over the training split")
    p.add_argument("--batch", type=cli.positive_int, default=d.batch, help="clips per step")
    p.add_argument("--lr", type=cli.positive_float, default=d.lr,
                   help="peak learning rate (warmup, then cosine to lr/10)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="EMA codebook updates (--no-ema: learn the codebook with the codebook loss)")
    p.add_argument("--kmeans-init", action=argparse.BooleanOptionalAction, default=d.kmeans_init,
                   help="initialise the codebook with k-means of the first batch")
    p.add_argument("--restart-after", type=cli.nonneg_int, default=d.restart_after,
                   help="restart codes unused for this many steps (0: never)")
    p.add_argument("--restart-share", type=cli.unit_interval, default=None,
                   help="also restart codes whose smoothed usage is below this fraction of an even share "
                        "(0: off; default 0.5 at CR=4, off at CR=16)")
    p.add_argument("--K", type=cli.positive_int, default=512, help="codebook size")
    p.add_argument("--D", type=cli.positive_int, default=64, help="code dimension")
    p.add_argument("--hidden", type=cli.positive_int, default=128, help="trunk channels")
    p.add_argument("--seed", type=cli.nonneg_int, default=d.seed, help="initialisation / data order seed")
    p.add_argument("--split", choices=("official", "speakers"), default="official",
                   help="official: FSDD takes 0-4 are the test set; speakers: held-out speakers")
    p.add_argument("--max-per-digit", type=cli.positive_int, default=None, help="use at most this many clips per digit")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--force", action="store_true", help="write OUT even where another run's files would be overwritten")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs on 30 clips per digit")
    p.add_argument("--log-every", type=cli.nonneg_float, default=d.log_every, help="seconds between progress lines")


@outdir.scoped
def run(args):
    if not args.data:
        raise ValueError("no data folder: pass --data PATH or set MINIVQ_FSDD")
    epochs, mpd = args.epochs, args.max_per_digit
    if args.quick:
        epochs, mpd = min(epochs, 2), mpd or 30
    out = args.out or f"out/vqvae_cr{args.cr}"
    outdir.claim(out, "vqvae", args)  # writable, locked, not another run's files (see minivq/outdir.py)
    t0 = time.perf_counter()
    features = data.load_features(args.data, split=args.split, max_per_digit=mpd)
    print(f"data: {len(features.train.x)} train / {len(features.test.x)} test clips ({args.split} split) "
          f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    cfg = V.VQVAEConfig(cr=args.cr, K=args.K, D=args.D, hidden=args.hidden, ema=args.ema)
    tcfg = TrainConfig(epochs=epochs, batch=args.batch, lr=args.lr, seed=args.seed, kmeans_init=args.kmeans_init,
                       restart_after=args.restart_after, restart_share=args.restart_share, log_every=args.log_every)
    try:
        res = train(cfg, features, out, tcfg, resume=args.resume)
    except KeyboardInterrupt:
        return 130
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    m = res["metrics"]
    print(f"test recon MSE {m['test_mse']:.4f} (standardised log-mel) | perplexity {m['test_perplexity']:.1f} "
          f"of {cfg.K} | active {m['test_active']:.1%} | {res['train_seconds']:.0f} s training -> {out}")
    print(f"{m['test_silent_fraction']:.1%} of the test positions are digital silence (padding); perplexity over "
          f"the others {m['test_perplexity_sound']:.1f}")
    return 0
