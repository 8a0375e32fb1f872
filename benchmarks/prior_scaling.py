"""How does the conditional prior scale? Test bits and unguided accuracy against size and compute.

For each configuration (width d_model, layers, epochs, dropout) this trains a class-conditional
prior on one VQ-VAE's token grids (the bundle's ``tokens.npz`` by default, so no dataset is
needed to train), then measures what the issue of conditioning asks about:

  test bits     mean NLL per code token on the test grids, in bits (the trainer's figure)
  heard @ T=1   the prior's own distribution, no guidance, no nucleus: ``--per-digit`` clips of
                every digit decoded by the bundle's VQ-VAE, vocoded and judged by the
                classifier (headline) and the listener (second judge)
  as classifier argmax over the 10 digits of log p(grid | digit) on the test grids, and the
                lower bound on I(digit; grid) in bits per grid (evaluate.prior_as_classifier)
  TopP / TopR   of the generations' classifier embeddings against the real test clips' (only
                with --data; a real clip's embedding needs the recording)
  compute       parameters, training seconds (this machine, one run) and training FLOPs by the
                usual estimate 6 * parameters * tokens seen, plus the attention products
                (12 * layers * T * d_model per token: QK^T and AV forward and backward)

Each configuration trains in its own folder under --work and each finished row is appended to
WORK/scaling.json, so an interrupted study resumes and a re-run only adds what is missing; two
runs may share WORK (give them different configurations).

    OMP_NUM_THREADS=1 python benchmarks/prior_scaling.py --work /tmp/scale --data $MINIVQ_FSDD \\
        --configs d128-L4-e12 d64-L4-e12 d256-L4-e4 d128-L2-e12 d128-L8-e4 d128-L4-e18 d128-L4-e12-p0.1
    python benchmarks/prior_scaling.py --work /tmp/scale --plot-only --figs docs/

A configuration is ``dD-LN-eE`` with an optional ``-pP`` (dropout P) and an optional ``-norm``
(class_norm: every LayerNorm's gain and bias also chosen by the digit); heads stay at 4 (head
width d_model / 4). All priors use the pipeline's recipe otherwise (class at every position,
"freq" order, AdamW 1e-3, batch 32, cosine to 1e-4, seed 0).
"""
import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivq import evaluate  # noqa: E402
from minivq import train_prior as TP  # noqa: E402
from minivq.bundle import DEFAULT_CHECKPOINT, generate_clips, load_bundle  # noqa: E402
from minivq.transformer import PRIOR_CKPT, GPTConfig, load_prior  # noqa: E402

CONFIG = re.compile(r"^d(\d+)-L(\d+)-e(\d+)(?:-p([0-9.]+))?(-norm)?$")


def parse_config(text):
    """'d128-L4-e12[-p0.1][-norm]' -> dict(d_model, n_layer, epochs, dropout, class_norm); ValueError otherwise."""
    m = CONFIG.match(text)
    if not m:
        raise ValueError(f"a configuration is dD-LN-eE[-pP][-norm] (e.g. d128-L4-e12, d128-L4-e12-p0.1 or "
                         f"d128-L4-e12-norm), got {text!r}")
    d, n_layer, epochs = int(m[1]), int(m[2]), int(m[3])
    p = float(m[4]) if m[4] else 0.0
    if min(d, n_layer, epochs) < 1 or d % 4 or not 0 <= p < 1:
        raise ValueError(f"{text!r}: width must be a positive multiple of 4 (4 heads), layers and epochs "
                         f">= 1, dropout in [0, 1)")
    return {"name": text, "d_model": d, "n_layer": n_layer, "epochs": epochs, "dropout": p, "class_norm": bool(m[5])}


def train_flops(n_params, n_layer, d_model, context, tokens_seen):
    """Training FLOPs: 6 N per token for the weights (forward 2N, backward 4N) plus the attention
    scores and their weighted sum, 2 * 2 * T * C per token forward per layer, tripled for backward."""
    return 6.0 * n_params * tokens_seen + 12.0 * n_layer * context * d_model * tokens_seen


def run_config(c, tokens_path, work, bundle, real, per_digit, seed, overrides=None):
    """Train (or reuse) one prior and measure it -> the row dict."""
    folder = work / c["name"]
    cfg = GPTConfig(cond="class", d_model=c["d_model"], n_layer=c["n_layer"], dropout=c["dropout"],
                    class_norm=c.get("class_norm", False))
    tcfg = TP.TrainConfig(epochs=c["epochs"], seed=seed, **(overrides or {}))
    summary = None
    if not (folder / "metrics.json").is_file():  # the trainer writes metrics.json when it finishes
        summary = TP.train(tokens_path, folder, cfg, tcfg, verbose=False)
    m = json.loads((folder / "metrics.json").read_text())
    prior = load_prior(folder / PRIOR_CKPT)
    toks = TP.load_tokens(tokens_path)
    n_params = int(sum(int(np.prod(v.shape)) for v in prior[0].values()))
    n_train = len(toks["train_tokens"]) if tcfg.max_train is None else min(tcfg.max_train, len(toks["train_tokens"]))
    tokens_seen = n_train * c["epochs"] * prior[1].context
    row = dict(c, params=n_params, test_bits=float(m["test_bits"]), train_seconds=float(m["elapsed_s"]),
               train_flops=train_flops(n_params, c["n_layer"], c["d_model"], prior[1].context, tokens_seen),
               seed=seed, per_digit=per_digit, fresh=summary is not None)

    pac = evaluate.prior_as_classifier(prior, toks["test_tokens"], toks["test_digit"])
    row["as_classifier"] = pac["accuracy"]
    row["mi_bits_lower_bound"] = pac["mi_bits_lower_bound"]

    digits = np.repeat(np.arange(10), per_digit)  # (10 n,)
    t0 = time.perf_counter()
    res = generate_clips(replace(bundle, prior=prior, guide=None), digits, seed=seed, temperature=1.0)
    row["sample_seconds"] = time.perf_counter() - t0
    row["heard"] = float(np.mean(res["pred"] == digits))
    row["heard_per_digit"] = [float(np.mean(res["pred"][digits == d] == d)) for d in range(10)]
    if "listener" in res:
        row["heard_listener"] = float(np.mean(res["listener"]["pred"] == digits))
    if real is not None:
        dm = evaluate.distribution_metrics(real, res["embed"], seed=seed)
        row.update(top_p=dm["fidelity"], top_r=dm["diversity"], frechet=dm["frechet"])
    return row


