"""Train the transformer prior on VQ-VAE tokens:

    python -m minivq.train prior --tokens DIR/tokens.npz --cond {class,none} --out DIR

Size letters: N sequences, T = 256 code positions (a 16 x 16 grid read in GPTConfig.order), K codes.

tokens.npz (written by the VQ-VAE trainer): train_tokens (N, 16, 16) int, train_digit (N,),
test_tokens, test_digit, K, and (optionally) train_speaker / test_speaker (N,) names. Each grid
becomes one 257-token sequence: prefix + 256 codes.

A digit+speaker prior (``--speaker``): GPTConfig.speakers is the sorted list of the training
split's speaker names (``speaker_vocabulary``), each sequence's speaker id rides beside it, and
every test speaker must be one of them.

A trained prior is read back with minivq.transformer.load_prior (code that samples from it
imports the model module, not this trainer).

Every epoch (and on Ctrl-C) ``OUT/prior.npz`` is rewritten atomically with the params,
Adam state, config, step and the dropout RNG state; ``--resume`` continues from it
exactly (batches are a pure function of (seed, epoch), so a resumed run sees the same
batches in the same order). A NaN/inf loss or gradient stops training with a message and
leaves the last good checkpoint untouched. Losses are reported in nats and bits per code
token (bits = nats / ln 2).

Classifier-free guidance in one model: a prior with GPTConfig.null_class is trained with each
training sequence's class replaced by the null class with probability ``p_uncond``
(``--p-uncond``). The draw is a pure function of (seed, step), like the batches, so a resumed
run replaces the same sequences. The test loss is measured with the true classes.

Early stopping (``--patience P``): after each epoch, an epoch with the lowest test bits so far
is also written to ``OUT/prior_best.npz``; once P epochs have passed without a new lowest,
training stops, and at the end (early or not) the best epoch's weights are put back, so
``prior.npz`` and ``metrics.json`` hold the epoch with the lowest test bits. The learning-rate
schedule still runs over ``--epochs``: P is a guard against over-fitting a long schedule, not a
schedule of its own. (FSDD has no validation split, so the test split chooses the epoch: the
chosen epoch's test bits are then an optimistic estimate, by at most the spread between epochs.)
"""
import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from minivq import checkpoint, cli
from minivq.backend import asarray, to_numpy
from minivq.optim import adam_step, clip_grad_norm, lr_at
from minivq import trainer  # the shared skeleton: stop flag, loop, resume/save, progress
from minivq.progress import NonFiniteLoss, check_finite  # noqa: F401 (NonFiniteLoss: re-exported)
from minivq.transformer import (NATS_PER_BIT, PRIOR_CKPT, GPTConfig, backward, forward, init_params,
                                make_sequences, mean_nll, n_params, no_decay_names)
from minivq import outdir  # output folders: checked, locked, recorded

CKPT_NAME = PRIOR_CKPT  # the trained prior: read back with minivq.transformer.load_prior
BEST_NAME = "prior_best.npz"  # with --patience: the weights of the epoch with the lowest test bits


@dataclasses.dataclass
class TrainConfig(trainer.TrainSettings):
    epochs: int = 12            # passes over the training sequences
    batch_size: int = 32        # sequences per step
    lr: float = 1e-3            # peak learning rate (linear warmup, then cosine to min_lr)
    grad_clip: float = 1.0      # clip the global gradient norm at this value
    weight_decay: float = 0.01  # AdamW decay on weight matrices (not biases, norms, embeddings)
    warmup: int = 100           # linear warmup steps
    seed: int = 0               # initialisation, data order, dropout
    log_every: float = 10.0     # seconds between progress lines
    min_lr: float = 1e-4        # learning rate at the end of the cosine
    max_train: int = None       # use only the first N training grids (None: all)
    p_uncond: float = 0.0       # chance that a training sequence's class is replaced by the null class
    patience: int = None        # early stopping: stop once the test bits have not improved for this
                                # many epochs, and keep the best epoch's weights (None: every epoch)

    RULES = dict(trainer.SHARED_RULES, grad_clip=cli.positive_float, min_lr=cli.nonneg_float,
                 max_train=cli.positive_int, p_uncond=cli.fraction, patience=cli.positive_int)
    OPTIONAL = ("max_train", "patience")


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
    names = [f"{split}_speaker" for split in ("train", "test")]
    if all(n in z.files for n in names):
        for split, n in zip(("train", "test"), names):
            spk = z[n]
            if spk.dtype.kind not in "US" or len(spk) != len(d[f"{split}_tokens"]):
                raise ValueError(f"tokens file {path}: {n} must hold one speaker name per grid, got {spk.dtype} "
                                 f"{spk.shape} for {len(d[f'{split}_tokens'])} grids")
            d[n] = spk.astype(str)
    return d


