"""Lesson 05: a VQ-VAE turns each 64x64 log-mel spectrogram into a grid of codebook indices.

1. The model and its loss, printed from the configuration.
2. One training step written out here: encoder (library layer calls), quantiser, decoder,
   loss, backward, gradient clipping, Adam, EMA codebook update. It is step 0 of the run of
   parts 3-4, checked against the library's step (train_vqvae.step): loss, gradients, parameters.
3. Codebook upkeep (k-means start, EMA, dead-code restart), watched step by step over the
   run's first steps: what the trainer's "restarts R" and "active" mean.
4. The library's trainer (train_vqvae.train) runs the whole training, its first steps repeating
   part 3's exactly.
5. The shipped CR=16 model (minivq/pretrained/vqvae.npz, trained far longer) on test clips:
   reconstructions, their error, the token grids (one distinct colour per code), code usage and
   Griffin-Lim WAVs, next to the model of part 4.
6. tokens.npz: the shipped model's token grids of the clips, in the VQ-VAE trainer's format,
   which lesson 07 (the transformer prior) reads.

Without a dataset the clips are synthesised: the shipped model decodes the token grids in
minivq/pretrained/tokens.npz into log-mels (the lesson says so where it matters).

Run: python lessons/05_vqvae.py [--data $MINIVQ_FSDD] [--quick] [--out DIR]
     python lessons/05_vqvae.py --data $MINIVQ_FSDD --write-tokens minivq/pretrained/tokens.npz
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import audio, checkpoint, data, optim, trainer  # noqa: E402
from minivq import conv  # noqa: E402
from minivq import layers as L  # noqa: E402
from minivq import quantizer as Q  # noqa: E402
from minivq import train_vqvae as T  # noqa: E402  (this lesson trains)
from minivq import vqvae as V  # noqa: E402
from minivq.backend import asarray, to_numpy, xp  # noqa: E402  (arrays on the selected device, CPU or GPU)
from minivq.bundle import DEFAULT_CHECKPOINT, read_manifest  # noqa: E402  (the shipped bundle's folder)
from minivq.plots import code_colours  # noqa: E402  (K distinct colours for images of codes)

SHIPPED_VQVAE = DEFAULT_CHECKPOINT / "vqvae.npz"    # CR=16, K=512, trained on FSDD's 2,700 training clips
SHIPPED_TOKENS = DEFAULT_CHECKPOINT / "tokens.npz"  # its token grids of FSDD (written by --write-tokens)
QUICK_PER_DIGIT = 10   # --quick: clips per digit in each split (100 train, 100 test)
CR, K, BETA = 16, 512, 0.25  # the model trained in parts 2-4 (flags --cr, --K, --beta, --no-ema change it)
HIDDEN, BATCH, EPOCHS = 128, 32, 2  # full run: trunk channels, clips per step, passes over the training clips
QUICK_HIDDEN, QUICK_BATCH, QUICK_EPOCHS = 32, 16, 4  # --quick: a small model, 4 passes over 100 clips (24 steps)
WATCH_STEPS, QUICK_WATCH_STEPS = 20, 14  # part 3: the run's first steps, watched one by one
LR = 2e-3              # peak Adam learning rate (the trainer's default), after a linear warmup
RESTART_AFTER = 10     # steps a code may go unchosen before it is restarted (the trainer's default)
N_SHOW = 4             # test clips in the figure
N_WAV = 2              # test clips written as WAVs
SEED = 0


# ----------------------------------------------------------------------------- the clips
def get_clips(args, vq):
    """-> (data.Features with raw log-mels (N, 64, 64) and labels of both splits, info dict: 'real',
    'note' saying where the clips came from, and without a dataset 'source_tokens', the shipped
    test grids the clips were decoded from)."""
    per_digit = QUICK_PER_DIGIT if args.quick else None
    if args.data:
        f = data.load_features(args.data, max_per_digit=per_digit, progress=False)
        return f, dict(real=True, note=f"FSDD {args.data}, official split")
    params, cfg, norm = vq
    z = np.load(SHIPPED_TOKENS, allow_pickle=False)  # FileNotFoundError names the file if it is missing
    splits, info = {}, dict(real=False, note=f"NO DATASET: log-mels synthesised by decoding the shipped token "
                                             f"grids ({SHIPPED_TOKENS})")
    for split in ("train", "test"):
        digit = z[f"{split}_digit"]
        keep = np.sort(np.concatenate([np.flatnonzero(digit == d)[:per_digit] for d in range(10)])) if per_digit \
            else np.arange(len(digit))  # (n,)
        x = V.decode_logmel(params, cfg, norm, z[f"{split}_tokens"][keep])  # (n, 64, 64)
        splits[split] = data.Split(x=x, digit=digit[keep].astype(np.int64), speaker=z[f"{split}_speaker"][keep],
                                   gender=np.full(len(keep), "unknown"), take=np.zeros(len(keep), np.int64),
                                   path=[f"{SHIPPED_TOKENS}:{split}[{i}]" for i in keep])
        info[f"{split}_source_tokens"] = z[f"{split}_tokens"][keep]  # (n, 16, 16)
    feat_cfg = audio.FeatureConfig.from_dict(read_manifest(DEFAULT_CHECKPOINT / "manifest.json")["features"])
    f = data.Features(train=splits["train"], test=splits["test"], cfg=feat_cfg, skipped=[], layout="shipped tokens",
                      root=DEFAULT_CHECKPOINT)
    return f, info


# ----------------------------------------------------------------------------- 1. model and loss
def describe(cfg):
    """The architecture, read from the configuration (the same loops vqvae.py runs)."""
    s, n = cfg.in_size, cfg.n_down
    shapes = V.param_shapes(cfg)
    lines = [f"   input x: standardised log-mel (B, 1, {s}, {s}); CR={cfg.cr}: one token per "
             f"{2 ** n}x{2 ** n} patch -> a {cfg.grid}x{cfg.grid} grid"]
    for i in range(n):
        co, ci = shapes[f"enc_down{i}_w"][:2]
        hw = s >> i + 1
        lines.append(f"   encoder  conv 4x4 stride 2, {ci:3d} -> {co:3d}, ReLU        -> (B, {co}, {hw}, {hw})")
    lines.append(f"            conv 3x3, {cfg.hidden} -> {cfg.hidden}"
                 f"                       -> (B, {cfg.hidden}, {cfg.grid}, {cfg.grid})")
    res = (f"{cfg.n_res} x residual block h + conv1x1(ReLU(conv3x3(ReLU(h)))), "
           f"{cfg.hidden} -> {cfg.res_hidden} -> {cfg.hidden}")
    lines.append(f"            {res}")
    lines.append(f"            ReLU, conv 1x1, {cfg.hidden} -> D={cfg.D}"
                 f"                -> z_e (B, {cfg.D}, {cfg.grid}, {cfg.grid})")
    lines.append(f"   quantise each of the {cfg.grid}x{cfg.grid} vectors z_e -> nearest of K={cfg.K} codes e_k"
                 f"  -> z_q (B, {cfg.D}, {cfg.grid}, {cfg.grid}), tokens k (B, {cfg.grid}, {cfg.grid})")
    lines.append(f"   decoder  conv 3x3, D={cfg.D} -> {cfg.hidden}, then {res}")
    for i in range(n):
        ci, co = shapes[f"dec_up{i}_w"][:2]
        hw = cfg.grid << i + 1
        lines.append(f"            ReLU, conv-transpose 4x4 stride 2, {ci:3d} -> {co:3d}      -> (B, {co}, {hw}, {hw})"
                     + ("  = x_hat" if i == n - 1 else ""))
    n_enc = sum(math.prod(v) for k, v in shapes.items() if k.startswith("enc"))
    n_dec = sum(math.prod(v) for k, v in shapes.items() if k.startswith("dec"))
    lines.append(f"   parameters: encoder {n_enc:,}, codebook {cfg.K} x {cfg.D} = {cfg.K * cfg.D:,}, decoder {n_dec:,}")
    return "\n".join(lines)


def print_loss(cfg):
    print("   loss (means over all elements; sg = stop-gradient: a constant in the backward pass)")
    print("      L = mean (x_hat - x)^2                 reconstruction")
    if cfg.ema:
        print(f"        + beta mean (z_e - sg(e_k))^2       commitment, beta = {cfg.beta}: keeps z_e near its code")
        print("      and no codebook term: ema=True (the default), so each code follows the running mean of")
        print(f"      the z_e assigned to it (decay {cfg.ema_decay}) instead of being learned by gradient")
    else:
        print("        + mean (sg(z_e) - e_k)^2            codebook: moves the chosen codes towards z_e")
        print(f"        + beta mean (z_e - sg(e_k))^2       commitment, beta = {cfg.beta}: keeps z_e near its code")
        print("      (--no-ema: the codebook is learned by gradient like every other parameter)")
    print("   argmin has no gradient: the decoder sees z_q = z_e + sg(e_k - z_e), whose value is e_k and whose")
    print("   gradient passes to z_e unchanged (straight-through).")


# ----------------------------------------------------------------------------- 2. one step by hand
def one_step_by_hand(p, opt, qstate, xb, cfg, tcfg, lr):
    """Step 0 of training, written out. p: params (updated in place), opt: Adam state (filled),
    qstate: the codebook statistics (updated), xb: (B, 1, 64, 64) standardised log-mels.
    -> (loss parts, gradients before clipping, their global norm, codes restarted)."""
    # ---- encoder: stride-2 convs with ReLU, a 3x3 conv, residual blocks, ReLU, a 1x1 conv to D
    h, enc = xb, []
    for i in range(cfg.n_down):
        h, c_conv = conv.conv2d_forward(h, p[f"enc_down{i}_w"], p[f"enc_down{i}_b"], stride=2, pad=1)
        h, c_relu = L.relu_forward(h)
        enc.append((c_conv, c_relu))
    h, c_mid = conv.conv2d_forward(h, p["enc_conv_w"], p["enc_conv_b"], stride=1, pad=1)  # (B, hidden, h, w)
    enc_res = []
    for j in range(cfg.n_res):
        w = [p[f"enc_res{j}_{n}"] for n in ("w1", "b1", "w2", "b2")]
        h, c = conv.residual_block_forward(h, *w)
        enc_res.append(c)
    h, c_relu_out = L.relu_forward(h)
    z_e, c_out = conv.conv2d_forward(h, p["enc_out_w"], p["enc_out_b"])  # (B, D, h, w)

    # ---- quantise: every position's D-vector -> the nearest code
    B, D, gh, gw = z_e.shape
    ze = z_e.transpose(0, 2, 3, 1).reshape(B * gh * gw, D)  # (N, D) one row per position
    e = p["codebook"]  # (K, D)
    dist2 = (ze * ze).sum(1)[:, None] - 2 * ze @ e.T + (e * e).sum(1)[None, :]  # (N, K) ||z_e - e_k||^2
    k = dist2.argmin(axis=1)  # (N,) the tokens
    zq = e[k]  # (N, D) the value of z_q (its gradient goes to z_e: straight-through)
    z_q = xp.ascontiguousarray(zq.reshape(B, gh, gw, D).transpose(0, 3, 1, 2))  # (B, D, h, w)

    # ---- decoder: 3x3 conv, residual blocks, ReLU + stride-2 conv-transposes
    h, c_in = conv.conv2d_forward(z_q, p["dec_in_w"], p["dec_in_b"], stride=1, pad=1)  # (B, hidden, h, w)
    dec_res, dec_up = [], []
    for j in range(cfg.n_res):
        h, c = conv.residual_block_forward(h, *[p[f"dec_res{j}_{n}"] for n in ("w1", "b1", "w2", "b2")])
        dec_res.append(c)
    for i in range(cfg.n_down):
        h, c_relu = L.relu_forward(h)
        h, c_up = conv.conv_transpose2d_forward(h, p[f"dec_up{i}_w"], p[f"dec_up{i}_b"], stride=2, pad=1)
        dec_up.append((c_relu, c_up))
    x_hat = h  # (B, 1, 64, 64)

    # ---- loss
    recon = float(((x_hat - xb) ** 2).mean())
    qerr = float(((zq - ze) ** 2).mean())  # mean (z_e - e_k)^2: both VQ terms have this value
    parts = {"recon": recon, "codebook": 0.0 if cfg.ema else qerr, "commit": cfg.beta * qerr}
    parts["loss"] = recon + parts["codebook"] + parts["commit"]

    # ---- backward: d recon / d x_hat, then the decoder in reverse
    g = {}
    dh = 2 * (x_hat - xb) / x_hat.size  # (B, 1, 64, 64)
    for i in reversed(range(cfg.n_down)):
        c_relu, c_up = dec_up[i]
        dh, g[f"dec_up{i}_w"], g[f"dec_up{i}_b"] = conv.conv_transpose2d_backward(dh, c_up)
        dh = L.relu_backward(dh, c_relu)
    for j in reversed(range(cfg.n_res)):
        dh, *gw4 = conv.residual_block_backward(dh, dec_res[j])
        g.update(zip([f"dec_res{j}_{n}" for n in ("w1", "b1", "w2", "b2")], gw4))
    dz_q, g["dec_in_w"], g["dec_in_b"] = conv.conv2d_backward(dh, c_in)  # (B, D, h, w)
    # quantiser: straight-through (dL/dz_e = dL/dz_q) plus the commitment pull towards the code;
    # the codebook gets the codebook term's gradient, or none with EMA codes
    dzq = dz_q.transpose(0, 2, 3, 1).reshape(B * gh * gw, D)  # (N, D)
    dze = dzq + cfg.beta * 2 * (ze - zq) / ze.size  # (N, D)
    onehot = (k[:, None] == xp.arange(cfg.K)[None, :]).astype(ze.dtype)  # (N, K)
    g["codebook"] = xp.zeros_like(e) if cfg.ema else onehot.T @ (2 * (zq - ze) / ze.size)  # (K, D)
    dh = xp.ascontiguousarray(dze.reshape(B, gh, gw, D).transpose(0, 3, 1, 2))  # (B, D, h, w)
    dh, g["enc_out_w"], g["enc_out_b"] = conv.conv2d_backward(dh, c_out)
    dh = L.relu_backward(dh, c_relu_out)
    for j in reversed(range(cfg.n_res)):
        dh, *gw4 = conv.residual_block_backward(dh, enc_res[j])
        g.update(zip([f"enc_res{j}_{n}" for n in ("w1", "b1", "w2", "b2")], gw4))
    dh, g["enc_conv_w"], g["enc_conv_b"] = conv.conv2d_backward(dh, c_mid)
    for i in reversed(range(cfg.n_down)):
        c_conv, c_relu = enc[i]
        dh = L.relu_backward(dh, c_relu)
        dh, g[f"enc_down{i}_w"], g[f"enc_down{i}_b"] = conv.conv2d_backward(dh, c_conv)

    # ---- clip the global gradient norm, then Adam (an EMA codebook is not Adam's business)
    gnorm = math.sqrt(sum(float((v * v).sum()) for v in g.values()))
    scale = min(1.0, tcfg.grad_clip / (gnorm + 1e-12))
    b1, b2, eps = 0.9, 0.999, 1e-8
    for name in p:
        if cfg.ema and name == "codebook":
            continue
        s = opt.setdefault(name, {"m": xp.zeros_like(p[name]), "v": xp.zeros_like(p[name]), "t": 0})
        s["t"] += 1
        s["m"] = b1 * s["m"] + (1 - b1) * (scale * g[name])
        s["v"] = b2 * s["v"] + (1 - b2) * (scale * g[name]) ** 2
        m_hat, v_hat = s["m"] / (1 - b1 ** s["t"]), s["v"] / (1 - b2 ** s["t"])
        p[name] -= lr * m_hat / (xp.sqrt(v_hat) + eps)

    # ---- EMA codebook: running count and sum of the z_e each code was chosen for, e_k = sum / count
    if cfg.ema:
        d = cfg.ema_decay
        qstate["ema_count"] = d * qstate["ema_count"] + (1 - d) * onehot.sum(0)  # (K,)
        qstate["ema_sum"] = d * qstate["ema_sum"] + (1 - d) * onehot.T @ ze  # (K, D)
        n = qstate["ema_count"].sum()
        count = (qstate["ema_count"] + 1e-5) / (n + cfg.K * 1e-5) * n  # Laplace smoothing: no division by 0
        p["codebook"][...] = qstate["ema_sum"] / count[:, None]
    # ---- restarts (part 3): codes unused for RESTART_AFTER steps (none yet at step 0) and, where
    # restart_share > 0 (CR=4), codes chosen by fewer than restart_share * N / K vectors; the library's
    # function, with the random draw the library's step uses at step 0
    dead = Q.restart_dead_codes(p["codebook"], qstate, ze, k, after=tcfg.restart_after, seed=[tcfg.seed, 0, 11],
                                min_share=tcfg.restart_share)
    if dead.shape[0] and "codebook" in opt:  # a restarted code learned by Adam starts with fresh moments
        opt["codebook"]["m"][dead] = 0
        opt["codebook"]["v"][dead] = 0
    return parts, g, gnorm, int(dead.shape[0])


def max_err(a, b):
    """Largest |a - b| over the arrays of two dicts with the same keys (on the host)."""
    return max(float(np.abs(to_numpy(a[k]) - to_numpy(b[k])).max()) for k in a)


def check_step(params, qstate, xb, cfg, tcfg, total):
    """Run one_step_by_hand and the library's step from the same state; print the differences.
    Returns the library's state after the step (params, opt, qstate), from which part 3 goes on,
    and the lesson's loss parts."""
    copy = lambda d: {k: v.copy() for k, v in d.items()}  # noqa: E731
    mine_p, mine_q, mine_opt = copy(params), copy(qstate), {}
    lr = optim.lr_at(0, tcfg.lr, tcfg.warmup, total, min_lr=tcfg.lr / 10)  # warmup: lr / warmup at step 0
    parts, grads, gnorm, restarted = one_step_by_hand(mine_p, mine_opt, mine_q, xb, cfg, tcfg, lr)
    # the library: vqvae.forward / backward give the loss and gradients, train_vqvae.step the whole update
    _, lib_parts, cache = V.forward(params, xb, cfg)
    lib_grads = V.backward(cache)
    lib_p, lib_q, lib_opt = copy(params), copy(qstate), {}
    T.step(lib_p, lib_opt, lib_q, xb, cfg, tcfg, 0, total)
    gmax = max(float(np.abs(to_numpy(v)).max()) for v in lib_grads.values())
    print(f"   loss   lesson {parts['loss']:.6f} = recon {parts['recon']:.6f} + codebook {parts['codebook']:.6f} "
          f"+ commit {parts['commit']:.6f}")
    print(f"          library {lib_parts['loss']:.6f}; |difference| {abs(parts['loss'] - lib_parts['loss']):.1e}")
    print(f"   gradients of all {len(grads)} arrays: max |lesson - vqvae.backward| {max_err(grads, lib_grads):.1e} "
          f"(largest gradient entry {gmax:.1e}); global norm {gnorm:.3f}, clipped to {tcfg.grad_clip}: "
          f"{'yes' if gnorm > tcfg.grad_clip else 'no'}")
    upkeep = "EMA codebook" if cfg.ema else "Adam on the codebook too"
    print(f"   after clip + Adam (lr {lr:.1e}) + {upkeep} + {restarted} codes restarted: max |lesson - train_vqvae.step| "
          f"over the parameters {max_err(mine_p, lib_p):.1e} (the step moved them by up to {max_err(params, lib_p):.1e})")
    return lib_p, lib_opt, lib_q, parts


