"""Every figure minivq's library and command-line tools draw (host side, Matplotlib).

Each function takes host arrays (NumPy, already moved off the GPU with ``to_numpy``) and the
path of the PNG to write, draws one figure and closes it. Matplotlib is imported on first
use with the non-interactive Agg backend, so importing minivq never needs a display, and
training on a headless machine writes its figures all the same.

Size letters: B clips, M mel bands, T frames, h/w token grid, K codebook size.
Who draws what:
    confusion.png, confusion_real.png, confusion_generated.png   plot_confusion
    spectrograms.png (generate), real_vs_generated.png (pipeline) plot_spectrogram_grid
    recon.png (VQ-VAE end-of-training report)                     plot_vqvae_recon
    one small image per clip (listening pages, minivq/listening.py) save_spectrogram_png
"""
import math

import numpy as np

from minivq import checkpoint


def _save(fig, path, dpi):
    """Write the figure as a PNG through the one atomic writer."""
    checkpoint.atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))


def _pyplot():
    """matplotlib.pyplot on the Agg backend (file output only)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_spectrogram_grid(path, logmels, titles, ncols=10, suptitle=None):
    """Save a grid of log-mel images (B, M, T) with one title each."""
    plt = _pyplot()
    n = len(logmels)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, m, t in zip(axes.ravel(), logmels, titles):
        ax.imshow(m, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(t, fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)


def save_spectrogram_png(path, logmel, vmin, vmax, scale=2):
    """Save one log-mel (M, T) as a bare PNG image, low frequencies at the bottom, each bin
    ``scale`` x ``scale`` pixels (nearest neighbour, so a browser shows the bins as they are),
    magma colours over [vmin, vmax] (log-mel units; one range for a whole page keeps clips
    comparable). No axes or figure: plt.imsave writes the pixels only, fast for many clips."""
    plt = _pyplot()
    img = np.repeat(np.repeat(np.asarray(logmel, np.float32), scale, axis=0), scale, axis=1)  # (M*s, T*s)
    checkpoint.atomic_write(path, lambda f: plt.imsave(f, img, vmin=vmin, vmax=vmax, cmap="magma",
                                                       origin="lower", format="png"))


def plot_real_vs_generated(path, real_x, real_digit, gen_heard, gen_pred, gen_digits, n_per_digit):
    """Save one real test clip (top row) above the first generation (bottom row) of each digit
    that has both. real_x: (N, M, T) log-mel with labels real_digit (N,); gen_heard: (G, M, T)
    log-mel of generated sound, n_per_digit per digit of gen_digits in that order, with the
    classifier's digits gen_pred (G,)."""
    real_digit = np.asarray(real_digit)
    gen_digits = list(gen_digits)
    shown = [dg for dg in gen_digits if (real_digit == dg).any()]  # digits with a real and a generated clip
    first = [np.flatnonzero(real_digit == dg)[0] for dg in shown]
    gen_first = [gen_digits.index(dg) * n_per_digit for dg in shown]
    plot_spectrogram_grid(path, np.concatenate([real_x[first], gen_heard[gen_first]]),
                          [f"real {dg}" for dg in shown] +
                          [f"gen {dg}->{gen_pred[i]}" for dg, i in zip(shown, gen_first)],
                          ncols=len(shown), suptitle="top: real test clips; bottom: generated (heard digit)")


def plot_confusion(path, conf, title):
    """Save a confusion matrix (rows: requested/true digit, columns: classifier's digit)."""
    plt = _pyplot()
    conf = np.asarray(conf)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(conf, cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            if conf[i, j]:
                ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if conf[i, j] > conf.max() / 2 else "black")
    ax.set_xlabel("classifier's digit")
    ax.set_ylabel("requested / true digit")
    ax.set_xticks(range(conf.shape[1]))
    ax.set_yticks(range(conf.shape[0]))
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)


def code_colours(K, seed=0):
    """A colour map with K distinct colours for images of code indices 0..K-1 (draw them with
    vmin=0, vmax=K-1): a continuous map sampled at K points, shuffled so neighbouring indices,
    which mean nothing alike, do not get near-identical colours (tab20 would alias K > 20)."""
    from matplotlib.colors import ListedColormap
    cols = _pyplot().get_cmap("turbo")(np.linspace(0, 1, K))  # (K, 4)
    return ListedColormap(cols[np.random.default_rng(seed).permutation(K)])


def plot_vqvae_recon(path, x, rec, tokens, hist_test, hist_train, history, K, title):
    """Save the VQ-VAE report figure: one column per clip with its input log-mel x (n, M, T),
    reconstruction rec (n, M, T) and token grid tokens (n, h, w); below, codebook usage (code
    counts hist_test, hist_train (K,), sorted) and, when ``history`` (one dict per epoch with
    epoch, perplexity, active) is not empty, usage per epoch."""
    plt = _pyplot()
    n = len(x)
    fig = plt.figure(figsize=(2.2 * n, 9.5))
    gs = fig.add_gridspec(4, n, height_ratios=[1, 1, 1, 1.1])
    lo, hi = np.percentile(x[:n], [1, 99.9])
    for i in range(n):
        for r, (img, name) in enumerate(((x[i], "input"), (rec[i], "reconstruction"), (tokens[i], "tokens"))):
            ax = fig.add_subplot(gs[r, i])
            if r < 2:
                ax.imshow(img, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            else:
                ax.imshow(img, origin="lower", aspect="auto", cmap=code_colours(K), vmin=0, vmax=K - 1,
                          interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name)
    ax = fig.add_subplot(gs[3, : max(1, n // 2)])
    # lines, not bars: K bar patches make the figure slow to lay out and save
    ax.step(np.arange(K), np.maximum(np.sort(hist_train)[::-1], 0.5), where="mid", label="train")
    ax.step(np.arange(K), np.maximum(np.sort(hist_test)[::-1], 0.5), where="mid", label="test")
    ax.set_yscale("log"), ax.set_xlabel("code (sorted by use; 0.5 = unused)"), ax.set_ylabel("count"), ax.legend()
    ax.set_title("codebook usage")
    if history:
        ax = fig.add_subplot(gs[3, max(1, n // 2):])
        ep = [h["epoch"] for h in history]
        ax.plot(ep, [h["perplexity"] for h in history], "o-", label="perplexity")
        ax.plot(ep, [h["active"] * K for h in history], "s-", label="active codes")
        ax.set_xlabel("epoch"), ax.set_title(f"usage per epoch (K={K})"), ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, 80)
    plt.close(fig)