def speaker_vocabulary(data):
    """The speaker names of a tokens dict's training split, sorted: the GPTConfig.speakers of a
    digit+speaker prior. ValueError when the tokens carry no speaker labels."""
    if "train_speaker" not in data or "test_speaker" not in data:
        raise ValueError("these tokens have no speaker labels (train_speaker / test_speaker); the VQ-VAE trainer "
                         "writes them into tokens.npz, so re-export the tokens to train a speaker-conditioned prior")
    names = sorted({str(s) for s in data["train_speaker"]})
    if not names or not all(names):
        raise ValueError("the tokens' train_speaker labels are empty")
    return names


def speaker_ids(data, split, cfg):
    """(N,) int64 host ids of a split's speakers in cfg.speakers, or None for a prior without speakers."""
    if not cfg.speakers:
        return None
    if f"{split}_speaker" not in data:
        raise ValueError(f"this prior is conditioned on the speaker but the tokens have no {split}_speaker labels")
    unknown = sorted(set(map(str, data[f"{split}_speaker"])) - set(cfg.speakers))
    if unknown:
        raise ValueError(f"the {split} split has speakers the prior does not know: {unknown} "
                         f"(the prior knows {list(cfg.speakers)})")
    return to_numpy(cfg.speaker_ids([str(s) for s in data[f"{split}_speaker"]]))  # (N,)


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
def drop_classes(batch, cfg, p_uncond, seed, n):
    """batch (B, 1 + T) -> a copy whose prefix is the null class in each row with probability
    p_uncond; the uniforms come from a generator seeded by (seed, step n), so the same run
    replaces the same rows, resumed or not. The batch itself when p_uncond is 0."""
    if p_uncond == 0:
        return batch
    drop = np.random.default_rng([seed, 2, n]).random(len(batch)) < p_uncond  # (B,) host
    out = batch.copy()
    out[drop, 0] = cfg.null_token
    return out


def step(params, opt, cfg, tcfg, batch, n, total, drop_rng, no_decay, speaker=None):
    """One optimisation step (number n of total) on batch (B, 1 + T) token ids (and speaker (B,)
    ids for a prior with speakers): forward (with dropout drawn from drop_rng), backward, clip,
    AdamW. Updates params and opt in place -> (loss in nats per token, lr, gradient norm before clipping)."""
    lr = lr_at(n, tcfg.lr, tcfg.warmup, total, tcfg.min_lr)
    voice = {} if speaker is None else {"speaker": speaker}  # the call without speakers is the one it always was
    loss, cache = forward(params, cfg, batch, rng=drop_rng if cfg.dropout > 0 else None, **voice)
    check_finite(loss, n)
    grads, gnorm = clip_grad_norm(backward(cache), tcfg.grad_clip)
    check_finite(gnorm, n, "gradient norm")
    adam_step(params, grads, opt, lr, weight_decay=tcfg.weight_decay, no_decay=no_decay)
    return loss, lr, gnorm


def _start(ckpt_path, data, cfg, tcfg, resume, verbose):
    """-> (GPTConfig, TrainConfig, params, Adam state, meta): read from the checkpoint (resume:
    its settings win) or fresh (n_code and context taken from the tokens)."""
    if resume:
        ck = trainer.load_state(ckpt_path, "prior", ("step", "rng_state", "history"))
        trainer.say(verbose, f"resuming {ckpt_path} at step {ck['meta']['step']}")
        return (GPTConfig.from_dict(ck["config"]["model"]), TrainConfig.from_dict(ck["config"]["train"]),
                ck["params"], ck["opt_state"], ck["meta"])
    tcfg = (tcfg or TrainConfig()).check()
    grid = int(np.prod(data["train_tokens"].shape[1:]))
    cfg = GPTConfig.from_dict({**(cfg or GPTConfig()).to_dict(), "n_code": data["K"], "context": grid})
    if tcfg.p_uncond > 0 and not cfg.null_class:
        raise ValueError(f"p_uncond={tcfg.p_uncond} needs a prior with a null class (GPTConfig.null_class=True)")
    if cfg.null_class and tcfg.p_uncond == 0:
        raise ValueError("a prior with a null class needs p_uncond > 0, or the null class is never trained")
    meta = {"step": 0, "history": [], "step_loss": [], "elapsed_s": 0.0, "epoch_sum": 0.0, "epoch_n": 0,
            "rng_state": np.random.default_rng([tcfg.seed, 1]).bit_generator.state}
    return cfg, tcfg, init_params(cfg, seed=tcfg.seed), {}, meta


