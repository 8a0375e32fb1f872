"""Train the transformer prior on VQ-VAE tokens:

    python -m minivq.train prior --tokens DIR/tokens.npz --cond {class,none} --out DIR

Size letters: N sequences, T = 256 code positions (a 16 x 16 grid read in GPTConfig.order), K codes.

tokens.npz (written by the VQ-VAE trainer): train_tokens (N, 16, 16) int, train_digit (N,),
test_tokens, test_digit, K. Each grid becomes one 257-token sequence: prefix + 256 codes.

A trained prior is read back with minivq.transformer.load_prior (code that samples from it
imports the model module, not this trainer).

Every epoch (and on Ctrl-C) ``OUT/prior.npz`` is rewritten atomically with the params,
Adam state, config, step and the dropout RNG state; ``--resume`` continues from it
exactly (batches are a pure function of (seed, epoch), so a resumed run sees the same
batches in the same order). A NaN/inf loss or gradient stops training with a message and
leaves the last good checkpoint untouched. Losses are reported in nats and bits per code
token (bits = nats / ln 2).
"""
import argparse
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli
from minivq.backend import asarray, to_numpy
from minivq.optim import adam_step, clip_grad_norm, lr_at
from minivq.progress import NonFiniteLoss, Progress, check_finite
from minivq.transformer import (LN2, GPTConfig, backward, evaluate, forward, init_params, make_sequences,
                                n_params, no_decay_names)
from minivq import outdir  # output folders: checked, locked, recorded

CKPT_NAME = "prior.npz"
TRAIN_DEFAULTS = dict(epochs=12, batch_size=32, lr=1e-3, min_lr=1e-4, warmup=100, weight_decay=0.01,
                      grad_clip=1.0, seed=0, max_train=None)
HYPER_RULES = dict(epochs=cli.positive_int, batch_size=cli.positive_int, lr=cli.positive_float,
                   min_lr=cli.nonneg_float, warmup=cli.nonneg_int, weight_decay=cli.nonneg_float,
                   grad_clip=cli.positive_float, seed=cli.nonneg_int, max_train=cli.positive_int)


