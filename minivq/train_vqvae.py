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
import sys
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli, data, optim
from minivq import quantizer as Q
from minivq import vqvae as V
from minivq.backend import asarray
from minivq import trainer  # the shared skeleton: stop flag, loop, resume/save, progress
from minivq.progress import NonFiniteLoss, check_finite  # noqa: F401 (NonFiniteLoss: re-exported)
from minivq.vqvae_report import finish_run  # host-side end of a run: metrics, tokens, figure, WAVs
from minivq import outdir  # output folders: checked, locked, recorded


@dataclasses.dataclass
class TrainConfig(trainer.TrainSettings):
    epochs: int = 8             # passes over the training split (CR=16: ~1 CPU-second per step of 32)
    batch_size: int = 32        # clips per step
    lr: float = 2e-3            # peak Adam learning rate (linear warmup, then cosine to lr/10)
    grad_clip: float = 5.0      # clip the global gradient norm at this value (0: off)
    weight_decay: float = 0.0   # AdamW decay (none for the VQ-VAE)
    warmup: int = 30            # warmup steps
    seed: int = 0               # initialisation, data order, k-means, restarts
    log_every: float = 10.0     # seconds between progress lines
    kmeans_init: bool = True    # initialise the codebook by k-means of the first batch's z_e
    restart_after: int = 10     # move codes unused for this many steps to encoder outputs (0: off)
    restart_share: float = None  # also move codes used less than this fraction of an even share
    #                              (0: off; None: restart_share_for(cr), 0.5 at CR=4, off at CR=16)

    RULES = dict(trainer.SHARED_RULES, restart_after=cli.nonneg_int, restart_share=cli.unit_interval)
    OPTIONAL = ("restart_share",)

    @property
    def batch(self):  # the former name, still read by vqvae_report
        return self.batch_size


MODEL_RULES = dict(in_size=cli.positive_int, ch1=cli.positive_int, hidden=cli.positive_int,
                   res_hidden=cli.positive_int, n_res=cli.nonneg_int, D=cli.positive_int, K=cli.positive_int,
                   beta=cli.nonneg_float, ema_decay=cli.fraction)


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
def kmeans_init(params, qstate, xb, cfg, seed):
    """Initialise the codebook by k-means of the encoder outputs of batch xb (B, 1, M, T);
    qstate (the usage statistics) starts afresh for the new codes."""
    z_e, _ = V.encoder_forward(params, xb, cfg)  # (B, D, h, w)
    params["codebook"][...] = Q.kmeans(V.to_vectors(z_e), cfg.K, iters=10, seed=[seed, 7])
    qstate.clear()
    qstate.update(Q.init_state(params["codebook"]))


def step(params, opt_state, qstate, xb, cfg, tcfg, n, total):
    """One optimisation step (number n of total) on xb (B, 1, M, T): forward, backward, clip,
    Adam on the learned params, then the codebook's EMA update and dead-code restarts.
    Updates params, opt_state and qstate in place -> (loss parts, lr, code indices (B*h*w,),
    number of codes restarted)."""
    loss, parts, cache = V.forward(params, xb, cfg)
    check_finite(loss, n)
    grads = V.backward(cache)
    if tcfg.grad_clip > 0:
        grads, _ = optim.clip_grad_norm(grads, tcfg.grad_clip)
    lr = optim.lr_at(n, tcfg.lr, tcfg.warmup, total, min_lr=tcfg.lr / 10)
    names = [k for k in params if not (cfg.ema and k == "codebook")]  # an EMA codebook is not learned by Adam
    optim.adam_step({k: params[k] for k in names}, {k: grads[k] for k in names}, opt_state, lr,
                    weight_decay=tcfg.weight_decay)
    idx, z_e = cache["idx"].reshape(-1), cache["z_e"]  # (B*h*w,), (B, D, h, w)
    if cfg.ema:
        Q.ema_update(params["codebook"], qstate, z_e, idx, decay=cfg.ema_decay)
    dead = Q.restart_dead_codes(params["codebook"], qstate, z_e, idx, after=tcfg.restart_after,
                                seed=[tcfg.seed, n, 11], min_share=tcfg.restart_share)
    if dead.shape[0] and "codebook" in opt_state:  # fresh codes start with fresh moments
        opt_state["codebook"]["m"][dead] = 0
        opt_state["codebook"]["v"][dead] = 0
    return parts, lr, idx, int(dead.shape[0])