# ----------------------------------------------------------------------------- 3. upkeep, watched
def watch_upkeep(cfg, tcfg, x_std, watch_steps):
    """The run's start on x_std (N, 1, 64, 64): k-means codebook, the written-out step 0 (part 2,
    checked), then train_vqvae.step for steps 1 .. watch_steps - 1, one table row per step.
    -> (history: one dict per step, summary)."""
    N, B = x_std.shape[0], tcfg.batch_size
    spe = N // B  # steps per pass over the clips (the last partial batch is dropped, as the trainer does)
    total = tcfg.epochs * spe
    params = V.init_params(cfg, seed=tcfg.seed)
    qstate = Q.init_state(params["codebook"])
    _, first = trainer.batch_index(tcfg.seed, 0, spe, N, B)
    xb = x_std[asarray(first)]  # (B, 1, 64, 64)
    T.kmeans_init(params, qstate, xb, cfg, tcfg.seed)  # the codebook starts as k-means of the first batch's z_e
    print(f"\n2) One training step written out (step 0 of the run: {cfg.grid}x{cfg.grid} tokens, K={cfg.K}, "
          f"hidden {cfg.hidden}, {B} clips, codebook from k-means of this batch's z_e)")
    params, opt, qstate, parts0 = check_step(params, qstate, xb, cfg, tcfg, total)

    steps = min(watch_steps, total)
    print(f"\n3) Codebook upkeep, watched over the run's first {steps} steps ({N} clips, {B} per step)")
    print("   - k-means start: the K codes begin as k-means centres of the first batch's z_e, not at random")
    if cfg.ema:
        print(f"   - EMA: after each step every chosen code moves to the running mean of its z_e (decay {cfg.ema_decay})")
    else:
        print("   - no EMA (--no-ema): the codebook term's gradient moves the chosen codes (Adam)")
    print(f"   - dead-code restart: a code chosen by none of a step's {B}x{cfg.grid ** 2} = {B * cfg.grid ** 2:,} "
          f"vectors for {tcfg.restart_after} steps in a row")
    print("     is moved onto a random z_e of the current batch (its EMA count reset to 1)")
    if tcfg.restart_share:
        print(f"   - rare-code restart (on at CR={cfg.cr}): also codes whose smoothed use per step is below "
              f"{tcfg.restart_share} of an even share (N/K)")
    else:
        print(f"   - rare-code restart (restart_share): off at CR={cfg.cr} (the trainer turns it on at CR=4)")
    print("   step |   loss    recon   commit | q-error |z_e|^2 | perplexity   codes used | restarted  restarts so far")
    history, total_restarts = [dict(step=0, **parts0)], 0
    for n in range(1, steps):
        _, idx_b = trainer.batch_index(tcfg.seed, n, spe, N, B)
        xb = x_std[asarray(idx_b)]  # (B, 1, 64, 64)
        parts, lr, idx, dead = T.step(params, opt, qstate, xb, cfg, tcfg, n, total)
        total_restarts += dead
        st = Q.usage_stats(idx, cfg.K)
        # the quantisation error itself, whatever beta: mean over elements of (z_e - e_k)^2, after the step
        z_e, _ = V.encoder_forward(params, xb, cfg)  # (B, D, h, w)
        zv = V.to_vectors(z_e)  # (B*h*w, D)
        _, d2 = Q.nearest_code(zv, params["codebook"])
        h = dict(step=n, loss=parts["loss"], recon=parts["recon"], commit=parts["commit"], restarts=dead,
                 perplexity=st["perplexity"], used=int((st["hist"] > 0).sum()), qerr=float(d2.mean()) / cfg.D,
                 ze2=float((zv * zv).mean()))
        history.append(h)
        print(f"   {n:4d} | {h['loss']:.4f}  {h['recon']:.4f}  {h['commit']:.4f} | {h['qerr']:.4f}  {h['ze2']:6.3f} | "
              f"{h['perplexity']:6.1f} of {cfg.K}  {h['used']:4d} of {cfg.K} | {h['restarts']:5d}  {total_restarts:9d}")
    print("   loss, recon, commit: the step's terms, per element (recon: of the standardised log-mel, commit: of z_e);")
    print("   q-error = mean (z_e - e_k)^2 after the step's update, whatever beta; |z_e|^2 = mean z_e^2, the scale of z_e;")
    print("   perplexity = exp(entropy of the step's code counts): the number of equally used codes with that entropy")
    low = min(history[1:], key=lambda h: h["used"]) if len(history) > 1 else None
    first = next((h["step"] for h in history[1:] if h["restarts"]), None)
    if low:
        print(f"   codes used per step: {history[1]['used']} at step 1, fewest {low['used']} at step {low['step']}; "
              f"first restart at step {first}; {total_restarts} restarts in {steps} steps")
    return history, dict(low=low, first=first, total=total_restarts)