def _end_epoch(params, cfg, meta, test_seq, spe, epochs, verbose, test_spk=None):
    """Evaluate on the test sequences (speakers test_spk) and add the epoch to meta['history']."""
    step = meta["step"]
    test_nats, _ = mean_nll(params, cfg, test_seq, speaker=test_spk)
    tr = meta["epoch_sum"] / max(meta["epoch_n"], 1)
    meta["history"].append({"epoch": step // spe, "step": step, "train_nats": tr, "train_bits": tr / NATS_PER_BIT,
                            "test_nats": test_nats, "test_bits": test_nats / NATS_PER_BIT, "elapsed_s": meta["elapsed_s"]})
    meta["epoch_sum"], meta["epoch_n"] = 0.0, 0
    trainer.say(verbose, f"epoch {step // spe}/{epochs}: train {tr:.4f} nats ({tr / NATS_PER_BIT:.4f} bits), test "
                         f"{test_nats:.4f} nats ({test_nats / NATS_PER_BIT:.4f} bits) per token, {meta['elapsed_s']:.0f} s")


def _early_stop(out, params, cfg, meta, patience, verbose):
    """Early stopping's bookkeeping after an epoch (nothing when patience is None): write the
    weights to out/prior_best.npz when this epoch's test bits are the lowest so far -> True (and
    meta['stopped_early']) once ``patience`` epochs have passed without a new lowest. Everything
    it needs is in meta['history'], so a resumed run agrees."""
    if patience is None:
        return False
    bits = [h["test_bits"] for h in meta["history"]]
    best = int(np.argmin(bits))  # the first of equal lowest values
    if best == len(bits) - 1:
        checkpoint.save(Path(out) / BEST_NAME, params, config={"model": cfg.to_dict()},
                        meta={"kind": "prior", "epoch": meta["history"][best]["epoch"], "test_bits": bits[best]})
    if len(bits) - 1 - best < patience:
        return False
    meta["stopped_early"] = True
    trainer.say(verbose, f"early stopping: no lower test bits for {patience} epochs")
    return True


def _keep_best(out, params, meta, patience, save, verbose):
    """After training with early stopping: the best epoch's weights back into params and saved
    (once) -> the summary's kept_epoch and stopped_early ({} when patience is None)."""
    if patience is None:
        return {}
    if "kept_epoch" not in meta:
        _restore_best(out, params, meta, verbose)
        save()  # prior.npz now holds the kept weights (and says which epoch they are)
    return {"kept_epoch": meta["kept_epoch"], "stopped_early": bool(meta.get("stopped_early"))}


def _restore_best(out, params, meta, verbose):
    """Put the weights of the epoch with the lowest test bits back into params (in place)."""
    bits = [h["test_bits"] for h in meta["history"]]
    if not bits:
        return
    best = int(np.argmin(bits))
    meta["kept_epoch"] = meta["history"][best]["epoch"]
    if best == len(bits) - 1:
        return  # the last epoch is the best: its weights are the ones in params
    saved = checkpoint.load(Path(out) / BEST_NAME)["params"]
    for k in params:
        params[k][...] = asarray(saved[k])
    trainer.say(verbose, f"early stopping: kept epoch {meta['kept_epoch']} ({bits[best]:.4f} test bits), "
                         f"not the last ({bits[-1]:.4f})")