def _settings(cfg, tcfg, features):
    """Check the model and training settings and the features -> (tcfg with restart_share
    resolved, raw training log-mels (N, M, T), the feature settings as a dict)."""
    tcfg = (tcfg or TrainConfig()).check()  # again: fields may have been set after construction
    cfg.validate()
    cli.check_settings(cfg.to_dict(), MODEL_RULES)
    if tcfg.restart_share is None:  # resolve the per-CR default, so checkpoints record the value used
        tcfg = dataclasses.replace(tcfg, restart_share=restart_share_for(cfg.cr))
    x = features.train.x
    if len(x) == 0:
        raise ValueError("the training split is empty")
    if tuple(x.shape[1:]) != (cfg.in_size, cfg.in_size):
        raise ValueError(f"features are {x.shape[1:]} but the VQ-VAE expects ({cfg.in_size}, {cfg.in_size})")
    feat_cfg = features.cfg.to_dict() if hasattr(features.cfg, "to_dict") else dict(features.cfg or {})
    return tcfg, x, feat_cfg


def _start(last, cfg, tcfg, xtr_raw, resume, verbose):
    """The run's state: read from last.npz (resume) or fresh -> dict(params, opt_state, qstate,
    norm, step, history, train_seconds, epoch_stats)."""
    if resume and last.is_file():
        ck = trainer.load_state(last, "vqvae")
        saved = V.VQVAEConfig.from_dict(ck["config"]["vqvae"])
        if saved != cfg:
            raise ValueError(f"{last} was trained with a different model config ({saved}); "
                             "use the same --cr/settings or a new --out folder")
        m, x = ck["meta"], ck["extra"]
        es = m.get("epoch_stats")
        trainer.say(verbose, f"resuming from {last} at step {m['step']}")
        return {"params": ck["params"], "opt_state": ck["opt_state"],
                "qstate": {k[2:]: asarray(v) for k, v in x.items() if k.startswith("q_")},
                "norm": {"mean": float(x["norm_mean"]), "std": float(x["norm_std"])}, "step": int(m["step"]),
                "history": m.get("history", []), "train_seconds": float(m.get("train_seconds", 0.0)),
                "epoch_stats": None if es is None else dict(es, counts=np.asarray(es["counts"], np.int64))}
    if resume:
        trainer.say(verbose, f"no {last} to resume from; starting fresh")
    params = V.init_params(cfg, seed=tcfg.seed)
    return {"params": params, "opt_state": {}, "qstate": Q.init_state(params["codebook"]),
            "norm": V.standardise_stats(xtr_raw), "step": 0, "history": [], "train_seconds": 0.0, "epoch_stats": None}


def _tally(S, parts, hist, K, epoch, step, spe):
    """Add one step to the epoch's statistics; at the end of an epoch append its summary to
    the history and return True."""
    es = S["epoch_stats"]
    es["loss"] += parts["loss"]
    es["recon"] += parts["recon"]
    es["n"] += 1
    es["counts"] += hist
    if step % spe:
        return False
    ep = Q.usage_stats(np.repeat(np.arange(K), es["counts"]), K)
    S["history"].append({"epoch": epoch + 1, "step": step, "loss": es["loss"] / es["n"], "recon": es["recon"] / es["n"],
                         "perplexity": ep["perplexity"], "active": ep["active"]})
    return True


def _epoch_line(h, epochs, last):
    return (f"epoch {h['epoch']}/{epochs}: loss {h['loss']:.4f} recon {h['recon']:.4f} "
            f"perplexity {h['perplexity']:.1f} active {h['active']:.2%} -> {last}")


