"""Lesson 02 - layers with explicit forward and backward passes, checked by finite differences.

Every layer in minivq is a pair of free functions:
    out, cache = layer_forward(inputs...)      # compute, remember what backward needs
    grads      = layer_backward(dout, cache)   # dL/dinputs from dL/dout (the chain rule)

This lesson
  1. walks through linear and conv2d on tiny numbers you can check by hand,
  2. shows how im2col turns a convolution into ONE matrix product (and the shapes at the
     VQ-VAE sizes),
  3. runs the float64 gradient check on every layer and prints a table,
  4. saves a picture of im2col and a bar chart of the gradient-check errors.

    python lessons/02_layers.py [--quick] [--out out/lesson02]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import layers as L  # noqa: E402
from minivq.backend import asarray, to_numpy, xp  # noqa: E402  (arrays on the selected device, CPU or GPU)
from minivq.gradcheck import check_layer  # noqa: E402

SEED = 0
TOLERANCE = 1e-6          # worst relative error allowed in float64
VQVAE_BATCH = 32          # batch size used for the shape walk-through
IM2COL_IMAGE = 6          # side of the toy image drawn in the figure
IM2COL_KERNEL = 3         # its kernel side (stride 1, no padding)


def section(title):
    print("\n" + title + "\n" + "-" * len(title))


def linear_example():
    section("1. linear: out = x @ w + b")
    x = asarray([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])         # (N=2, D_in=3)
    w = asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])        # (D_in=3, D_out=2)
    b = asarray([0.5, -0.5])                                 # (D_out=2,)
    out, cache = L.linear_forward(x, w, b)
    print("x =\n", x, "\nw =\n", w, "\nb =", b)
    print("out = x @ w + b =\n", out, "   e.g. out[0,0] = 1*1 + 2*0 + 3*1 + 0.5 =", out[0, 0])
    dout = asarray([[1.0, 0.0], [0.0, 2.0]])                 # pretend dL/dout
    dx, dw, db = L.linear_backward(dout, cache)
    print("given dL/dout =\n", dout)
    print("dx = dout @ w.T   (each input feeds every output through w) =\n", dx)
    print("dw = x.T @ dout   (sum over the rows of outer products) =\n", dw)
    print("db = dout summed over rows =", db)


def conv_example():
    section("2. conv2d on a 1x1x4x4 image, 2x2 kernel, stride 2")
    x = asarray(np.arange(16.0).reshape(1, 1, 4, 4))         # (B=1, C=1, H=4, W=4)
    w = asarray([[[[1.0, 0.0], [0.0, -1.0]]]])               # (F=1, C=1, KH=2, KW=2)
    b = asarray(np.zeros(1))
    out, cache = L.conv2d_forward(x, w, b, stride=2)
    cols = L.im2col(x, 2, 2, stride=2)                       # (C*KH*KW=4, B*OH*OW=4)
    print("x[0,0] =\n", x[0, 0])
    print("im2col: one column per output pixel, one row per (channel, kernel row, kernel col):\n", cols)
    print("w as a row vector:", w.reshape(1, -1)[0], " -> out = w_row @ cols =", (w.reshape(1, -1) @ cols)[0])
    print("out[0,0] =\n", out[0, 0], "  (top-left minus bottom-right of each 2x2 block = -5)")
    dx, dw, db = L.conv2d_backward(xp.ones_like(out), cache)
    print("with dL/dout = 1 everywhere: dw =", dw.reshape(-1), "(sum of x under each kernel tap)")
    print("dx[0,0] (col2im scatters w back onto the pixels it touched) =\n", dx[0, 0])

    section(f"3. shapes at the VQ-VAE sizes (B={VQVAE_BATCH}, float32)")
    rng = np.random.default_rng(SEED)
    h = asarray(rng.standard_normal((VQVAE_BATCH, 1, 64, 64)).astype(np.float32))
    for F, K, s, p in [(64, 4, 2, 1), (128, 4, 2, 1), (128, 3, 1, 1)]:
        C, H = h.shape[1], h.shape[2]
        w = asarray((rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32))
        out, _ = L.conv2d_forward(h, w, asarray(np.zeros(F, np.float32)), stride=s, pad=p)
        OH = out.shape[2]
        print(f"conv {C:3d}->{F:3d} {K}x{K} s{s} p{p}: x {tuple(h.shape)} -> patches "
              f"({C * K * K}, {VQVAE_BATCH * OH * OH}) -> (F, C*K*K) @ patches -> out {tuple(out.shape)}")
        h = out
    for C, F in [(128, 64), (64, 1)]:
        w = asarray((rng.standard_normal((C, F, 4, 4)) / np.sqrt(C * 16)).astype(np.float32))
        out, _ = L.conv_transpose2d_forward(h[:, :C], w, asarray(np.zeros(F, np.float32)), stride=2, pad=1)
        print(f"conv-transpose {C:3d}->{F:3d} 4x4 s2 p1: {tuple(h[:, :C].shape)} -> {tuple(out.shape)}"
              "  ((H-1)*2 - 2 + 4 = 2H)")
        h = out


def gradcheck_table(quick):
    section("4. float64 gradient check of every layer (random dout, centred differences, h=1e-6)")
    rng = np.random.default_rng(SEED)
    r = lambda *s: asarray(rng.standard_normal(s))  # noqa: E731
    B = 2
    H, W = (5, 7) if quick else (9, 7)

    def loss_layer(fn):
        """Wrap a loss (returns (loss, dpred)) as a layer: backward scales dpred by dL/dloss."""
        return (lambda *a: fn(*a)), (lambda dout, dpred: dout * dpred)

    ce_f, ce_b = loss_layer(L.softmax_cross_entropy)
    mse_f, mse_b = loss_layer(L.mse)
    cases = [
        ("linear (x: B,T,D)", L.linear_forward, L.linear_backward,
         {"x": r(B, 3, 5), "w": r(5, 4), "b": r(4)}, None),
        ("conv2d 3x3 s1 p1", L.conv2d_forward, L.conv2d_backward,
         {"x": r(B, 3, H, W), "w": r(4, 3, 3, 3), "b": r(4)}, {"stride": 1, "pad": 1}),
        ("conv2d 4x4 s2 p1", L.conv2d_forward, L.conv2d_backward,
         {"x": r(B, 2, H, W), "w": r(3, 2, 4, 4), "b": r(3)}, {"stride": 2, "pad": 1}),
        ("conv_transpose2d 4x4 s2 p1", L.conv_transpose2d_forward, L.conv_transpose2d_backward,
         {"x": r(B, 3, 4, 3), "w": r(3, 2, 4, 4), "b": r(2)}, {"stride": 2, "pad": 1}),
        ("relu", L.relu_forward, L.relu_backward, {"x": r(B, 3, 7)}, None),
        ("gelu (tanh)", L.gelu_forward, L.gelu_backward, {"x": r(B, 3, 7)}, None),
        ("layernorm", L.layernorm_forward, L.layernorm_backward,
         {"x": r(B, 3, 7), "gamma": r(7), "beta": r(7)}, None),
        ("embedding", L.embedding_forward, L.embedding_backward,
         {"idx": asarray([[1, 3, 1], [0, 3, 3]]), "w": r(5, 4)}, None),
        ("softmax cross-entropy", ce_f, ce_b,
         {"logits": 3 * r(B, 5, 7), "targets": asarray(rng.integers(0, 7, (B, 5)))}, None),
        ("mse", mse_f, mse_b, {"pred": r(B, 3, 5), "target": r(B, 3, 5)}, None),
        ("residual block", L.residual_block_forward, L.residual_block_backward,
         {"x": r(B, 3, 5, 5), "w1": r(4, 3, 3, 3), "b1": r(4), "w2": r(3, 4, 1, 1), "b2": r(3)}, None),
    ]
    grad_names = {"mse": ["pred"]}
    rows = []
    print(f"{'layer':28s} {'gradients':28s} {'worst rel. error':>16s}  result")
    for name, fwd, bwd, inputs, kw in cases:
        errs = check_layer(fwd, bwd, inputs, grad_names=grad_names.get(name), kwargs=kw)
        worst = max(errs.values())
        ok = worst < TOLERANCE
        rows.append((name, worst, ok))
        print(f"{name:28s} {', '.join('d' + k for k in errs):28s} {worst:16.2e}  {'pass' if ok else 'FAIL'}")
    return rows


def save_figure(rows, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = IM2COL_IMAGE, IM2COL_KERNEL
    x = np.arange(n * n, dtype=float).reshape(1, 1, n, n)
    m = n - k + 1
    cols = to_numpy(L.im2col(asarray(x), k, k))              # (k*k, m*m), on the host for matplotlib
    fig = plt.figure(figsize=(12, 8.5))
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 2.2])
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    ax = axes[0]
    ax.imshow(x[0, 0], cmap="viridis")
    for (i, j), colour in zip([(0, 0), (0, 1), (2, 3)], ["w", "r", "orange"]):
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), k, k, fill=False, ec=colour, lw=2.5))
    ax.set_title(f"input {n}x{n}: 3 of its {m * m} {k}x{k} patches")
    ax = axes[1]
    ax.imshow(cols, cmap="viridis", aspect="auto")
    for c, colour in zip([0, 1, 2 * m + 3], ["w", "r", "orange"]):
        ax.add_patch(plt.Rectangle((c - 0.5, -0.5), 1, k * k, fill=False, ec=colour, lw=2.5))
    ax.set_title(f"im2col: ({k}x{k}, {m * m}) - each patch becomes a column")
    ax.set_xlabel("output pixel (B*OH*OW)")
    ax.set_ylabel("kernel tap (C*KH*KW)")
    ax = axes[2]
    names, worst = [r[0] for r in rows], [max(r[1], 1e-17) for r in rows]
    ax.barh(names, worst, color=["tab:green" if r[2] else "tab:red" for r in rows])
    ax.axvline(TOLERANCE, color="k", ls="--", label=f"tolerance {TOLERANCE:g}")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("worst relative error (float64)")
    ax.set_title("gradient check")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out_dir / "im2col_and_gradcheck.png"
    fig.savefig(path, dpi=110)
    print(f"\nsaved {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Layers: forward/backward by hand and the gradient check.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller gradient-check shapes")
    ap.add_argument("--out", default="out/lesson02", help="folder for the figure")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(precision=3, suppress=True)
    linear_example()
    conv_example()
    rows = gradcheck_table(args.quick)
    save_figure(rows, out_dir)
    failed = [r[0] for r in rows if not r[2]]
    print("all layers pass" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
