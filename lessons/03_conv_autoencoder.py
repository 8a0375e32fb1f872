"""Lesson 03 - a plain convolutional autoencoder on log-mel spectrograms (no quantiser yet).

The VQ-VAE of the next lessons squeezes a 64x64 log-mel through a small grid of vectors and
back. Before adding the discrete bottleneck we train the continuous version, built only from
the layers of lesson 02, to see that the encoder/decoder pair can reconstruct speech at all:

    x (B,1,64,64) -conv 4x4 s2-> (B,C1,32,32) -relu-conv 4x4 s2-> (B,C2,16,16) -relu-conv 1x1-> z (B,Z,16,16)
    z -conv 3x3-> (B,C2,16,16) -relu-convT 4x4 s2-> (B,C1,32,32) -relu-convT 4x4 s2-> x_hat (B,1,64,64)

loss = mean squared error between x_hat and x, where x is the log-mel standardised with the
TRAIN set's mean and std (one scalar each), trained with Adam. The model's backward is the
forward read bottom-up, one layer call per line.

    MINIVQ_FSDD=/work/shared/data/fsdd python lessons/03_conv_autoencoder.py [--quick] [--out out/lesson03]

Without MINIVQ_FSDD it trains on synthetic spectrogram-like images (and says so).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import audio, data, optim  # noqa: E402
from minivq import layers as L  # noqa: E402
from minivq.backend import asarray, to_numpy, xp  # noqa: E402

SEED = 0
C1, C2, Z = 16, 32, 4         # encoder channels and bottleneck channels (z is Z x 16 x 16)
BATCH = 32
LR = 3e-3
EPOCHS, QUICK_EPOCHS = 12, 12
PER_DIGIT, QUICK_PER_DIGIT = None, 40   # clips per digit and split (None: all)
N_SHOW = 4                    # test examples drawn and rendered as audio
GRIFFIN_LIM_ITERS = 64


# ----------------------------------------------------------------------------- data
def synthetic_logmels(n, rng, n_mels=64, n_frames=64):
    """Spectrogram-like images: a few formant bands gliding in frequency, an on/off envelope,
    noise floor near log(1e-5). (N, 64, 64) float32 log-power, label = which glide pattern."""
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
    return x, digit


def load_data(quick, rng):
    """-> (train_x, test_x, source description); x is (N, 64, 64) float32 log-mel."""
    root = os.environ.get("MINIVQ_FSDD")
    if root:
        per_digit = QUICK_PER_DIGIT if quick else PER_DIGIT
        feats = data.load_features(root, max_per_digit=per_digit)
        return feats.train.x, feats.test.x, f"FSDD at {root} (max_per_digit={per_digit})", feats.cfg
    print("NOTE: MINIVQ_FSDD is not set, so this run uses SYNTHETIC spectrogram-like images;\n"
          "      set MINIVQ_FSDD=/path/to/fsdd for real speech.")
    n = 400 if quick else 2000
    return synthetic_logmels(n, rng)[0], synthetic_logmels(n // 4, rng)[0], "synthetic", audio.FeatureConfig()


# ----------------------------------------------------------------------------- model
def init_params(rng):
    """He-normal weights (std sqrt(2 / fan_in); the last, linear layer smaller), zero biases. Conv weights (F, C, K, K),
    conv-transpose weights (C_in, C_out, K, K); a stride-2 transpose sums K*K/4 taps per pixel."""
    def he(shape, fan_in, gain=2.0):
        return asarray((rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(np.float32))
    z = lambda n: asarray(np.zeros(n, np.float32))  # noqa: E731
    return {
        "enc1_w": he((C1, 1, 4, 4), 16), "enc1_b": z(C1),
        "enc2_w": he((C2, C1, 4, 4), C1 * 16), "enc2_b": z(C2),
        "enc3_w": he((Z, C2, 1, 1), C2), "enc3_b": z(Z),
        "dec1_w": he((C2, Z, 3, 3), Z * 9), "dec1_b": z(C2),
        "dec2_w": he((C2, C1, 4, 4), C2 * 4), "dec2_b": z(C1),
        "dec3_w": he((C1, 1, 4, 4), C1 * 4, gain=0.5), "dec3_b": z(1),
    }


def forward(p, x):
    """x: (B, 1, 64, 64) standardised log-mel -> (loss, x_hat, cache)."""
    h1, c1 = L.conv2d_forward(x, p["enc1_w"], p["enc1_b"], stride=2, pad=1)    # (B, C1, 32, 32)
    a1, r1 = L.relu_forward(h1)
    h2, c2 = L.conv2d_forward(a1, p["enc2_w"], p["enc2_b"], stride=2, pad=1)   # (B, C2, 16, 16)
    a2, r2 = L.relu_forward(h2)
    z, c3 = L.conv2d_forward(a2, p["enc3_w"], p["enc3_b"])                     # (B, Z, 16, 16)
    h4, c4 = L.conv2d_forward(z, p["dec1_w"], p["dec1_b"], pad=1)              # (B, C2, 16, 16)
    a4, r4 = L.relu_forward(h4)
    h5, c5 = L.conv_transpose2d_forward(a4, p["dec2_w"], p["dec2_b"], stride=2, pad=1)  # (B, C1, 32, 32)
    a5, r5 = L.relu_forward(h5)
    x_hat, c6 = L.conv_transpose2d_forward(a5, p["dec3_w"], p["dec3_b"], stride=2, pad=1)  # (B, 1, 64, 64)
    loss, dx_hat = L.mse(x_hat, x)
    return loss, x_hat, (c1, r1, c2, r2, c3, c4, r4, c5, r5, c6, dx_hat)


def backward(cache):
    """Gradients of the loss for every parameter: the forward above, read bottom-up."""
    c1, r1, c2, r2, c3, c4, r4, c5, r5, c6, dx_hat = cache
    g = {}
    da5, g["dec3_w"], g["dec3_b"] = L.conv_transpose2d_backward(dx_hat, c6)
    dh5 = L.relu_backward(da5, r5)
    da4, g["dec2_w"], g["dec2_b"] = L.conv_transpose2d_backward(dh5, c5)
    dh4 = L.relu_backward(da4, r4)
    dz, g["dec1_w"], g["dec1_b"] = L.conv2d_backward(dh4, c4)
    da2, g["enc3_w"], g["enc3_b"] = L.conv2d_backward(dz, c3)
    dh2 = L.relu_backward(da2, r2)
    da1, g["enc2_w"], g["enc2_b"] = L.conv2d_backward(dh2, c2)
    dh1 = L.relu_backward(da1, r1)
    _, g["enc1_w"], g["enc1_b"] = L.conv2d_backward(dh1, c1)  # dx of the input is not needed
    return g


def mean_loss(p, x):
    """Mean MSE over x (N, 1, 64, 64) in batches."""
    losses = [float(forward(p, x[i:i + BATCH])[0]) * len(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    return sum(losses) / len(x)


# ----------------------------------------------------------------------------- run
def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a plain convolutional autoencoder on log-mels.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs on a subset")
    ap.add_argument("--out", default="out/lesson03", help="folder for figures and WAVs")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    train_x, test_x, source, cfg = load_data(args.quick, rng)
    mean, std = float(train_x.mean()), float(train_x.std())  # train statistics only
    print(f"data: {source}; train {train_x.shape}, test {test_x.shape}; "
          f"log-mel mean {mean:.2f}, std {std:.2f} (train)")
    tr = asarray(((train_x - mean) / std)[:, None].astype(np.float32))  # (N, 1, 64, 64)
    te = asarray(((test_x - mean) / std)[:, None].astype(np.float32))   # (N, 1, 64, 64)

    params = init_params(rng)
    n_params = sum(int(v.size) for v in params.values())
    print(f"model: {n_params:,} parameters; bottleneck {Z}x16x16 = {Z * 256} numbers for 4096 inputs")
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    steps_per_epoch = len(tr) // BATCH
    total = epochs * steps_per_epoch
    opt_state, step_losses, test_curve = {}, [], []
    print(f"baseline: predicting the mean gives test MSE {float(xp.mean(te * te)):.3f}")
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(tr))
        for s in range(steps_per_epoch):
            idx = asarray(order[s * BATCH:(s + 1) * BATCH])
            loss, _, cache = forward(params, tr[idx])
            grads = backward(cache)
            optim.check_grads(params, grads)
            lr = optim.lr_at(len(step_losses), LR, warmup=steps_per_epoch // 2, total=total, min_lr=LR / 20)
            optim.adam_step(params, grads, opt_state, lr)
            step_losses.append(float(loss))
        test_curve.append(mean_loss(params, te))
        print(f"epoch {epoch + 1:2d}/{epochs}: train MSE {np.mean(step_losses[-steps_per_epoch:]):.4f}, "
              f"test MSE {test_curve[-1]:.4f}  ({time.perf_counter() - t0:.0f} s)")

    _, x_hat, _ = forward(params, te[:N_SHOW])
    show_in = to_numpy(te[:N_SHOW, 0]) * std + mean          # (N_SHOW, 64, 64) log-mel
    show_out = to_numpy(x_hat[:, 0]) * std + mean            # (N_SHOW, 64, 64) log-mel
    save_figures(out_dir, step_losses, test_curve, steps_per_epoch, show_in, show_out)
    for i in range(min(2, N_SHOW)):
        for tag, m in (("input", show_in[i]), ("reconstruction", show_out[i])):
            wave = audio.mel_to_audio(m, cfg, n_iter=GRIFFIN_LIM_ITERS, seed=SEED)
            path = out_dir / f"test{i}_{tag}.wav"
            audio.save_wav(path, wave, sr=cfg.sr)
            print(f"saved {path} ({len(wave) / cfg.sr:.3f} s, Griffin-Lim from the log-mel)")
    return 0


def save_figures(out_dir, step_losses, test_curve, steps_per_epoch, show_in, show_out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(step_losses) + 1), step_losses, lw=0.8, alpha=0.7, label="train (per step)")
    ax.plot(steps_per_epoch * np.arange(1, len(test_curve) + 1), test_curve, "o-", label="test (per epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (standardised log-mel)")
    ax.legend()
    ax.set_title("convolutional autoencoder")
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curve.png", dpi=110)
    plt.close(fig)

    n = len(show_in)
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
    lo, hi = show_in.min(), show_in.max()
    for i in range(n):
        for row, (img, name) in enumerate(((show_in[i], "input"), (show_out[i], "reconstruction"))):
            ax = axes[row, i]
            ax.imshow(img, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_title(f"test {i}: {name}", fontsize=9)
            ax.set_xlabel("frame")
            ax.set_ylabel("mel band")
    fig.tight_layout()
    fig.savefig(out_dir / "reconstructions.png", dpi=110)
    plt.close(fig)
    print(f"saved {out_dir / 'loss_curve.png'} and {out_dir / 'reconstructions.png'}")


if __name__ == "__main__":
    sys.exit(main())
