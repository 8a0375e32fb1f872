"""PyTorch reference for minivq models (torch is optional and never imported by minivq/).

Sections (each a function; main() runs them):
  vqvae_section(): builds the same VQ-VAE in PyTorch, copies our initial weights into it,
      checks that the code indices, the loss and every gradient match ours in float64
      (rel. error < 1e-8; the model is torch_models.vqvae_forward),
      then times one Adam training step both ways at B=32 in float32 with
      torch.set_num_threads(2) and prints the numpy/torch step-time ratio (median of repeats,
      interleaved so machine load hits both alike).

Run: python benchmarks/torch_reference.py [--sections vqvae] [--repeats 5] [--cr 16 4]
Ends with one summary table: model, device, our ms, torch ms, ratio (one row per --cr).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minivq import optim  # noqa: E402
from minivq import vqvae as V  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs PyTorch (pip install torch); minivq itself does not")

import torch_models as TM  # noqa: E402  the PyTorch models (benchmarks/ is on sys.path when run)


# ----------------------------------------------------------------------------- VQ-VAE
def step_gflop(cfg, B):
    """Multiply-adds of one training step (forward + backward), counted from the layer shapes,
    as GFLOP (2 per multiply-add). Each conv forward costs F*C*KH*KW per output pixel (a
    conv-transpose: per input pixel); backward costs twice that (weight and input gradients),
    except the first conv, whose input gradient is not formed. The quantiser's distance
    product is N*K*D. Element-wise work is left out: this is the matrix-product floor."""
    shapes = V.param_shapes(cfg)
    g, s = cfg.grid, cfg.in_size
    macs = 0
    for name, shp in shapes.items():
        if not name.endswith(("_w", "w1", "w2")):  # weights only (biases and the codebook are not convs)
            continue
        if name.startswith("enc_down"):
            i = int(name[len("enc_down")])
            px, first = (s >> (i + 1)) ** 2, i == 0
        elif name.startswith("dec_up"):
            px, first = (g << int(name[len("dec_up")])) ** 2, False  # input pixels of the conv-transpose
        else:
            px, first = g * g, False
        fwd = int(np.prod(shp)) * px * B
        macs += fwd * (2 if first else 3)
    macs += B * g * g * cfg.K * cfg.D  # nearest-code distances (no backward)
    return 2 * macs / 1e9


def vqvae_section(cr=16, repeats=5, batch=32):
    torch.set_num_threads(2)
    print(f"== VQ-VAE CR={cr}: parity with PyTorch {torch.__version__} (float64) ==")
    cfg = V.VQVAEConfig(cr=cr, ema=False)
    g = np.random.default_rng(0)
    params = V.init_params(cfg, seed=0, dtype="float64")
    # a codebook drawn from the encoder's output scale so many codes are in play
    x = g.standard_normal((4, 1, 64, 64))
    z_e, _ = V.encoder_forward(params, x, cfg)
    zv = V.to_vectors(z_e)
    params["codebook"] = zv[g.choice(len(zv), cfg.K, replace=len(zv) < cfg.K)] + 0.01 * g.standard_normal((cfg.K, cfg.D))
    loss, parts, cache = V.forward(params, x, cfg)
    grads = V.backward(cache)
    tp = TM.to_torch(params)
    tloss, _, tidx = TM.vqvae_forward(tp, cfg, torch.tensor(x))
    tloss.backward()
    same_idx = bool((tidx.numpy() == cache["idx"]).all())
    lerr = abs(float(tloss.detach()) - float(loss)) / abs(float(loss))
    errs = TM.grad_errors(grads, tp)
    worst = max(errs, key=errs.get)
    print(f"same code indices: {same_idx}; loss {float(loss):.10f} vs torch {float(tloss.detach()):.10f} (rel {lerr:.1e})")
    print(f"worst gradient rel. error {errs[worst]:.2e} ({worst}); all {len(errs)} < 1e-8: "
          f"{all(v < 1e-8 for v in errs.values())}")
    ok = same_idx and lerr < 1e-8 and errs[worst] < 1e-8
    print("PARITY OK" if ok else "PARITY FAILED")

    print(f"== one Adam training step, B={batch}, float32, 2 threads (median of {repeats}) ==")
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    xb = g.standard_normal((batch, 1, 64, 64)).astype(np.float32)
    opt_state = {}

    def ours():
        _, _, c = V.forward(p32, xb, cfg)
        gr = V.backward(c)
        optim.adam_step(p32, gr, opt_state, 1e-4)

    tp32 = TM.to_torch(p32)
    topt = torch.optim.Adam(list(tp32.values()), lr=1e-4)
    xt = torch.tensor(xb)

    def theirs():
        topt.zero_grad(set_to_none=True)
        lo, _, _ = TM.vqvae_forward(tp32, cfg, xt)
        lo.backward()
        topt.step()

    ours(), theirs()  # warm up
    t_ours, t_torch = [], []
    for _ in range(repeats):
        t = time.perf_counter(); ours(); t_ours.append(time.perf_counter() - t)  # noqa: E702
        t = time.perf_counter(); theirs(); t_torch.append(time.perf_counter() - t)  # noqa: E702
    mo, mt = statistics.median(t_ours), statistics.median(t_torch)
    print(f"  runs (ms) numpy: {' '.join(f'{t * 1e3:.0f}' for t in t_ours)}; torch: "
          f"{' '.join(f'{t * 1e3:.0f}' for t in t_torch)}")
    print(f"numpy {mo * 1e3:.0f} ms/step ({batch / mo:.1f} samples/s) | torch {mt * 1e3:.0f} ms/step "
          f"({batch / mt:.1f} samples/s) | ratio numpy/torch {mo / mt:.2f}")
    gf, peak = step_gflop(cfg, batch), matmul_gflops()
    print(f"matrix-product work {gf:.1f} GFLOP/step: numpy reaches {gf / mo:.0f} GFLOP/s, torch {gf / mt:.0f}; "
          f"one large float32 matmul here runs at {peak:.0f} GFLOP/s, so products alone need "
          f"{gf / peak * 1e3:.0f} ms of the step")
    return {"model": f"VQ-VAE CR={cr} B={batch} train step", "parity_ok": ok, "worst_grad_rel_error": errs[worst], "loss_rel_error": lerr, "same_idx": same_idx,
            "numpy_ms": mo * 1e3, "torch_ms": mt * 1e3, "ratio": mo / mt, "gflop": gf, "matmul_gflops": peak}


def matmul_gflops(n=2048, repeats=5):
    """GFLOP/s of one large float32 n x n matrix product (median of repeats): the rate a step
    made only of big, well-shaped products could reach on this machine."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)  # (n, n)
    a @ a  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


SECTIONS = {"vqvae": vqvae_section}


def summary_table(rows, threads=2):
    """One line per timed model: model, device, our ms, torch ms, ratio (median of the repeats)."""
    print(f"\n{'model':34s} {'device':18s} {'ours ms':>8s} {'torch ms':>9s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['model']:34s} {f'cpu ({threads} threads)':18s} {r['numpy_ms']:8.0f} {r['torch_ms']:9.0f} "
              f"{r['ratio']:6.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per side")
    ap.add_argument("--cr", type=int, nargs="+", default=[16], choices=(4, 16),
                    help="VQ-VAE compression ratio(s), one timed row each")
    args = ap.parse_args()
    ok, rows = True, []
    for name in args.sections:
        if name == "vqvae":
            for cr in args.cr:
                r = vqvae_section(cr=cr, repeats=args.repeats)
                ok = r["parity_ok"] and ok
                rows.append(r)
        else:
            SECTIONS[name]()
    if rows:
        summary_table(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
