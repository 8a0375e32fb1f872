"""Lesson 07: a decoder-only transformer learns the prior over VQ-VAE tokens.

    python lessons/07_transformer.py [--quick] [--tokens DIR/tokens.npz] [--out out/lesson07]

Each 16 x 16 token grid is read in raster order after one prefix token: the digit's class
token (conditional prior P(z | digit)) or a start token (unconditional P(z)). We train
both with minivq.train_prior (quick settings here) and look at:
  - the loss curves (nats per token; bits = nats / ln 2),
  - the test loss per grid position (which codes are hard to predict),
  - sampled token grids (one per digit for the conditional prior),
  - the attention maps of the trained model on a test sequence.
Without --tokens (or when the file is missing) the lesson uses synthetic structured tokens
(train_prior.synthetic_tokens) and says so.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import backend  # noqa: E402
from minivq import train_prior as TP  # noqa: E402  (this lesson trains)
from minivq.sampling import sample  # noqa: E402
from minivq.transformer import (NATS_PER_BIT, GPTConfig, attention_maps, forward_logits, load_prior,  # noqa: E402
                                make_sequences)

MODEL = dict(d_model=128, n_layer=4, n_head=4)  # the default prior
QUICK_MODEL = dict(d_model=32, n_layer=2, n_head=2)
HYPER = dict(epochs=4, batch_size=32, lr=1e-3, min_lr=1e-4, warmup=100, seed=0, max_train=None)
QUICK_HYPER = dict(epochs=2, batch_size=32, lr=5e-3, min_lr=5e-4, warmup=5, seed=0, max_train=256)
SYNTH = dict(n_train=1000, n_test=200, K=64, grid=16, noise=0.1, seed=0)
QUICK_SYNTH = dict(SYNTH, n_test=64)
QUICK_TEST = 64  # test grids evaluated with --quick
TEMPERATURE, TOP_K = 1.0, None  # sampling settings for the figure
SAMPLE_SEED = 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small model, few steps")
    ap.add_argument("--tokens", default=None, help="tokens.npz from the VQ-VAE trainer (else synthetic tokens)")
    ap.add_argument("--out", default="out/lesson07", help="output folder")
    args = ap.parse_args()
    backend.use("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.tokens and Path(args.tokens).is_file():
        data, source = TP.load_tokens(args.tokens), args.tokens
    else:
        if args.tokens:
            print(f"NOTE: {args.tokens} does not exist.")
        print("NOTE: no tokens.npz given; using synthetic structured tokens (each digit owns a column of "
              "codes that fills a random time window, code 0 = silence, 10% noise). Pass --tokens "
              "DIR/tokens.npz from `python -m minivq.train vqvae` for the real thing.")
        data, source = TP.synthetic_tokens(**(QUICK_SYNTH if args.quick else SYNTH)), "synthetic"
    if args.quick:  # a subset of the test grids keeps the per-epoch evaluation short
        data = {**data, "test_tokens": data["test_tokens"][:QUICK_TEST], "test_digit": data["test_digit"][:QUICK_TEST]}
    grid = data["train_tokens"].shape[1:]
    print(f"tokens: {source}; {len(data['train_tokens'])} train / {len(data['test_tokens'])} test grids of "
          f"{grid[0]}x{grid[1]}, K={data['K']}; sequences are 1 prefix + {grid[0] * grid[1]} codes")
    model = QUICK_MODEL if args.quick else MODEL
    hyper = QUICK_HYPER if args.quick else HYPER

    runs = {}
    for cond in ("class", "none"):
        print(f"\ntraining the {'conditional' if cond == 'class' else 'unconditional'} prior (cond={cond})")
        runs[cond] = TP.train(data, out / cond, GPTConfig(cond=cond, **model), TP.TrainConfig(**hyper, log_every=15.0))
    print("\ntest loss per code token:")
    for cond, s in runs.items():
        print(f"   cond={cond:5s}: {s['test_nats']:.4f} nats = {s['test_bits']:.4f} bits "
              f"(uniform guess: {np.log2(data['K']):.2f} bits)")
    print("   knowing the digit removes uncertainty, so the conditional loss should be lower: "
          f"{'yes' if runs['class']['test_nats'] < runs['none']['test_nats'] else 'NO (train longer)'}")

    # ---- loss curves and per-position loss
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for cond, s in runs.items():
        sl = np.asarray(s["step_loss"]) / NATS_PER_BIT
        ax[0].plot(np.arange(1, len(sl) + 1), sl, lw=0.8, label=f"train cond={cond}")
        h = s["history"]
        ax[0].plot([e["step"] for e in h], [e["test_bits"] for e in h], "o-", label=f"test cond={cond}")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("bits per token")
    ax[0].set_title("loss")
    ax[0].legend()
    for i, (cond, s) in enumerate(runs.items()):
        pp = np.asarray(s["test_bits_per_position"]).reshape(grid)
        im = ax[1 + i].imshow(pp, cmap="magma", origin="lower", aspect="auto")
        ax[1 + i].set_title(f"test bits per position, cond={cond}")
        ax[1 + i].set_xlabel("time column")
        ax[1 + i].set_ylabel("frequency row")
        fig.colorbar(im, ax=ax[1 + i])
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    for cond, s in runs.items():
        pp = np.asarray(s["test_bits_per_position"])
        print(f"   cond={cond}: first position {pp[0]:.2f} bits, mean of the rest {pp[1:].mean():.2f} bits "
              "(the first code has only the prefix to go on)")

    # ---- samples
    params_c, cfg_c, _ = load_prior(out / "class" / TP.CKPT_NAME)
    params_u, cfg_u, _ = load_prior(out / "none" / TP.CKPT_NAME)
    sc = sample(params_c, cfg_c, 10, cond=np.arange(10), temperature=TEMPERATURE, top_k=TOP_K, seed=SAMPLE_SEED)
    su = sample(params_u, cfg_u, 10, temperature=TEMPERATURE, top_k=TOP_K, seed=SAMPLE_SEED)
    fig, ax = plt.subplots(3, 10, figsize=(16, 5.4))
    real = [np.flatnonzero(data["test_digit"] == d)[0] if (data["test_digit"] == d).any() else 0 for d in range(10)]
    for d in range(10):
        for r, (g, title) in enumerate(((data["test_tokens"][real[d]], f"real, digit {d}"),
                                         (sc[d].reshape(grid), f"sample | digit {d}"),
                                         (su[d].reshape(grid), "unconditional"))):
            ax[r, d].imshow(g, cmap="tab20", vmin=0, vmax=data["K"] - 1, origin="lower", interpolation="nearest")
            ax[r, d].set_title(title, fontsize=8)
            ax[r, d].axis("off")
    fig.suptitle("token grids (colour = code id): real test grids, conditional samples, unconditional samples")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    print(f"\nsampled 10 conditional (digits 0-9) and 10 unconditional grids; codes used per sample: "
          f"conditional {np.mean([len(np.unique(s)) for s in sc]):.0f}, unconditional "
          f"{np.mean([len(np.unique(s)) for s in su]):.0f}, real {np.mean([len(np.unique(g)) for g in data['test_tokens'][real]]):.0f}")

    # ---- attention maps of the trained conditional model on one test sequence
    seq = make_sequences(data["test_tokens"][:1], data["test_digit"][:1], cfg_c)  # (1, 1 + T)
    _, cache = forward_logits(params_c, cfg_c, backend.asarray(seq[:, :-1]))
    maps = [backend.to_numpy(m)[0] for m in attention_maps(cache)]  # each (H, T, T)
    L, H = len(maps), maps[0].shape[0]
    fig, ax = plt.subplots(L, H, figsize=(3 * H, 3 * L), squeeze=False)
    for l in range(L):
        for h in range(H):
            ax[l, h].imshow(maps[l][h] ** 0.5, cmap="viridis", interpolation="nearest")  # sqrt: show small weights
            ax[l, h].set_title(f"layer {l} head {h}", fontsize=9)
            ax[l, h].set_xticks([])
            ax[l, h].set_yticks([])
    fig.suptitle("attention (sqrt of weight), query position down, key position across; column 0 = class token")
    fig.tight_layout()
    fig.savefig(out / "attention_maps.png", dpi=100)
    on_prefix = np.mean([m[:, 1:, 0].mean() for m in maps])
    W = grid[1]
    above = np.mean([m[:, np.arange(W, m.shape[1]), np.arange(W, m.shape[1]) - W].mean() for m in maps])
    print(f"attention on the class token (mean over layers/heads/positions): {on_prefix:.3f}; on the cell one row "
          f"above in the grid (position t-{W}): {above:.3f}; uniform over the past would give ~{2 / cfg_c.context:.3f}")
    print(f"\nsaved {out / 'loss.png'}, {out / 'samples.png'}, {out / 'attention_maps.png'}")


if __name__ == "__main__":
    main()