# ----------------------------------------------------------------------------- 4. the library trains
def train_with_library(cfg, tcfg, features, out, watched):
    """train_vqvae.train on features.train, from scratch with the same seed: its first steps repeat
    part 3's. -> (params, norm, losses per step, the trainer's per-epoch history)."""
    losses = []
    sys.stdout.flush()  # the trainer's lines go to stderr: keep them after what was printed so far
    res = T.train(cfg, features, out, tcfg, finish=False, callback=lambda n, parts: losses.append(parts))
    same = [abs(losses[h["step"]]["loss"] - h["loss"]) for h in watched if h["step"] < len(losses)]
    print(f"   its first {len(same)} steps repeat part 2-3's: max |loss difference| {max(same):.1e}")
    h = res["history"][-1]
    print(f"   trained {res['step']} steps in {res['train_seconds']:.0f} s; last epoch: loss {h['loss']:.4f}, "
          f"perplexity {h['perplexity']:.1f}, codes used {h['active'] * cfg.K:.0f} of {cfg.K}")
    return res["params"], res["norm"], losses, res["history"]


# ----------------------------------------------------------------------------- 5. reconstructions
def reconstruct(vq, x_raw):
    """Raw log-mels (N, 64, 64) -> (tokens (N, h, w), reconstructions (N, 64, 64) raw, MSE
    standardised, MSE in log-mel units^2): the library's inference functions."""
    params, cfg, norm = vq
    tokens = V.encode_logmel(params, cfg, norm, x_raw)  # (N, h, w)
    rec = V.decode_logmel(params, cfg, norm, tokens)  # (N, 64, 64)
    mse_raw = float(((rec.astype(np.float64) - x_raw) ** 2).mean())
    return tokens, rec, mse_raw / norm["std"] ** 2, mse_raw


