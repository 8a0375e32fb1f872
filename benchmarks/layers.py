"""Forward+backward time of the convolution layers at the VQ-VAE sizes (float32, B=32).

    python benchmarks/layers.py [--repeats 7] [--batch 32] [--no-torch]

Each row: median milliseconds over the repeats for one forward and one backward (dx, dw, db),
and GFLOP/s counting 3x the forward's multiply-adds (forward, dx, dw: 2 flops per MAC).
When PyTorch is installed the same rows are timed for torch.nn.functional (2 threads) in the
same loop, interleaved repeat by repeat, so machine noise hits both alike; ratio = ours / torch.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minivq import conv  # noqa: E402

# name, kind, C_in, C_out, K, stride, pad, H (input)
CASES = [
    ("conv 1->64 4x4 s2 @64", "conv", 1, 64, 4, 2, 1, 64),
    ("conv 64->128 4x4 s2 @32", "conv", 64, 128, 4, 2, 1, 32),
    ("conv 128->128 3x3 @16", "conv", 128, 128, 3, 1, 1, 16),
    ("conv 128->128 1x1 @16", "conv", 128, 128, 1, 1, 0, 16),
    ("conv 64->128 3x3 @16", "conv", 64, 128, 3, 1, 1, 16),
    ("res 128->32 3x3 @16", "conv", 128, 32, 3, 1, 1, 16),
    ("res 32->128 1x1 @16", "conv", 32, 128, 1, 1, 0, 16),
    ("res 128->32 3x3 @32", "conv", 128, 32, 3, 1, 1, 32),
    ("convT 128->64 4x4 s2 @16", "convT", 128, 64, 4, 2, 1, 16),
    ("convT 64->1 4x4 s2 @32", "convT", 64, 1, 4, 2, 1, 32),
]


def make(case, B, rng):
    name, kind, C, F, K, s, p, H = case
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    wshape = (F, C, K, K) if kind == "conv" else (C, F, K, K)
    w = (rng.standard_normal(wshape) / np.sqrt(C * K * K)).astype(np.float32)
    b = np.zeros(F, np.float32)
    return x, w, b


def flops(case, B):
    _, kind, C, F, K, s, p, H = case
    if kind == "conv":
        OH = (H + 2 * p - K) // s + 1
        macs = B * F * OH * OH * C * K * K
    else:
        macs = B * C * H * H * F * K * K  # every input pixel stamps F*K*K outputs
    return 3 * 2 * macs


def ours_step(case, x, w, b, dout):
    _, kind, C, F, K, s, p, H = case
    fwd, bwd = (conv.conv2d_forward, conv.conv2d_backward) if kind == "conv" else \
        (conv.conv_transpose2d_forward, conv.conv_transpose2d_backward)
    out, cache = fwd(x, w, b, stride=s, pad=p)
    return bwd(dout, cache)  # a fresh C-contiguous dout, as the next layer's backward makes


def torch_step(case, tx, tw, tb, tdout, torch):
    _, kind, C, F, K, s, p, H = case
    f = torch.nn.functional.conv2d if kind == "conv" else torch.nn.functional.conv_transpose2d
    out = f(tx, tw, tb, stride=s, padding=p)
    out.backward(tdout)
    g = (tx.grad, tw.grad, tb.grad)
    tx.grad = tw.grad = tb.grad = None
    return g


def timeit(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9, help="timed repeats per layer (median reported)")
    ap.add_argument("--batch", type=int, default=32, help="batch size")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--only", default="", help="run only rows whose name contains this text")
    args = ap.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(2)
        except ImportError:
            print("PyTorch not installed: timing ours only")
    print(f"B={args.batch} float32, repeats={args.repeats}, numpy {np.__version__}"
          + (f", torch {torch.__version__} (2 threads)" if torch else "")
          + f", OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    head = f"{'layer':26s} {'ours ms':>9s} {'GFLOP/s':>8s}"
    if torch:
        head += f" {'torch ms':>9s} {'GFLOP/s':>8s} {'ratio':>6s}"
    print(head)
    rng = np.random.default_rng(0)
    for case in CASES:
        if args.only not in case[0]:
            continue
        x, w, b = make(case, args.batch, rng)
        out_shape = conv.conv2d_forward(x[:1], w, b, stride=case[5], pad=case[6])[0].shape if case[1] == "conv" \
            else conv.conv_transpose2d_forward(x[:1], w, b, stride=case[5], pad=case[6])[0].shape
        dout = rng.standard_normal((args.batch,) + out_shape[1:]).astype(np.float32)  # (B, F, OH, OW)
        ours_step(case, x, w, b, dout)  # warm-up
        if torch:
            tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
            tdout = torch.tensor(dout)
            torch_step(case, tx, tw, tb, tdout, torch)
        t_ours, t_torch = [], []
        for _ in range(args.repeats):
            t_ours.append(timeit(lambda: ours_step(case, x, w, b, dout)))
            if torch:
                t_torch.append(timeit(lambda: torch_step(case, tx, tw, tb, tdout, torch)))
        fl = flops(case, args.batch)
        mo = statistics.median(t_ours)
        row = f"{case[0]:26s} {mo * 1e3:9.1f} {fl / mo / 1e9:8.1f}"
        if torch:
            mt = statistics.median(t_torch)
            row += f" {mt * 1e3:9.1f} {fl / mt / 1e9:8.1f} {mo / mt:6.2f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
