"""Lesson 03 - a plain convolutional autoencoder on log-mel spectrograms (no quantiser yet).

The VQ-VAE of the next lessons squeezes a 64x64 log-mel through a small grid of vectors and
back. Before adding the discrete bottleneck we train the continuous version, built only from
the layer pairs of lesson 02, and look at what its reconstructions get wrong:

    x (B,1,64,64) -conv 4x4 s2-> (B,C1,32,32) -relu-conv 4x4 s2-> (B,C2,16,16) -relu-conv 1x1-> z (B,Z,16,16)
    z -conv 3x3-> (B,C2,16,16) -relu-convT 4x4 s2-> (B,C1,32,32) -relu-convT 4x4 s2-> x_hat (B,1,64,64)

    loss = mean (x_hat - x)^2        dloss/dx_hat = 2 (x_hat - x) / (number of elements)

x is the log-mel standardised with the TRAIN set's mean and std (one scalar each). One training
step = forward, loss, backward (the forward read bottom-up), Adam update; all four are written
out below and the gradient is checked against finite differences on a tiny copy of the model.

Two artefacts, both measured at the end:
  blur         MSE is minimised by the conditional MEAN: detail the bottleneck cannot pin down
               (exact harmonics, noise texture) is averaged into a smooth guess.
  checkerboard a stride-2 transposed convolution paints a KxK stamp every 2 pixels. With K not
               divisible by 2 (e.g. 3) the stamps overlap unevenly (1, 2 or 4 per pixel); with
               K = 4 (here) they overlap evenly, but the four 2x2 sub-kernels that make even and
               odd pixels are separate weights, and until training balances them even and odd
               pixels differ: a 2-pixel checkerboard.

    python lessons/03_conv_autoencoder.py [--quick] [--out out/lesson03] [--epochs N] [--z Z] [--seed S]
        [--upsample {convT,nearest}] [--data FSDD_DIR]

Data: the FSDD spoken digits if MINIVQ_FSDD (or --data) names the folder; otherwise SYNTHETIC
spectrogram-like images (gliding formant bands in noise), and the lesson says so.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import audio, bundle, data, optim  # noqa: E402
from minivq import conv  # noqa: E402
from minivq import layers as L  # noqa: E402
from minivq import vqvae as V  # noqa: E402
from minivq.backend import asarray, to_numpy, xp  # noqa: E402
from minivq.gradcheck import numerical_gradient, rel_error  # noqa: E402

SEED = 0
C1, C2, Z = 16, 32, 4         # encoder channels and bottleneck channels (z is Z x 16 x 16)
BATCH = 32
LR = 3e-3
BETAS, EPS = (0.9, 0.999), 1e-8   # Adam
EPOCHS, QUICK_EPOCHS = 15, 4
PER_DIGIT, QUICK_PER_DIGIT = None, 40   # clips per digit and split (None: all)
N_SYNTH, QUICK_N_SYNTH = 2000, 400      # synthetic training images without a dataset
QUICK_N_TEST = 100            # --quick: test clips (every k-th, all digits) for the learning curve
N_SHOW = 3                    # test examples drawn
N_MEASURE = 64                # test examples the artefacts are measured on (spread over the test set)
GRIFFIN_LIM_ITERS = 64
TINY = dict(c1=2, c2=3, z=1, size=8)  # the gradient-check model: channels and image side


# ----------------------------------------------------------------------------- data
def synthetic_logmels(n, rng, n_mels=64, n_frames=64):
    """Spectrogram-like images: three formant bands gliding in frequency, an on/off envelope,
    noise floor near log(1e-5). -> (N, 64, 64) float32 log-power."""
    f = np.arange(n_mels)[:, None]
    t = np.linspace(0, 1, n_frames)[None, :]
    digit = rng.integers(0, 10, n)
    x = np.empty((n, n_mels, n_frames), np.float32)
    for i, d in enumerate(digit):
        img = np.full((n_mels, n_frames), -11.0)
        on, off = rng.uniform(0.05, 0.3), rng.uniform(0.6, 0.95)
        env = 1 / (1 + np.exp(-40 * (t - on))) / (1 + np.exp(40 * (t - off)))
        for k in range(3):
            centre = 6 + 14 * k + 8 * np.sin(2 * np.pi * (d / 10 + k / 3) + 3 * t * (1 + d % 3))
            img = np.logaddexp(img, 4 - 2 * k + np.log(env + 1e-9) - ((f - centre) / 2.5) ** 2)
        x[i] = img + 0.3 * rng.standard_normal(img.shape)
    return x


def load_data(root, quick, rng):
    """-> (train_x, test_x, source description, FeatureConfig); x is (N, 64, 64) float32 log-mel."""
    if root:
        per_digit = QUICK_PER_DIGIT if quick else PER_DIGIT
        feats = data.load_features(root, max_per_digit=per_digit)
        return feats.train.x, feats.test.x, f"FSDD at {root} (max_per_digit={per_digit})", feats.cfg
    print("NOTE: no dataset (MINIVQ_FSDD unset, no --data), so this run trains on SYNTHETIC spectrogram-like\n"
          "      images (gliding bands in noise), not speech; set MINIVQ_FSDD=/path/to/fsdd for real digits.")
    n = QUICK_N_SYNTH if quick else N_SYNTH
    return synthetic_logmels(n, rng), synthetic_logmels(n // 4, rng), "synthetic", audio.FeatureConfig()


# ----------------------------------------------------------------------------- model
def init_params(rng, c1=C1, c2=C2, z=Z, upsample="convT", dtype=np.float32):
    """He-normal weights (std sqrt(2 / fan_in); the last, linear layer smaller), zero biases.
    Conv weights (F, C, K, K); conv-transpose weights (C_in, C_out, K, K), where a stride-2
    transpose sums K*K/4 taps per output pixel. upsample='nearest' replaces each convT by a
    nearest-neighbour 2x upsample and a 3x3 conv (weights (F, C, 3, 3))."""
    def he(shape, fan_in, gain=2.0):
        return asarray((rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(dtype))
    zeros = lambda n: asarray(np.zeros(n, dtype))  # noqa: E731
    p = {"enc1_w": he((c1, 1, 4, 4), 16), "enc1_b": zeros(c1),
         "enc2_w": he((c2, c1, 4, 4), c1 * 16), "enc2_b": zeros(c2),
         "enc3_w": he((z, c2, 1, 1), c2), "enc3_b": zeros(z),
         "dec1_w": he((c2, z, 3, 3), z * 9), "dec1_b": zeros(c2)}
    if upsample == "convT":
        p.update(dec2_w=he((c2, c1, 4, 4), c2 * 4), dec2_b=zeros(c1),
                 dec3_w=he((c1, 1, 4, 4), c1 * 4, gain=0.5), dec3_b=zeros(1))
    else:
        p.update(dec2_w=he((c1, c2, 3, 3), c2 * 9), dec2_b=zeros(c1),
                 dec3_w=he((1, c1, 3, 3), c1 * 9, gain=0.5), dec3_b=zeros(1))
    return p


def up2_forward(x):
    """Nearest-neighbour 2x upsampling (B, C, H, W) -> (B, C, 2H, 2W): every pixel becomes a 2x2 block."""
    return x.repeat(2, axis=2).repeat(2, axis=3)


def up2_backward(dout):
    """Each input pixel fed a 2x2 block, so its gradient is the block's sum."""
    B, C, H2, W2 = dout.shape
    return dout.reshape(B, C, H2 // 2, 2, W2 // 2, 2).sum(axis=(3, 5))


def upsample_forward(h, w, b):
    """One 2x up-step of the decoder: convT 4x4 s2 (weights (C_in, C_out, 4, 4)), or nearest
    upsample + conv 3x3 (weights (C_out, C_in, 3, 3))."""
    if w.shape[2] == 4:
        return conv.conv_transpose2d_forward(h, w, b, stride=2, pad=1)
    return conv.conv2d_forward(up2_forward(h), w, b, pad=1)


def upsample_backward(dout, cache):
    if isinstance(cache, conv.ConvTranspose2dCache):
        return conv.conv_transpose2d_backward(dout, cache)
    du, dw, db = conv.conv2d_backward(dout, cache)
    return up2_backward(du), dw, db


def forward(p, x):
    """x: (B, 1, H, W) standardised log-mel -> (loss, x_hat, cache)."""
    h1, c1 = conv.conv2d_forward(x, p["enc1_w"], p["enc1_b"], stride=2, pad=1)    # (B, C1, H/2, W/2)
    a1, r1 = L.relu_forward(h1)
    h2, c2 = conv.conv2d_forward(a1, p["enc2_w"], p["enc2_b"], stride=2, pad=1)   # (B, C2, H/4, W/4)
    a2, r2 = L.relu_forward(h2)
    z, c3 = conv.conv2d_forward(a2, p["enc3_w"], p["enc3_b"])                     # (B, Z, H/4, W/4) bottleneck
    h4, c4 = conv.conv2d_forward(z, p["dec1_w"], p["dec1_b"], pad=1)              # (B, C2, H/4, W/4)
    a4, r4 = L.relu_forward(h4)
    h5, c5 = upsample_forward(a4, p["dec2_w"], p["dec2_b"])                    # (B, C1, H/2, W/2)
    a5, r5 = L.relu_forward(h5)
    x_hat, c6 = upsample_forward(a5, p["dec3_w"], p["dec3_b"])                 # (B, 1, H, W)
    diff = x_hat - x
    loss = (diff * diff).mean()                                                # MSE
    dx_hat = diff * (2.0 / diff.size)                                          # its gradient
    return loss, x_hat, (c1, r1, c2, r2, c3, c4, r4, c5, r5, c6, dx_hat)


def backward(cache):
    """Gradients of the loss for every parameter: the forward above, read bottom-up."""
    c1, r1, c2, r2, c3, c4, r4, c5, r5, c6, dx_hat = cache
    g = {}
    da5, g["dec3_w"], g["dec3_b"] = upsample_backward(dx_hat, c6)
    dh5 = L.relu_backward(da5, r5)
    da4, g["dec2_w"], g["dec2_b"] = upsample_backward(dh5, c5)
    dh4 = L.relu_backward(da4, r4)
    dz, g["dec1_w"], g["dec1_b"] = conv.conv2d_backward(dh4, c4)
    da2, g["enc3_w"], g["enc3_b"] = conv.conv2d_backward(dz, c3)
    dh2 = L.relu_backward(da2, r2)
    da1, g["enc2_w"], g["enc2_b"] = conv.conv2d_backward(dh2, c2)
    dh1 = L.relu_backward(da1, r1)
    _, g["enc1_w"], g["enc1_b"] = conv.conv2d_backward(dh1, c1, need_dx=False)  # dx of the input is not needed
    return g


def adam_update(p, grads, state, lr):
    """One Adam step on every parameter (in place); state: {name: (m, v)} and 't'."""
    state["t"] = state.get("t", 0) + 1
    t = state["t"]
    for k, g in grads.items():
        m, v = state.setdefault(k, (xp.zeros_like(g), xp.zeros_like(g)))
        m *= BETAS[0]
        m += (1 - BETAS[0]) * g                    # running mean of the gradient
        v *= BETAS[1]
        v += (1 - BETAS[1]) * g * g                # running mean of its square
        m_hat, v_hat = m / (1 - BETAS[0] ** t), v / (1 - BETAS[1] ** t)   # bias correction
        p[k] -= lr * m_hat / (xp.sqrt(v_hat) + EPS)


def train_step(p, x, state, lr):
    """forward -> MSE -> backward -> Adam. Returns the loss (a float)."""
    loss, _, cache = forward(p, x)
    grads = backward(cache)
    adam_update(p, grads, state, lr)
    return float(loss)


def mean_loss(p, x):
    """Mean MSE over x (N, 1, 64, 64) in batches."""
    losses = [float(forward(p, x[i:i + BATCH])[0]) * len(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    return sum(losses) / len(x)


# ----------------------------------------------------------------------------- checks
def check_against_library(rng, upsample):
    """The written-out pieces vs finite differences and minivq: on a tiny float64 model."""
    print(f"check on a tiny float64 copy (channels {TINY['c1']}/{TINY['c2']}/{TINY['z']}, "
          f"{TINY['size']}x{TINY['size']} images):")
    p = init_params(rng, TINY["c1"], TINY["c2"], TINY["z"], upsample, dtype=np.float64)
    for k in p:  # random biases too: with zero biases a ReLU input can be exactly 0, a kink that
        if k.endswith("_b"):  # finite differences straddle (the derivative is undefined there)
            p[k] += asarray(0.1 * rng.standard_normal(p[k].shape))
    x = asarray(rng.standard_normal((2, 1, TINY["size"], TINY["size"])))
    loss, x_hat, cache = forward(p, x)
    lib_loss, lib_dx = L.mse(x_hat, x)
    print(f"   MSE and its gradient vs layers.mse: {abs(float(loss) - float(lib_loss)):.1e}, "
          f"{float(xp.abs(cache[-1] - lib_dx).max()):.1e}")
    grads = backward(cache)
    worst = max(rel_error(grads[k], numerical_gradient(lambda: forward(p, x)[0], p[k])) for k in p)
    print(f"   backward vs centred finite differences, worst relative error over {len(p)} parameter arrays: {worst:.1e}")
    q = {k: v.copy() for k, v in p.items()}
    adam_update(p, grads, {}, LR)
    optim.adam_step(q, grads, {}, LR, betas=BETAS, eps=EPS)
    print(f"   one Adam step vs optim.adam_step: max |difference| {max(float(xp.abs(p[k] - q[k]).max()) for k in p):.1e}")


def artefact_numbers(x, x_hat):
    """x, x_hat: (N, 64, 64) standardised (host) -> (MSE, detail ratio, checkerboard ratio).
    detail: energy of neighbour differences after 2x2 average pooling (pooling removes the
    2-pixel checkerboard), reconstruction / input: < 1 means blurred.
    checkerboard: energy of the (+ - / - +) pattern inside each 2x2 block, reconstruction / input."""
    def detail(a):
        b = a.reshape(len(a), 32, 2, 32, 2).mean(axis=(2, 4))
        return (np.diff(b, axis=1) ** 2).mean() + (np.diff(b, axis=2) ** 2).mean()

    def checker(a):
        b = a.reshape(len(a), 32, 2, 32, 2)
        return (((b[:, :, 0, :, 0] - b[:, :, 0, :, 1] - b[:, :, 1, :, 0] + b[:, :, 1, :, 1]) / 4) ** 2).mean()
    return float(((x_hat - x) ** 2).mean()), detail(x_hat) / detail(x), checker(x_hat) / checker(x)


def convT_of_constant(w, k_side=8):
    """What a stride-2 conv-transpose paints from a constant input of ones: (2k, 2k) (host),
    summed over output channels, no bias. Uneven overlap or unequal sub-kernels show as a pattern."""
    ones = asarray(np.ones((1, w.shape[0], k_side, k_side), np.float32))
    out, _ = conv.conv_transpose2d_forward(ones, w, asarray(np.zeros(w.shape[1], np.float32)), stride=2, pad=1)
    return to_numpy(out[0]).sum(0)


def compare_with_vqvae(params, te, test_x, mean, std, epochs, source):
    """Measure MSE, detail and checkerboard for this model and the shipped VQ-VAE on the same test
    clips and print them. -> (x (n, 64, 64), [(name, reconstruction (n, 64, 64))], VQ-VAE params, cfg);
    all standardised with this lesson's train statistics, on the host."""
    pick = np.unique(np.linspace(0, len(te) - 1, min(N_MEASURE, len(te))).round().astype(int))  # the test set is sorted by digit
    n = len(pick)
    x = to_numpy(te[asarray(pick), 0])                            # (n, 64, 64)
    ae = to_numpy(forward(params, te[asarray(pick)])[1][:, 0])    # (n, 64, 64)
    vq_params, vq_cfg, vq_norm = V.load_vqvae(bundle.DEFAULT_CHECKPOINT / "vqvae.npz")
    vq_logmel = to_numpy(V.reconstruct(vq_params, V.standardise(test_x[pick], vq_norm), vq_cfg))[:, 0] \
        * vq_norm["std"] + vq_norm["mean"]                        # (n, 64, 64) log-mel
    rows = [(f"autoencoder, {epochs} epochs", ae), ("shipped VQ-VAE", (vq_logmel - mean) / std)]
    about = [f"this autoencoder, {epochs} epochs", f"shipped VQ-VAE (CR={vq_cfg.cr}, {vq_cfg.K} codes, trained long)"]
    print(f"\nartefacts on {n} test clips (standardised units; ratios are reconstruction / input):")
    print(f"   {'model':55s} {'MSE':>7s} {'detail':>7s} {'checkerboard':>13s}")
    for name, (_, r) in zip(about, rows):
        mse, det, chk = artefact_numbers(x, r)
        print(f"   {name:55s} {mse:7.4f} {det:7.2f} {chk:13.2f}")
    if source == "synthetic":
        print("   (the shipped VQ-VAE has never seen synthetic images; its numbers here are out of distribution)")
    print("   detail < 1: blurred (MSE averages what the bottleneck cannot pin down); checkerboard > 1: the\n"
          "   up-steps paint even and odd pixels differently (see convT_constant.png)")
    return x, rows, vq_params, vq_cfg


def constant_input_stamps(params, vq_params, vq_cfg, upsample):
    """What stride-2 conv-transposes paint from a constant input: {title: (h, w) image}, printed."""
    ones = asarray(np.ones((1, 1, 8, 8), np.float32))
    uneven, _ = conv.conv_transpose2d_forward(ones, asarray(np.ones((1, 1, 3, 3), np.float32)),
                                           asarray(np.zeros(1, np.float32)), stride=2)  # (1, 1, 17, 17)
    stamps = {"ones kernel 3x3 (uneven overlap)": to_numpy(uneven[0, 0]),
              "ones kernel 4x4 (even overlap)": convT_of_constant(asarray(np.ones((1, 1, 4, 4), np.float32))),
              "shipped VQ-VAE, last up-step": convT_of_constant(vq_params[f"dec_up{vq_cfg.n_down - 1}_w"])}
    if upsample == "convT":
        stamps["this autoencoder, last up-step"] = convT_of_constant(params["dec3_w"])
    for k, v in stamps.items():
        inner = v[2:-2, 2:-2]
        print(f"   conv-transpose 2x of a constant, {k:34s}: interior {inner.min():7.3f} .. {inner.max():7.3f} "
              f"(spread {(inner.max() - inner.min()) / max(abs(inner).max(), 1e-12):.0%})")
    print("   a ones kernel 3x3 paints 1, 2 or 4 stamps on a pixel, a 4x4 one paints 4 on every interior pixel;\n"
          "   trained 4x4 layers paint a grid anyway (their four 2x2 sub-kernels differ). Whether the grid reaches\n"
          "   the output depends on the layers before it, which can learn to cancel it: compare the spread of the\n"
          "   shipped VQ-VAE's last layer with its checkerboard ratio in the table.")
    return stamps


# ----------------------------------------------------------------------------- run
def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a plain convolutional autoencoder on log-mels.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs on a subset")
    ap.add_argument("--out", default="out/lesson03", help="folder for figures and WAVs")
    ap.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder (default: $MINIVQ_FSDD)")
    ap.add_argument("--epochs", type=int, default=None, help=f"epochs (default {EPOCHS}, --quick {QUICK_EPOCHS})")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the weights, data order and synthetic data")
    ap.add_argument("--z", type=int, default=Z, help="bottleneck channels (z is Z x 16 x 16)")
    ap.add_argument("--upsample", choices=("convT", "nearest"), default="convT",
                    help="decoder up-steps: conv-transpose 4x4 s2, or nearest 2x + conv 3x3")
    args = ap.parse_args(argv)
    if args.z < 1 or (args.epochs is not None and args.epochs < 1):
        ap.error("--z and --epochs must be >= 1")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(__doc__[:__doc__.index("    python lessons")].rstrip() + "\n")  # the idea, its equations, the artefacts
    rng = np.random.default_rng(args.seed)
    check_against_library(np.random.default_rng(SEED + 1), args.upsample)  # its own draws: training is unaffected

    train_x, test_x, source, cfg = load_data(args.data, args.quick, rng)
    if args.quick and len(test_x) > QUICK_N_TEST:
        test_x = test_x[::len(test_x) // QUICK_N_TEST][:QUICK_N_TEST]  # every k-th clip: all digits, less time
    mean, std = float(train_x.mean()), float(train_x.std())  # train statistics only
    print(f"data: {source}; train {train_x.shape}, test {test_x.shape}; "
          f"log-mel mean {mean:.2f}, std {std:.2f} (train)")
    tr = asarray(((train_x - mean) / std)[:, None].astype(np.float32))  # (N, 1, 64, 64)
    te = asarray(((test_x - mean) / std)[:, None].astype(np.float32))   # (N, 1, 64, 64)

    params = init_params(rng, z=args.z, upsample=args.upsample)
    n_params = sum(int(v.size) for v in params.values())
    print(f"model: {n_params:,} parameters, decoder up-steps: {args.upsample}; "
          f"bottleneck {args.z}x16x16 = {args.z * 256} numbers for 4096 inputs")
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    steps_per_epoch = len(tr) // BATCH
    total = epochs * steps_per_epoch
    opt_state, step_losses, test_curve = {}, [], [mean_loss(params, te)]
    print(f"baseline: predicting the mean gives test MSE {float(xp.mean(te * te)):.3f}; "
          f"the untrained model {test_curve[0]:.3f}")
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(tr))
        for s in range(steps_per_epoch):
            lr = optim.lr_at(len(step_losses), LR, warmup=steps_per_epoch // 2, total=total, min_lr=LR / 20)
            step_losses.append(train_step(params, tr[asarray(order[s * BATCH:(s + 1) * BATCH])], opt_state, lr))
        test_curve.append(mean_loss(params, te))
        print(f"epoch {epoch + 1:2d}/{epochs}: train MSE {np.mean(step_losses[-steps_per_epoch:]):.4f}, "
              f"test MSE {test_curve[-1]:.4f}  ({time.perf_counter() - t0:.0f} s)")

    x_show, rows, vq_params, vq_cfg = compare_with_vqvae(params, te, test_x, mean, std, epochs, source)
    stamps = constant_input_stamps(params, vq_params, vq_cfg, args.upsample)

    show = np.linspace(0, len(x_show) - 1, N_SHOW).round().astype(int)  # different digits
    show_in = x_show[show] * std + mean                           # (N_SHOW, 64, 64) log-mel
    recon = [(name, r[show] * std + mean) for name, r in rows]
    refs = {"predict the mean": float(xp.mean(te * te)),
            f"shipped VQ-VAE ({len(x_show)} test clips)": artefact_numbers(x_show, rows[1][1])[0]}
    save_figures(out_dir, step_losses, test_curve, steps_per_epoch, show_in, recon, stamps, refs)
    for i in range(min(2, N_SHOW)):
        for tag, m in (("input", show_in[i]), ("reconstruction", recon[0][1][i])):
            wave = audio.mel_to_audio(m, cfg, n_iter=GRIFFIN_LIM_ITERS, seed=SEED)
            path = out_dir / f"test{i}_{tag}.wav"
            audio.save_wav(path, wave, sr=cfg.sr)
            print(f"saved {path} ({len(wave) / cfg.sr:.3f} s, Griffin-Lim from the log-mel)")

    mse, det, chk = artefact_numbers(x_show, rows[0][1])
    print(f"\nWhat to notice: the test MSE fell from {test_curve[0]:.3f} (untrained) to {test_curve[-1]:.4f}."
          f"\nDetail ratio {det:.2f}: "
          + ("the reconstructions are smoother than the input: MSE's average of detail it cannot pin down."
             if det < 1 else "not below 1 yet, the model still adds structure of its own.")
          + f"\nCheckerboard ratio {chk:.2f}: "
          + ("the up-steps still paint even and odd pixels differently (the fine grid in the error maps)."
             if chk > 1 else "training has balanced the up-steps' sub-kernels; the grid is below the input's own level.")
          + f"\nThe shipped VQ-VAE must pass everything through {vq_cfg.grid ** 2} tokens of log2({vq_cfg.K}) = "
          f"{np.log2(vq_cfg.K):.0f} bits each;\nthis autoencoder passes {args.z * 256} real numbers. "
          "The next lessons add that discrete bottleneck.")
    print("Try this (a --quick run's numbers move with --seed; compare full runs for small effects):\n"
          "  --quick --upsample nearest   nearest-neighbour 2x + 3x3 conv instead of conv-transposes: every\n"
          "                       output pixel is made by the same weights, so even after 4 epochs the\n"
          "                       checkerboard ratio is below 1 (compare plain --quick; it runs slower).\n"
          "  --epochs 1           the checkerboard ratio is largest right after the start and falls with training.\n"
          f"  --z 1                1 bottleneck channel instead of {Z}: the test MSE is clearly higher.\n"
          "  --quick --seed 1, 2  how much of a 4-epoch result is the draw of the initial weights.")
    return 0


def save_figures(out_dir, step_losses, test_curve, steps_per_epoch, show_in, recon, stamps, refs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(np.arange(1, len(step_losses) + 1), step_losses, lw=0.8, alpha=0.7, label="train (per step)")
    ax.plot(steps_per_epoch * np.arange(len(test_curve)), test_curve, "o-", label="test (per epoch; 0 = untrained)")
    for (name, value), ls in zip(refs.items(), ("--", ":")):
        ax.axhline(value, c="0.4", ls=ls, lw=1, label=f"{name}: {value:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (standardised log-mel)")
    ax.legend(fontsize=8)
    ax.set_title("convolutional autoencoder: learning curve")
    fig.savefig(out_dir / "loss_curve.png", dpi=110)
    plt.close(fig)

    n = len(show_in)
    fig, axes = plt.subplots(1 + 2 * len(recon), n, figsize=(3.2 * n, 2.6 * (1 + 2 * len(recon))),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    lo, hi = show_in.min(), show_in.max()
    err_max = float(np.percentile(np.abs(np.stack([r - show_in for _, r in recon])), 99.5))  # clip the worst 0.5%
    panels = [("input", show_in, "magma", lo, hi, "log-mel")]
    for name, r in recon:
        panels += [(name, r, "magma", lo, hi, "log-mel"),
                   (f"{name}: error", r - show_in, "RdBu_r", -err_max, err_max, "recon - input (clipped)")]
    for row, (name, imgs, cmap, vmin, vmax, unit) in enumerate(panels):
        for i in range(n):
            ax = axes[row, i]
            im = ax.imshow(imgs[i], origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(f"test clip {i}: {name}", fontsize=8)
        for i in range(n):
            axes[-1, i].set_xlabel("frame")
        axes[row, 0].set_ylabel("mel band")
        fig.colorbar(im, ax=axes[row, :], shrink=0.9, label=unit)
    fig.savefig(out_dir / "reconstructions.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(stamps), figsize=(4.4 * len(stamps), 4), squeeze=False, constrained_layout=True)
    for ax, (name, img) in zip(axes[0], stamps.items()):
        im = ax.imshow(img, origin="lower", cmap="viridis")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("output column")
        ax.set_ylabel("output row")
        fig.colorbar(im, ax=ax, shrink=0.8, label="output")
    fig.suptitle("a stride-2 conv-transpose applied to a constant input of ones (no bias; output summed over channels)")
    fig.savefig(out_dir / "convT_constant.png", dpi=90)
    plt.close(fig)
    print(f"saved {out_dir / 'loss_curve.png'}, {out_dir / 'reconstructions.png'} and {out_dir / 'convT_constant.png'}")


if __name__ == "__main__":
    sys.exit(main())