def figure(path, x, digits, shipped, trained, vq_cfg, tr_cfg, trained_label, note):
    """Rows: test clips. Columns: input, shipped recon, its error, shipped tokens, the part-4
    model's recon and tokens."""
    lo, hi = np.percentile(x, [1, 99.9])
    err = shipped["rec"] - x
    emax = float(np.abs(err).max())
    cols = [("input", x, "spec"), (f"shipped CR={vq_cfg.cr} reconstruction", shipped["rec"], "spec"),
            ("reconstruction - input", err, "err"),
            (f"shipped tokens ({vq_cfg.grid}x{vq_cfg.grid})", shipped["tok"], "tok"),
            (trained_label, trained["rec"], "spec"),
            (f"its tokens ({tr_cfg.grid}x{tr_cfg.grid}, K={tr_cfg.K})", trained["tok"], "tok2")]
    fig, axes = plt.subplots(len(x), len(cols), figsize=(3.1 * len(cols), 2.5 * len(x) + 0.8),
                             squeeze=False, layout="constrained")
    for c, (title, arr, kind) in enumerate(cols):
        for r in range(len(x)):
            ax = axes[r, c]
            if kind == "spec":
                im = ax.imshow(arr[r], origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            elif kind == "err":
                im = ax.imshow(arr[r], origin="lower", aspect="auto", cmap="RdBu_r", vmin=-emax, vmax=emax)
            else:
                Kc = vq_cfg.K if kind == "tok" else tr_cfg.K
                im = ax.imshow(arr[r], origin="lower", aspect="auto", cmap=code_colours(Kc), vmin=-0.5,
                               vmax=Kc - 0.5, interpolation="nearest")
            ax.set_xlabel("frame" if kind in ("spec", "err") else "token column (time)", fontsize=7)
            ax.set_ylabel(f"digit {digits[r]}: mel band" if c == 0 else
                          ("mel band" if kind in ("spec", "err") else "token row (frequency)"), fontsize=7)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(title, fontsize=9)
        label = {"spec": "log-mel (natural log of mel power)", "err": "log-mel difference",
                 "tok": f"code index (K={vq_cfg.K} distinct colours)",
                 "tok2": f"code index (K={tr_cfg.K} distinct colours)"}[kind]
        fig.colorbar(im, ax=axes[:, c], shrink=0.6, label=label)
    fig.suptitle(f"VQ-VAE on {note}: the shipped model's reconstructions and tokens, and the model of part 4",
                 fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def figure_training(path, watched, losses, hist_test, K_shipped, tr_cfg):
    """Part 3's first steps, part 4's loss per step, and the shipped model's code usage."""
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2), layout="constrained")
    w = watched[1:]  # steps 1.. (step 0 is part 2's)
    s = [h["step"] for h in w]
    ax = axes[0]
    ax.plot(s, [h["recon"] for h in w], "o-", label="recon")
    ax.plot(s, [h["qerr"] for h in w], "s-", label="q-error mean (z_e - e)^2")
    ax.plot(s, [h["ze2"] for h in w], "^-", label="mean z_e^2")
    ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_ylabel("per element")
    ax.set_title("part 3: the first steps"), ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(s, [h["perplexity"] for h in w], "o-", label="perplexity")
    ax.plot(s, [h["used"] for h in w], "s-", label="codes used in the step")
    ax.bar(s, [h["restarts"] for h in w], color="C3", alpha=0.6, label="codes restarted in the step")
    ax.set_xlabel("step"), ax.set_ylabel(f"codes (of K={tr_cfg.K})"), ax.set_title("part 3: codebook use and restarts")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(np.arange(len(losses)), [p["recon"] for p in losses], label="recon")
    ax.plot(np.arange(len(losses)), [p["commit"] for p in losses], label="commit")
    ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_ylabel("loss term (per element)")
    ax.set_title(f"part 4: train_vqvae.train, {len(losses)} steps"), ax.legend(fontsize=8)
    ax = axes[3]
    counts = np.sort(hist_test)[::-1]
    ax.step(np.arange(1, K_shipped + 1), np.maximum(counts, 0.5), where="mid")
    ax.set_yscale("log"), ax.set_xlabel("code, sorted by use (rank)"), ax.set_ylabel("times chosen (0.5 = never)")
    ax.set_title(f"shipped model: code use on the test clips\n({int((hist_test > 0).sum())} of {K_shipped} codes used)")
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- 6. tokens.npz
def write_tokens(path, vq, features, test_tokens=None):
    """The model's token grids of both splits -> path, in the VQ-VAE trainer's tokens.npz format
    (train_tokens, train_digit, train_speaker, test_tokens, test_digit, test_speaker, K, cr),
    stored compactly: uint16 codes, uint8 digits, compressed. Read back and compared.
    test_tokens: the test grids when already encoded (encode_logmel gives the same either way)."""
    params, cfg, norm = vq
    if cfg.K > 2 ** 16:
        raise ValueError(f"K={cfg.K} codes do not fit uint16")
    arrays = {}
    for name, split in (("train", features.train), ("test", features.test)):
        tok = test_tokens if name == "test" and test_tokens is not None else V.encode_logmel(params, cfg, norm, split.x)
        arrays[f"{name}_tokens"] = tok.astype(np.uint16)  # (N, h, w)
        arrays[f"{name}_digit"] = np.asarray(split.digit).astype(np.uint8)  # (N,)
        arrays[f"{name}_speaker"] = np.asarray(split.speaker, dtype=str)  # (N,)
    arrays["K"], arrays["cr"] = np.int64(cfg.K), np.int64(cfg.cr)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(path, lambda f: np.savez_compressed(f, **arrays))  # never half-written
    with np.load(path, allow_pickle=False) as z:  # as the prior trainer reads it
        same = sorted(z.files) == sorted(arrays) and all(np.array_equal(z[k], v) for k, v in arrays.items())
    print(f"   wrote {path} ({path.stat().st_size / 1e6:.2f} MB): train_tokens {arrays['train_tokens'].shape} and "
          f"test_tokens {arrays['test_tokens'].shape} uint16, digits uint8, speakers, K={cfg.K}, cr={cfg.cr}")
    print(f"   read back: every array identical to what was written: {same}")
    return arrays


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"),
                    help="FSDD folder (or set MINIVQ_FSDD); without one, clips are synthesised from the shipped tokens")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_PER_DIGIT} clips per digit; parts 2-4 with a small model for {QUICK_EPOCHS} passes")
    ap.add_argument("--out", default="out/lesson05", help="output folder")
    ap.add_argument("--cr", type=int, choices=(4, 16), default=CR,
                    help="parts 2-4: compression ratio (16: 16x16 tokens, 4: 32x32)")
    ap.add_argument("--K", type=int, default=K, help="parts 2-4: codebook size")
    ap.add_argument("--beta", type=float, default=BETA, help="parts 2-4: commitment weight")
    ap.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                    help="parts 2-4: EMA codebook (--no-ema: codebook loss + Adam)")
    ap.add_argument("--epochs", type=int, default=None,
                    help=f"part 4: passes over the training clips (default {EPOCHS}, --quick {QUICK_EPOCHS})")
    ap.add_argument("--write-tokens", default=None, metavar="PATH",
                    help="only write the shipped model's tokens of FSDD's whole official split to PATH, then stop")
    args = ap.parse_args()
    if not 1 <= args.K <= 2 ** 16 or args.beta < 0 or (args.epochs is not None and args.epochs < 1):
        ap.error("--K must lie in 1..65536, --beta must be >= 0 and --epochs >= 1")
    t0 = time.perf_counter()
    vq = V.load_vqvae(SHIPPED_VQVAE)  # (params, VQVAEConfig, norm)
    card = checkpoint.read_json(DEFAULT_CHECKPOINT / "vqvae.json", what="model card")  # how it was trained
    sh_epochs, sh_n, sh_cfg = card["config"]["train"]["epochs"], card["metrics"]["n_train"], vq[1]

    if args.write_tokens:
        if not args.data:
            ap.error("--write-tokens needs the dataset: pass --data PATH or set MINIVQ_FSDD")
        args.quick = False
        features, info = get_clips(args, vq)
        print(f"tokens of {info['note']} from {SHIPPED_VQVAE}:")
        write_tokens(args.write_tokens, vq, features)
        print(f"({time.perf_counter() - t0:.0f} s)")
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    features, info = get_clips(args, vq)
    print(f"clips: {len(features.train.x)} train / {len(features.test.x)} test log-mels of 64x64 ({info['note']})")
    hidden, batch, epochs = (QUICK_HIDDEN, QUICK_BATCH, QUICK_EPOCHS) if args.quick else (HIDDEN, BATCH, EPOCHS)
    epochs = args.epochs or epochs
    batch = min(batch, len(features.train.x))
    total = epochs * (len(features.train.x) // batch)
    tr_cfg = V.VQVAEConfig(cr=args.cr, K=args.K, beta=args.beta, ema=args.ema, hidden=hidden, ch1=min(64, hidden))
    tcfg = T.TrainConfig(epochs=epochs, batch_size=batch, lr=LR, seed=SEED, restart_after=RESTART_AFTER,
                         warmup=min(30, total // 4),  # the trainer's 30 warmup steps, fewer in a short run
                         restart_share=T.restart_share_for(tr_cfg.cr), log_every=2.0 if args.quick else 20.0)

    print(f"\n1) The model of parts 2-4 (from its VQVAEConfig; the shipped model is the same at CR={sh_cfg.cr}, "
          f"K={sh_cfg.K}, hidden {sh_cfg.hidden})")
    print(describe(tr_cfg))
    print_loss(tr_cfg)

    # parts 2 and 3: the run's first steps, by hand and with train_vqvae.step
    x_std = V.standardise(features.train.x, V.standardise_stats(features.train.x))  # (N, 1, 64, 64) on the backend
    watched, summary = watch_upkeep(tr_cfg, tcfg, x_std, QUICK_WATCH_STEPS if args.quick else WATCH_STEPS)

    print(f"\n4) The library's trainer runs all of it: train_vqvae.train, {epochs} passes over {len(features.train.x)} "
          f"clips = {total} steps. Its progress lines (stderr) read")
    print("   'vqvae n/total | epoch e | loss | recon | commit | ppl P | active A | restarts R | lr | samples/s | ETA':")
    print("   P = perplexity of step n's codes, A = the fraction of the K codes step n used (A x K = part 3's 'codes")
    print("   used'), R = codes moved by the restarts in step n. Its epoch lines give 'active' as a percentage: the")
    print("   fraction of codes used at least once in the whole epoch.")
    tr_params, tr_norm, losses, _ = train_with_library(tr_cfg, tcfg, features, out / "train", watched)

    print(f"\n5) Reconstructions of {len(features.test.x)} test clips")
    test = features.test
    show = [int(np.flatnonzero(test.digit == d)[0]) for d in range(10) if (test.digit == d).any()][:N_SHOW]
    results = {}
    trained_label = f"part 4 ({total} steps from scratch)"
    for name, model in (("shipped", vq), ("trained", (tr_params, tr_cfg, tr_norm))):
        tok, rec, mse, mse_raw = reconstruct(model, test.x)
        st = Q.usage_stats(tok, model[1].K)
        results[name] = dict(tok=tok[show], rec=rec[show], hist=st["hist"], all_tok=tok)
        label = f"shipped CR={sh_cfg.cr} ({sh_epochs} epochs, {sh_n} clips)" if name == "shipped" else trained_label
        print(f"   {label:36s} MSE {mse:.4f} (standardised: log-mel variance = 1) = {mse_raw:.3f} log-mel units^2;")
        print(f"   {'':36s} perplexity {st['perplexity']:.1f} of {model[1].K}; "
              f"codes used {int((st['hist'] > 0).sum())} of {model[1].K}")
        if name == "shipped" and not info["real"]:
            same = float((tok == info["test_source_tokens"]).mean())
            print("   (no dataset: the test 'inputs' are the shipped model's own decodings, so this MSE measures how "
                  "stable decode -> encode -> decode is,")
            print(f"    not how well it keeps real speech; re-encoding them gives back {same:.1%} of the tokens they "
                  "were decoded from)")
    bits = sh_cfg.grid ** 2 * math.log2(sh_cfg.K)
    print(f"   a shipped token grid is {sh_cfg.grid}x{sh_cfg.grid} codes x log2({sh_cfg.K}) = {bits:.0f} bits per clip; "
          f"the log-mel is 64x64 = 4,096 floats")
    x_show = test.x[show]
    figure(out / "reconstructions.png", x_show, test.digit[show], results["shipped"], results["trained"], sh_cfg,
           tr_cfg, trained_label, "FSDD test clips" if info["real"] else "clips decoded from the shipped tokens (NO DATASET)")
    figure_training(out / "training.png", watched, losses, results["shipped"]["hist"], sh_cfg.K, tr_cfg)
    for name, arr in (("input", x_show), ("shipped", results["shipped"]["rec"]), ("trained", results["trained"]["rec"])):
        waves = audio.mel_to_audio(arr[:N_WAV], features.cfg)  # (N_WAV, n_samples)
        for i, w in enumerate(waves):
            audio.save_wav(out / f"clip{i}_{name}.wav", w, features.cfg.sr)
    print(f"   saved {out / 'reconstructions.png'}, {out / 'training.png'} and {3 * N_WAV} WAVs "
          "(clip*_input/shipped/trained.wav, all through the same Griffin-Lim: differences are the VQ-VAE's)")

    print("\n6) tokens.npz for the transformer prior (lesson 07): the shipped model's grids of these clips")
    write_tokens(out / "tokens.npz", vq, features, test_tokens=results["shipped"]["all_tok"])
    if args.quick or not info["real"]:
        print(f"   ({'--quick: a subset' if args.quick else 'synthesised clips'}; the shipped model's tokens of FSDD's "
              f"whole official split are in {SHIPPED_TOKENS})")
    print(f"   also written: {out / 'train'} (the part-4 run's last.npz, resumable with python -m minivq.train vqvae)")

    print("\nWhat to notice")
    print("- The step written out in part 2 and the library's agree: the gradients exactly (the same layer functions in")
    print("  the same order give the same floats), the loss and the updated parameters to float32 round-off. A VQ-VAE")
    print("  is an encoder, an argmin and a decoder; the one gradient trick is copying dL/dz_q to z_e.")
    if summary["low"]:
        print("- Part 3: as the encoder's outputs move away from the k-means codes, the codes used per step fell")
        print(f"  from {watched[1]['used']} (step 1) to {summary['low']['used']} (step {summary['low']['step']}).")
        print("  A code no vector chooses gets no update at all (no EMA mass, no gradient); the restarts, from step "
              f"{summary['first']} on,")
        print(f"  put codes back where the encoder outputs are ({summary['total']} in {len(watched)} steps).")
        after = [h for h in watched if summary["first"] is not None and h["step"] > summary["first"]]
        jump = max(after, key=lambda h: h["loss"]) if after else None
        if jump and jump["loss"] > watched[summary["first"]]["loss"]:
            print(f"  Right after them the loss jumped to {jump['loss']:.3f} (step {jump['step']}): the decoder met "
                  "codes it had not been trained on.")
    print(f"- Part 5: {total} steps give smeared reconstructions; the shipped model's {sh_epochs} epochs over {sh_n} "
          "clips keep")
    print("  formants and onsets. The error image shows where it still loses detail.")
    print("\nTry this (each changes the model of parts 2-5; compare with the default run)")
    print("- --cr 4: 32x32 tokens, 4x as many: the part-5 test MSE drops; the rare-code restart is on at CR=4 and")
    print("  moves hundreds of codes at step 0 already (part 2 says how many).")
    print("- --beta 0: no commitment term: the encoder outputs drift further from their codes before the restarts")
    print("  (q-error and |z_e|^2 columns of part 3), and the test MSE is worse.")
    print("- --K 32: a small codebook: perplexity can be 32 at most, and the test MSE rises.")
    print("- --no-ema: the codebook is learned by the codebook loss (its gradient is in the part-2 check); codes")
    print("  moved by Adam lag the encoder, |z_e|^2 grows, and the loss jumps when the restarts begin.")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