# ----------------------------------------------------------------------------- data
def load_tokens(path):
    """Read tokens.npz -> dict with train/test tokens (N, 16, 16), digits (N,) and K."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokens file {path} does not exist (the VQ-VAE trainer writes DIR/tokens.npz)")
    try:
        z = np.load(path, allow_pickle=False)
        d = {k: z[k] for k in ("train_tokens", "train_digit", "test_tokens", "test_digit")}
        K = int(z["K"]) if "K" in z.files else 512
    except KeyError as e:
        raise ValueError(f"tokens file {path} lacks the array {e}; expected train_tokens, train_digit, "
                         "test_tokens, test_digit, K")
    except Exception as e:
        raise ValueError(f"tokens file {path} is not a readable .npz ({type(e).__name__}: {e})")
    for split in ("train", "test"):
        t, dg = d[f"{split}_tokens"], d[f"{split}_digit"]
        if t.ndim != 3 or t.dtype.kind not in "iu" or len(dg) != len(t):
            raise ValueError(f"tokens file {path}: {split}_tokens must be integer (N, H, W) with a digit per "
                             f"grid, got {t.dtype} {t.shape} and {len(dg)} digits")
        if t.size and (t.min() < 0 or t.max() >= K):
            raise ValueError(f"tokens file {path}: {split}_tokens has codes outside 0..{K - 1}")
    d["K"] = K
    return d


def synthetic_tokens(n_train=600, n_test=100, K=64, grid=16, noise=0.1, seed=0):
    """Structured stand-in for tokens.npz (same keys): each digit d owns a column of codes
    table[d, row] that fills a time window of random start and length ("the word"), code 0
    elsewhere ("silence"), and a fraction ``noise`` of cells is replaced by random codes.
    A conditional prior can learn the digit's table from the class token; an unconditional
    one must infer it from the first non-silent column."""
    rng = np.random.default_rng(seed)
    table = rng.integers(1, K, size=(10, grid))  # (10, H) codes per digit and row

    def make(n):
        digit = rng.integers(0, 10, n)  # (N,)
        start = rng.integers(0, grid // 3, n)  # (N,)
        length = rng.integers(grid // 3, grid - grid // 3, n)  # (N,)
        col = np.arange(grid)[None, :]  # (1, W)
        on = (col >= start[:, None]) & (col < (start + length)[:, None])  # (N, W)
        tok = np.where(on[:, None, :], table[digit][:, :, None], 0)  # (N, H, W)
        flip = rng.random(tok.shape) < noise
        tok[flip] = rng.integers(0, K, int(flip.sum()))
        return tok.astype(np.int64), digit

    tr, td = make(n_train)
    te, ted = make(n_test)
    return {"train_tokens": tr, "train_digit": td, "test_tokens": te, "test_digit": ted, "K": K}


# ----------------------------------------------------------------------------- checkpoints
def _save(out, params, cfg, opt, hyper, meta):
    checkpoint.save(Path(out) / CKPT_NAME, params, config={"model": cfg.to_dict(), "train": hyper},
                    opt_state=opt, meta={"kind": "prior", **meta})


# ----------------------------------------------------------------------------- training
@outdir.scoped
def train(tokens, out, cfg=None, resume=False, log=print, callback=None, progress_every=10.0, **hyper):
    """Train (or resume) a prior; returns a summary dict (losses in nats and bits per token).

    tokens: path to tokens.npz or the dict load_tokens returns. out: output folder.
    cfg: GPTConfig (n_code and context are taken from the tokens). hyper: TRAIN_DEFAULTS keys.
    callback(step, loss) is called after each step (a KeyboardInterrupt raised there, like
    Ctrl-C, saves a checkpoint and returns with summary['interrupted'] = True).
    Raises NonFiniteLoss when the loss or gradient norm stops being finite."""
    out = Path(out)
    outdir.hold(out)  # a writable folder, locked until train returns
    data = load_tokens(tokens) if not isinstance(tokens, dict) else tokens
    ckpt_path = out / CKPT_NAME
    if resume:
        ck = checkpoint.load(ckpt_path, kind="prior")
        checkpoint.check_resumable(ck, ckpt_path, ("step", "rng_state", "history"))
        cfg = GPTConfig.from_dict(ck["config"]["model"])
        hyper = ck["config"]["train"]
        params = {k: asarray(v) for k, v in ck["params"].items()}
        opt = {k: {"m": asarray(s["m"]), "v": asarray(s["v"]), "t": int(s["t"])} for k, s in ck["opt_state"].items()}
        meta = ck["meta"]
        log(f"resuming {ckpt_path} at step {meta['step']}")
    else:
        unknown = set(hyper) - set(TRAIN_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
        hyper = cli.check_settings({**TRAIN_DEFAULTS, **hyper}, HYPER_RULES, optional=("max_train",))
        cfg = GPTConfig() if cfg is None else cfg
        grid = int(np.prod(data["train_tokens"].shape[1:]))
        cfg = GPTConfig.from_dict({**cfg.to_dict(), "n_code": data["K"], "context": grid})
        params, opt = init_params(cfg, seed=hyper["seed"]), {}
        meta = {"step": 0, "history": [], "step_loss": [], "elapsed_s": 0.0, "epoch_sum": 0.0, "epoch_n": 0,
                "rng_state": np.random.default_rng([hyper["seed"], 1]).bit_generator.state}
    train_seq = make_sequences(data["train_tokens"], data["train_digit"], cfg)  # (N, 1 + T)
    test_seq = make_sequences(data["test_tokens"], data["test_digit"], cfg)  # (N_test, 1 + T)
    if hyper.get("max_train"):
        train_seq = train_seq[:hyper["max_train"]]
    bs = int(hyper["batch_size"])
    spe = len(train_seq) // bs  # steps per epoch (the last partial batch is skipped; shuffling varies it)
    if spe < 1:
        raise ValueError(f"only {len(train_seq)} training sequences for --batch-size {bs}")
    total = spe * int(hyper["epochs"])
    drop_rng = np.random.default_rng()
    drop_rng.bit_generator.state = meta["rng_state"]
    no_decay = no_decay_names(params)
    log(f"prior: cond={cfg.cond} class_token={cfg.class_token} V={cfg.vocab_size} K={cfg.n_code} "
        f"T={cfg.context} d={cfg.d_model} L={cfg.n_layer} H={cfg.n_head} params={n_params(params):,}; "
        f"{len(train_seq)} train / {len(test_seq)} test sequences, {spe} steps/epoch, {total} steps")

    stop = {"flag": False}
    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGINT, lambda *a: stop.update(flag=True))
    except ValueError:  # not the main thread: Ctrl-C arrives as KeyboardInterrupt instead
        pass

    def snapshot():
        meta["rng_state"] = drop_rng.bit_generator.state
        _save(out, params, cfg, opt, hyper, meta)

    step = int(meta["step"])
    prog = Progress(total, desc="prior", every=progress_every, start_step=step)
    t_start = time.perf_counter() - float(meta["elapsed_s"])
    interrupted = False
    try:
        while step < total:
            epoch, i = divmod(step, spe)
            perm = np.random.default_rng([hyper["seed"], epoch]).permutation(len(train_seq))
            batch = asarray(train_seq[perm[i * bs:(i + 1) * bs]])  # (B, 1 + T)
            lr = lr_at(step, hyper["lr"], hyper["warmup"], total, hyper["min_lr"])
            loss, cache = forward(params, cfg, batch, rng=drop_rng if cfg.dropout > 0 else None)
            check_finite(loss, step)
            grads, gnorm = clip_grad_norm(backward(cache), hyper["grad_clip"])
            check_finite(gnorm, step, "gradient norm")
            adam_step(params, grads, opt, lr, weight_decay=hyper["weight_decay"], no_decay=no_decay)
            step += 1
            meta["step"], meta["epoch_sum"], meta["epoch_n"] = step, meta["epoch_sum"] + loss, meta["epoch_n"] + 1
            meta["step_loss"].append(round(loss, 5))
            meta["elapsed_s"] = time.perf_counter() - t_start
            prog.update(step, bs, loss=loss, bits=loss / LN2, lr=lr, gnorm=gnorm)
            if callback is not None:
                callback(step, loss)
            if step % spe == 0:  # end of an epoch: evaluate, checkpoint
                test_nats, _ = evaluate(params, cfg, test_seq)
                tr = meta["epoch_sum"] / max(meta["epoch_n"], 1)
                meta["history"].append({"epoch": step // spe, "step": step, "train_nats": tr,
                                        "train_bits": tr / LN2, "test_nats": test_nats,
                                        "test_bits": test_nats / LN2, "elapsed_s": meta["elapsed_s"]})
                meta["epoch_sum"], meta["epoch_n"] = 0.0, 0
                snapshot()
                log(f"epoch {step // spe}/{hyper['epochs']}: train {tr:.4f} nats ({tr / LN2:.4f} bits), "
                    f"test {test_nats:.4f} nats ({test_nats / LN2:.4f} bits) per token, "
                    f"{meta['elapsed_s']:.0f} s")
            if stop["flag"]:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
        snapshot()
        log(f"interrupted at step {step}; checkpoint saved to {ckpt_path} (continue with --resume)")
    except NonFiniteLoss as e:
        log(f"stopped: {e}")
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    summary = {"checkpoint": str(ckpt_path), "step": step, "total_steps": total, "interrupted": interrupted,
               "elapsed_s": meta["elapsed_s"], "history": meta["history"], "model": cfg.to_dict(),
               "train": hyper, "n_params": n_params(params), "step_loss": meta["step_loss"]}
    if not interrupted:
        test_nats, per_pos = evaluate(params, cfg, test_seq)
        summary.update(test_nats=test_nats, test_bits=test_nats / LN2,
                       train_nats=meta["history"][-1]["train_nats"] if meta["history"] else math.nan,
                       test_bits_per_position=[round(float(b), 4) for b in to_numpy(per_pos) / LN2])
        summary["train_bits"] = summary["train_nats"] / LN2
        checkpoint.write_json(out / "metrics.json", summary)
        log(f"done: test {test_nats:.4f} nats = {test_nats / LN2:.4f} bits per token "
            f"({meta['elapsed_s']:.0f} s); wrote {out / 'metrics.json'}")
    return summary


# ----------------------------------------------------------------------------- CLI
def add_arguments(p):
    p.add_argument("--tokens", required=True, help="tokens.npz written by the VQ-VAE trainer")
    p.add_argument("--out", required=True, help="output folder (prior.npz, metrics.json)")
    p.add_argument("--cond", choices=("class", "none"), default="class", help="condition on the digit or not")
    p.add_argument("--class-token", choices=("dedicated", "shared"), default="dedicated",
                   help="dedicated: 10 new class-token embeddings; shared: digit d is fed as code token d")
    p.add_argument("--resume", action="store_true", help="continue OUT/prior.npz exactly (other settings ignored)")
    p.add_argument("--force", action="store_true", help="write OUT even where another run's files would be overwritten")
    d = GPTConfig()
    p.add_argument("--d-model", type=cli.positive_int, default=d.d_model, help="model width")
    p.add_argument("--n-layer", type=cli.positive_int, default=d.n_layer, help="transformer blocks")
    p.add_argument("--n-head", type=cli.positive_int, default=d.n_head, help="attention heads")
    p.add_argument("--dropout", type=cli.fraction, default=d.dropout, help="dropout rate while training")
    p.add_argument("--class-every", action=argparse.BooleanOptionalAction, default=None,
                   help="add the class embedding to every position's input, not only at the prefix "
                        "(default: on for --cond class with dedicated class tokens)")
    p.add_argument("--order", choices=("freq", "time"), default=d.order,
                   help="read the code grid band by band (freq) or frame by frame (time)")
    t = TRAIN_DEFAULTS
    p.add_argument("--epochs", type=cli.positive_int, default=t["epochs"], help="passes over the training set")
    p.add_argument("--batch-size", type=cli.positive_int, default=t["batch_size"], help="sequences per step")
    p.add_argument("--lr", type=cli.positive_float, default=t["lr"], help="peak learning rate")
    p.add_argument("--min-lr", type=cli.nonneg_float, default=t["min_lr"],
                   help="learning rate at the end of the cosine")
    p.add_argument("--warmup", type=cli.nonneg_int, default=t["warmup"], help="linear warmup steps")
    p.add_argument("--weight-decay", type=cli.nonneg_float, default=t["weight_decay"],
                   help="AdamW decay on weight matrices")
    p.add_argument("--grad-clip", type=cli.positive_float, default=t["grad_clip"], help="clip the global gradient norm")
    p.add_argument("--seed", type=cli.nonneg_int, default=t["seed"], help="init / shuffling / dropout seed")
    p.add_argument("--max-train", type=cli.positive_int, default=None,
                   help="use only the first N training grids (quick runs)")


@outdir.scoped
def run(args):
    outdir.claim(args.out, "prior", args)  # writable, locked, not another run's files (see minivq/outdir.py)
    if args.class_token == "shared" and args.cond != "class":
        raise ValueError("--class-token shared only applies with --cond class")
    cfg = GPTConfig(cond=args.cond, class_token=args.class_token, d_model=args.d_model, n_layer=args.n_layer,
                    n_head=args.n_head, dropout=args.dropout, order=args.order,
                    class_every=args.class_every)
    hyper = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
                 warmup=args.warmup, weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed,
                 max_train=args.max_train)
    try:
        s = train(args.tokens, args.out, cfg, resume=args.resume, **hyper)
    except NonFiniteLoss:
        return 1
    except KeyboardInterrupt:  # outside the training loop: reading the tokens, or the final evaluation
        ck = Path(args.out) / CKPT_NAME
        print(f"interrupted; {ck} holds the last saved state (continue with --resume)" if ck.is_file()
              else "interrupted before the first checkpoint; nothing was saved", file=sys.stderr)
        return 130
    return 130 if s["interrupted"] else 0