def table(rows):
    lines = ["| prior | params | epochs | train time | train PFLOP | test bits/token | heard @ T=1 (classifier / listener) "
             "| as classifier | I(digit; grid) ≥ | TopP / TopR |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["train_flops"]):
        lis = f" / {100 * r['heard_listener']:.1f} %" if "heard_listener" in r else ""
        tp = f"{r['top_p']:.3f} / {r['top_r']:.3f}" if r.get("top_r") is not None else ""
        drop = (f", dropout {r['dropout']:g}" if r["dropout"] else "") + (", class_norm" if r.get("class_norm") else "")
        lines.append(f"| d {r['d_model']}, {r['n_layer']} layers{drop} | {r['params']:,} | {r['epochs']} | "
                     f"{r['train_seconds'] / 60:.1f} min | {r['train_flops'] / 1e15:.2f} | {r['test_bits']:.3f} | "
                     f"{100 * r['heard']:.1f} %{lis} | {100 * r['as_classifier']:.1f} % | "
                     f"{r['mi_bits_lower_bound']:.2f} bits | {tp} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in rows:
        x = r["train_flops"] / 1e15
        for ax, y in zip(axes, (r["test_bits"], 100 * r["heard"], 100 * r["as_classifier"])):
            ax.scatter(x, y, s=20 + r["params"] / 2e4, alpha=0.7, marker="s" if r.get("class_norm") else "o")
            ax.annotate(r["name"], (x, y), fontsize=7, textcoords="offset points",  # class_norm rows sit on
                        xytext=(3, -9) if r.get("class_norm") else (3, 3))  # their plain twin: label below
    titles = ("test bits per token (lower is better)", "heard as requested at T = 1, no guidance (%)",
              "prior as a classifier of test grids (%)")
    for ax, t in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("training compute (PFLOP, 6·N·tokens + attention)")
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].axhline(95, color="grey", ls="--", lw=0.8)
    axes[2].axhline(95, color="grey", ls="--", lw=0.8)
    fig.suptitle("Conditional prior on FSDD CR=16 tokens: marker area ∝ parameters, squares: class_norm")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def real_embeddings(data, bundle):
    """The classifier's embeddings of the real test clips of ``data`` (official split)."""
    from minivq import data as D
    feats = D.load_features(data, split="official", cfg=bundle.features, progress=False)
    return evaluate.judge(bundle.classifier, feats.test.x)["embed"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for each prior, scaling.json and scaling.md")
    p.add_argument("--configs", nargs="*", default=[], help="dD-LN-eE[-pP][-norm] ...")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="bundle: VQ-VAE, judges and tokens.npz")
    p.add_argument("--tokens", default=None, help="token grids to train on (default CHECKPOINT/tokens.npz)")
    p.add_argument("--data", default=None, help="FSDD folder: real test clips for TopP&R (optional)")
    p.add_argument("--per-digit", type=int, default=100, help="generated clips per digit (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot-only", action="store_true", help="only redraw the table and figure from scaling.json")
    p.add_argument("--figs", default=None, help="folder for prior_scaling.png (default WORK)")
    a = p.parse_args(argv)
    try:
        configs = [parse_config(c) for c in a.configs]
        if a.per_digit < 1:
            raise ValueError(f"--per-digit must be >= 1, got {a.per_digit}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "scaling.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    if not a.plot_only:
        bundle = load_bundle(a.checkpoint, cond="class")
        tokens = Path(a.tokens) if a.tokens else Path(a.checkpoint) / "tokens.npz"
        real = real_embeddings(a.data, bundle) if a.data else None
        for c in configs:
            if any(r["name"] == c["name"] and r["seed"] == a.seed and r["per_digit"] == a.per_digit for r in rows):
                print(f"{c['name']}: already measured")
                continue
            t0 = time.perf_counter()
            row = run_config(c, tokens, work, bundle, real, a.per_digit, a.seed)
            # read again before appending: another run may share WORK (one BLAS thread each on 2 cores)
            rows = json.loads(path.read_text()) if path.exists() else []
            rows.append(row)
            path.write_text(json.dumps(rows, indent=1))
            print(f"{c['name']}: {row['test_bits']:.3f} bits/token, heard {100 * row['heard']:.1f} % at T=1, "
                  f"as classifier {100 * row['as_classifier']:.1f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
    if rows:
        (work / "scaling.md").write_text(table(rows) + "\n")
        plot(rows, Path(a.figs or work) / "prior_scaling.png")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