@outdir.scoped
def train(cfg, features, out_dir, tcfg=None, resume=False, finish=True, callback=None, verbose=True):
    """Train a VQ-VAE on ``features`` (data.Features: .train/.test with x (N, M, T) raw log-mel,
    digit, speaker; .cfg FeatureConfig) and write outputs to ``out_dir``. resume: continue from
    out_dir/last.npz. finish: write metrics/tokens/figures. callback(step, parts): after every
    step. Returns a dict: params, cfg, norm, metrics (when finished), step, history.
    Ctrl-C: last.npz is saved, then trainer.Interrupted (a KeyboardInterrupt) is raised.
    NonFiniteLoss on NaN/inf (last.npz then still holds the last good epoch)."""
    tcfg, xtr_raw, feat_cfg = _settings(cfg, tcfg, features)
    out, last = Path(out_dir), Path(out_dir) / "last.npz"
    outdir.hold(out)  # a writable folder, locked until train returns
    N, B = len(xtr_raw), min(tcfg.batch_size, len(xtr_raw))
    spe = N // B  # steps per epoch (the last partial batch is dropped; it differs every epoch)
    total = tcfg.epochs * spe
    S = _start(last, cfg, tcfg, xtr_raw, resume, verbose)
    params, opt_state, qstate, norm = S["params"], S["opt_state"], S["qstate"], S["norm"]
    xtr = V.standardise(xtr_raw, norm)  # (N, 1, M, T)
    prog = trainer.progress(total, "vqvae", tcfg, S["step"], verbose)
    t0, elapsed0 = time.perf_counter(), S["train_seconds"]

    def save():
        es = S["epoch_stats"]
        S["train_seconds"] = elapsed0 + time.perf_counter() - t0
        meta = {"step": S["step"], "epoch": S["step"] // spe, "steps_per_epoch": spe, "total_steps": total,
                "history": S["history"], "train_seconds": S["train_seconds"], "n_train": N,
                "epoch_stats": None if es is None else dict(es, counts=es["counts"].tolist())}
        _save_state(last, params, opt_state, qstate, norm, cfg, tcfg, feat_cfg, meta)
        return S["step"]

    def run_step(n):
        epoch, i = divmod(n, spe)
        if i == 0 or S["epoch_stats"] is None:
            S["epoch_stats"] = {"loss": 0.0, "recon": 0.0, "n": 0, "counts": np.zeros(cfg.K, np.int64)}
        xb = xtr[asarray(trainer.epoch_order(tcfg.seed, epoch, N)[i * B:(i + 1) * B])]  # (B, 1, M, T)
        if n == 0 and tcfg.kmeans_init:
            kmeans_init(params, qstate, xb, cfg, tcfg.seed)
        parts, lr, idx, restarts = step(params, opt_state, qstate, xb, cfg, tcfg, n, total)
        S["step"] = n + 1
        st = Q.usage_stats(idx, cfg.K)
        epoch_done = _tally(S, parts, st["hist"], cfg.K, epoch, n + 1, spe)
        if prog:
            prog.update(n + 1, B, epoch=epoch + 1, loss=parts["loss"], recon=parts["recon"], commit=parts["commit"],
                        ppl=st["perplexity"], active=st["active"], restarts=restarts, lr=lr)
        if callback is not None:
            callback(n + 1, parts)
        if epoch_done:  # end of an epoch: summary + checkpoint
            save()
            trainer.say(verbose, _epoch_line(S["history"][-1], tcfg.epochs, last))
        return n + 1

    done = trainer.loop(S["step"], total, run_step, save, last, verbose)
    if done == total and (not S["history"] or S["history"][-1]["step"] != done):
        save()
    S["train_seconds"] = elapsed0 + time.perf_counter() - t0
    result = {"params": params, "cfg": cfg, "norm": norm, "step": done, "history": S["history"],
              "train_seconds": S["train_seconds"]}
    if finish:
        result["metrics"] = _finish(params, cfg, norm, features, out, tcfg, S, last, verbose)
    return result


def _finish(params, cfg, norm, features, out, tcfg, S, last, verbose):
    try:
        return finish_run(params, cfg, norm, features, out, tcfg, S["history"], S["train_seconds"], verbose=verbose)
    except KeyboardInterrupt:
        err = trainer.Interrupted(S["step"], last, message=f"interrupted while writing the final files; the trained "
                                  f"model is saved in {last} (continue with --resume to write vqvae.npz, tokens.npz "
                                  "and metrics.json)")
        trainer.say(verbose, str(err))
        raise err from None

# ----------------------------------------------------------------------------- CLI
def add_arguments(p):
    d = TrainConfig()
    p.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                   help="FSDD (or AudioMNIST) folder; defaults to $MINIVQ_FSDD")
    p.add_argument("--cr", type=int, choices=(4, 16), default=16, help="compression ratio: 16 -> 16x16 tokens, 4 -> 32x32")
    p.add_argument("--out", default=None, help="output folder; when omitted, out/vqvae_cr{CR}")
    trainer.add_arguments(p, d, "clips")  # --epochs --batch-size/--batch --lr --grad-clip --weight-decay --warmup --seed --log-every
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
    p.add_argument("--split", choices=("official", "speakers"), default="official",
                   help="official: FSDD takes 0-4 are the test set; speakers: held-out speakers")
    p.add_argument("--max-per-digit", type=cli.positive_int, default=None, help="use at most this many clips per digit")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--force", action="store_true", help="write OUT even where another run's files would be overwritten")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs on 30 clips per digit")


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
    tcfg = trainer.settings_from_args(TrainConfig, args, epochs=epochs, kmeans_init=args.kmeans_init,
                                      restart_after=args.restart_after, restart_share=args.restart_share)
    code, res = trainer.run_cli(lambda: train(cfg, features, out, tcfg, resume=args.resume), Path(out) / "last.npz")
    if code:
        return code
    m = res["metrics"]
    print(f"test recon MSE {m['test_mse']:.4f} (standardised log-mel) | perplexity {m['test_perplexity']:.1f} "
          f"of {cfg.K} | active {m['test_active']:.1%} | {res['train_seconds']:.0f} s training -> {out}")
    print(f"{m['test_silent_fraction']:.1%} of the test positions are digital silence (padding); perplexity over "
          f"the others {m['test_perplexity_sound']:.1f}")
    return 0