def _final(out, params, cfg, meta, test_seq, summary, verbose, test_spk=None):
    """The test loss of the trained prior -> summary (also written to out/metrics.json)."""
    test_nats, per_pos = mean_nll(params, cfg, test_seq, speaker=test_spk)
    summary.update(test_nats=test_nats, test_bits=test_nats / NATS_PER_BIT,
                   train_nats=meta["history"][-1]["train_nats"] if meta["history"] else math.nan,
                   test_bits_per_position=[round(float(b), 4) for b in to_numpy(per_pos) / NATS_PER_BIT])
    summary["train_bits"] = summary["train_nats"] / NATS_PER_BIT
    checkpoint.write_json(out / "metrics.json", summary)
    trainer.say(verbose, f"done: test {test_nats:.4f} nats = {test_nats / NATS_PER_BIT:.4f} bits per token "
                         f"({meta['elapsed_s']:.0f} s); wrote {out / 'metrics.json'}")
    return summary


def _sequences(data, cfg, max_train):
    """-> train sequences (N, 1 + T) (the first max_train), test sequences (N_test, 1 + T), and
    their speaker ids (N,), (N_test,) (None for a prior without speakers)."""
    train_seq = make_sequences(data["train_tokens"], data["train_digit"], cfg)[:max_train]  # (N, 1 + T)
    test_seq = make_sequences(data["test_tokens"], data["test_digit"], cfg)  # (N_test, 1 + T)
    train_spk, test_spk = speaker_ids(data, "train", cfg), speaker_ids(data, "test", cfg)  # (N,), (N_test,) or None
    return train_seq, test_seq, None if train_spk is None else train_spk[:max_train], test_spk


@outdir.scoped
def train(tokens, out, cfg=None, tcfg=None, resume=False, callback=None, verbose=True):
    """Train (or resume) a prior; returns a summary dict (losses in nats and bits per token).

    tokens: path to tokens.npz or the dict load_tokens returns. out: output folder.
    cfg: GPTConfig (n_code and context are taken from the tokens). tcfg: TrainConfig.
    resume: continue out/prior.npz with its own settings (cfg and tcfg are ignored).
    callback(step, loss) is called after each step. Ctrl-C (or a KeyboardInterrupt from the
    callback) saves prior.npz, then raises trainer.Interrupted (its .result: the summary so far).
    Raises NonFiniteLoss when the loss or gradient norm stops being finite."""
    out = Path(out)
    outdir.hold(out)  # a writable folder, locked until train returns
    data, ckpt_path = load_tokens(tokens) if not isinstance(tokens, dict) else tokens, out / CKPT_NAME
    cfg, tcfg, params, opt, meta = _start(ckpt_path, data, cfg, tcfg, resume, verbose)
    train_seq, test_seq, train_spk, test_spk = _sequences(data, cfg, tcfg.max_train)
    bs, spe = tcfg.batch_size, len(train_seq) // tcfg.batch_size  # steps per epoch (a partial batch is skipped)
    if spe < 1:
        raise ValueError(f"only {len(train_seq)} training sequences for --batch-size {bs}")
    total = spe * tcfg.epochs
    drop_rng = np.random.default_rng()
    drop_rng.bit_generator.state = meta["rng_state"]
    no_decay = no_decay_names(params)
    trainer.say(verbose, f"prior: cond={cfg.cond} class_token={cfg.class_token} null_class={cfg.null_class} "
                         f"speakers={len(cfg.speakers)} (p_uncond={tcfg.p_uncond}) V={cfg.vocab_size} K={cfg.n_code} "
                         f"T={cfg.context} d={cfg.d_model} L={cfg.n_layer} H={cfg.n_head} params={n_params(params):,}; "
                         f"{len(train_seq)} train / {len(test_seq)} test sequences, {spe} steps/epoch, {total} steps")
    prog = trainer.progress(total, "prior", tcfg, int(meta["step"]), verbose)
    t_start = time.perf_counter() - float(meta["elapsed_s"])

    def save():
        meta["rng_state"] = drop_rng.bit_generator.state
        _save(out, params, cfg, opt, tcfg.to_dict(), meta)
        return meta["step"]

    def run_step(n):
        epoch, idx = trainer.batch_index(tcfg.seed, n, spe, len(train_seq), bs)
        batch = drop_classes(train_seq[idx], cfg, tcfg.p_uncond, tcfg.seed, n)  # (B, 1 + T)
        spk = None if train_spk is None else asarray(train_spk[idx])  # (B,)
        loss, lr, gnorm = step(params, opt, cfg, tcfg, asarray(batch), n, total, drop_rng, no_decay, spk)
        meta["step"], meta["epoch_sum"], meta["epoch_n"] = n + 1, meta["epoch_sum"] + loss, meta["epoch_n"] + 1
        meta["step_loss"].append(round(loss, 5))
        meta["elapsed_s"] = time.perf_counter() - t_start
        if prog:
            prog.update(n + 1, bs, loss=loss, bits=loss / NATS_PER_BIT, lr=lr, gnorm=gnorm)
        if callback is not None:
            callback(n + 1, loss)
        if (n + 1) % spe == 0:  # end of an epoch: evaluate, checkpoint
            _end_epoch(params, cfg, meta, test_seq, spe, tcfg.epochs, verbose, test_spk)
            _early_stop(out, params, cfg, meta, tcfg.patience, verbose)  # with patience: may set stopped_early
            save()
        return total if meta.get("stopped_early") else n + 1  # total ends the loop (and a resumed run's)

    def summary(interrupted=False):
        return {"checkpoint": str(ckpt_path), "step": meta["step"], "total_steps": total, "interrupted": interrupted,
                "elapsed_s": meta["elapsed_s"], "history": meta["history"], "model": cfg.to_dict(),
                "train": tcfg.to_dict(), "n_params": n_params(params), "step_loss": meta["step_loss"]}

    trainer.loop(total if meta.get("stopped_early") else int(meta["step"]), total, run_step, save, ckpt_path,
                 verbose, report=lambda: summary(True))  # a run that stopped early trains no more when resumed
    kept = _keep_best(out, params, meta, tcfg.patience, save, verbose)  # {} without patience
    return _final(out, params, cfg, meta, test_seq, {**summary(), **kept}, verbose, test_spk)

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
    p.add_argument("--class-norm", action="store_true",
                   help="also condition every LayerNorm on the digit (adaptive LayerNorm: a learned gain and bias row "
                        "per class in each of them)")
    p.add_argument("--p-uncond", type=cli.fraction, default=0.0,
                   help="train a null class ('no digit') into the conditional prior: each training sequence's class "
                        "is replaced by it with this probability, for classifier-free guidance from one model (0: no "
                        "null class)")
    p.add_argument("--speaker", action="store_true",
                   help="also condition on the speaker (the tokens' train_speaker names): a digit+speaker prior for "
                        "python -m minivq.generate --speaker NAME")
    p.add_argument("--order", choices=("freq", "time"), default=d.order,
                   help="read the code grid band by band (freq) or frame by frame (time)")
    t = TrainConfig()
    trainer.add_arguments(p, t, "sequences", batch_flag="--batch-size")  # --epochs --batch-size/--batch --lr --grad-clip --weight-decay --warmup --seed --log-every
    p.add_argument("--min-lr", type=cli.nonneg_float, default=t.min_lr, help="learning rate at the end of the cosine")
    p.add_argument("--max-train", type=cli.positive_int, default=None,
                   help="use only the first N training grids (quick runs)")
    p.add_argument("--patience", type=cli.positive_int, default=None,
                   help="early stopping: stop after this many epochs without lower test bits and keep the best "
                        "epoch's weights (default: train every epoch, keep the last)")


