"""Codebook ablation for the VQ-VAE: codebook loss vs EMA, with/without k-means
initialisation and dead-code restart. Prints a table of test perplexity, active codes and
test reconstruction MSE (standardised log-mel) and writes it to OUT/ablation.json / .md.

Every variant sees the same data, data order and initial weights (same seed).
Run: python benchmarks/codebook_ablation.py --data $MINIVQ_FSDD [--quick] [--out DIR]
"""
import argparse
import itertools
import json
import os
import time
from pathlib import Path

from minivq import train_vqvae as T
from minivq import vqvae as V
from minivq.data import load_features
from minivq.quantizer import usage_stats
from minivq.vqvae_report import reconstruction_stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MINIVQ_FSDD"), help="FSDD folder")
    ap.add_argument("--out", default="out/codebook_ablation", help="output folder")
    ap.add_argument("--cr", type=int, default=16, choices=(4, 16))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-per-digit", type=int, default=None, help="clips per digit and split")
    ap.add_argument("--quick", action="store_true",
                    help="30 clips per digit, batch 16, 4 epochs, a narrower model (hidden 64, K 128)")
    args = ap.parse_args()
    if not args.data:
        ap.error("no data folder: pass --data PATH or set MINIVQ_FSDD")
    mpd, batch, model = args.max_per_digit, args.batch, {}
    if args.quick:
        mpd, batch, model = mpd or 30, 16, dict(hidden=64, ch1=32, K=128)
    feats = load_features(args.data, max_per_digit=mpd, progress=False)
    out = Path(args.out)
    rows = []
    for ema, kmeans, restart in itertools.product((False, True), (False, True), (False, True)):
        name = f"{'EMA ' if ema else 'loss'} kmeans={'y' if kmeans else 'n'} restart={'y' if restart else 'n'}"
        cfg = V.VQVAEConfig(cr=args.cr, ema=ema, **model)
        tcfg = T.TrainConfig(epochs=args.epochs, batch_size=batch, kmeans_init=kmeans,
                             restart_after=10 if restart else 0, restart_share=None if restart else 0.0,
                             log_every=1e9)
        t0 = time.perf_counter()
        res = T.train(cfg, feats, out / name.replace(" ", "_").replace("=", ""), tcfg, finish=False, verbose=False)
        tokens, _, mse, _ = reconstruction_stats(res["params"], cfg, res["norm"], feats.test.x)
        st = usage_stats(tokens, cfg.K)
        rows.append({"variant": name, "ema": ema, "kmeans_init": kmeans, "restart": restart, "K": cfg.K,
                     "test_perplexity": st["perplexity"], "test_active": st["active"], "test_mse": mse,
                     "seconds": time.perf_counter() - t0})
        print(f"{name}: perplexity {st['perplexity']:6.1f} of {cfg.K} | active {st['active']:6.1%} | "
              f"test MSE {mse:.4f} | {rows[-1]['seconds']:.0f} s", flush=True)
    lines = ["| codebook | k-means init | dead-code restart | perplexity | active | test MSE |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'EMA' if r['ema'] else 'loss'} | {'yes' if r['kmeans_init'] else 'no'} | "
                     f"{'yes' if r['restart'] else 'no'} | {r['test_perplexity']:.1f} / {r['K']} | "
                     f"{r['test_active']:.1%} | {r['test_mse']:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps({"args": vars(args), "n_train": len(feats.train.x),
                                                   "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