@outdir.scoped
def run(args):
    outdir.claim(args.out, "prior", args)  # writable, locked, not another run's files (see minivq/outdir.py)
    if args.class_token == "shared" and args.cond != "class":
        raise ValueError("--class-token shared only applies with --cond class")
    cfg = GPTConfig(cond=args.cond, class_token=args.class_token, d_model=args.d_model, n_layer=args.n_layer,
                    n_head=args.n_head, dropout=args.dropout, order=args.order,
                    class_every=args.class_every, null_class=args.p_uncond > 0, class_norm=args.class_norm)
    tcfg = trainer.settings_from_args(TrainConfig, args, min_lr=args.min_lr, max_train=args.max_train,
                                      p_uncond=args.p_uncond, patience=args.patience)
    tokens = args.tokens
    if args.speaker and not args.resume:  # the names come from the tokens (a resumed run keeps its own)
        tokens = load_tokens(args.tokens)
        try:
            cfg = dataclasses.replace(cfg, speakers=tuple(speaker_vocabulary(tokens)))
        except ValueError as e:
            raise ValueError(f"--speaker: {args.tokens}: {e}")
    return trainer.run_cli(lambda: train(tokens, args.out, cfg, tcfg, resume=args.resume),
                           Path(args.out) / CKPT_NAME)[0]
