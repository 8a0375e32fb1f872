"""The transformer prior in PyTorch with OUR weights: parity check and training-step timing.

    python benchmarks/torch_reference_gpt.py [--threads 2] [--context 256 1024] [--batch B] [--repeats 5]
                                             [--memory] [--sampling]

1. Parity (float64): the same GPTConfig and parameters loaded into the functional PyTorch
   model of torch_models.py (F.scaled_dot_product_attention, F.layer_norm, tanh-GELU,
   F.cross_entropy), for the default prior (dedicated class tokens, class_every), the shared
   class token, the unconditional prior and the prior with a null class; the loss and every parameter gradient must agree
   to 1e-8 relative, and so must the params after one clipped AdamW step.
2. Speed (float32): one training step (forward, backward, clip, AdamW) for each --context T
   (the model reads T positions of T+1-token sequences; default B = 8192 / T sequences, so
   B=32 at T=256 and B=8 at T=1024, the CR=4 prior), both ways with the same number of
   threads, interleaved, median of --repeats. Prints the numpy/torch ratio and where the
   numpy step spends its time; --memory adds the peak resident memory each side's step
   adds (each measured in a fresh process). Ends with one summary table.
3. --sampling: tokens/s of minivq.sampling.sample (sequences of the longest --context, batch
   10) with the KV cache, and without it on the first 64 tokens (each token re-runs the prefix).
torch is only needed here, never by minivq itself.
"""
import argparse
import os
import sys


def _set_threads(argv):
    """BLAS reads its thread count at import, so set it before numpy is imported."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int, default=2)
    n = p.parse_known_args(argv)[0].threads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


THREADS = _set_threads(sys.argv[1:])

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minivq import backend  # noqa: E402
from minivq import transformer as G  # noqa: E402
from minivq.gradcheck import rel_error  # noqa: E402
from minivq.optim import adam_step, clip_grad_norm  # noqa: E402
from minivq.sampling import sample  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs PyTorch (pip install torch); minivq itself does not")

import torch_models as TM  # noqa: E402  the PyTorch models (benchmarks/ is on sys.path when run)


def batch(cfg, B, seed):
    """B random sequences (B, T+1) int64 for cfg: a prefix token (random digits), then codes."""
    rng = np.random.default_rng(seed)
    prefix = backend.to_numpy(cfg.prefix(None if cfg.cond == "none" else rng.integers(0, cfg.n_class, B), n=B))
    if cfg.null_class:  # every other sequence has the null class ("no digit") as its prefix
        prefix[1::2] = cfg.null_token
    return np.concatenate([prefix[:, None], rng.integers(0, cfg.n_code, (B, cfg.context))], axis=1)


def parity(cfg, B=4, lr=1e-3, wd=0.01, clip=1.0):
    """float64: loss and every gradient, then the params after one clipped AdamW step, against
    torch. Prints one line each and returns True when all agree to 1e-8 relative."""
    params = {k: v.astype(np.float64) for k, v in G.init_params(cfg, seed=1).items()}
    seq = batch(cfg, B, 0)
    spk = np.arange(B) % cfg.n_speaker if cfg.speakers else None  # (B,) every speaker in turn
    loss, cache = G.forward(params, cfg, seq, speaker=spk)
    grads = G.backward(cache)
    tp = TM.to_torch(params)
    tloss, _ = TM.gpt_loss(tp, cfg, torch.tensor(seq), speaker=None if spk is None else torch.tensor(spk))
    tloss.backward()
    errs = TM.grad_errors(grads, tp)
    worst = max(errs, key=errs.get)
    lerr = abs(loss - tloss.item()) / abs(loss)
    name = f"cond={cfg.cond}" + ("" if cfg.cond == "none" else f", class_token={cfg.class_token}, "
                                 f"class_every={cfg.class_every}" + (", null_class" if cfg.null_class else "")
                                 + (f", {cfg.n_speaker} speakers" if cfg.speakers else ""))
    print(f"parity float64 ({name}; B={B}, T={cfg.context}): loss numpy {loss:.12f} torch {tloss.item():.12f} "
          f"(rel {lerr:.2e}); worst grad rel error {errs[worst]:.2e} ({worst}) over {len(errs)} tensors")
    g, _ = clip_grad_norm(grads, clip)
    nd = G.no_decay_names(params)
    adam_step(params, g, {}, lr, weight_decay=wd, no_decay=nd)
    opt = TM.adamw(tp, nd, lr, wd)
    TM.clip_grad_norm_(list(tp.values()), clip)  # minivq's guard (torch's own adds 1e-6 to the norm)
    opt.step()
    step_err = max(rel_error(params[k], tp[k].detach().numpy()) for k in params)
    print(f"  after one clipped AdamW step: worst param rel error {step_err:.2e}")
    return errs[worst] < 1e-8 and lerr < 1e-8 and step_err < 1e-8


def steps(cfg, B, lr=1e-3, wd=0.01, clip=1.0):
    """(numpy step, torch step): one float32 training step each, same weights and batch."""
    torch.set_num_threads(THREADS)
    params = G.init_params(cfg, seed=2)  # float32
    nd = G.no_decay_names(params)
    seq = batch(cfg, B, 1)
    opt = {}
    tp = TM.to_torch(params)
    topt = TM.adamw(tp, nd, lr, wd)
    tseq = torch.tensor(seq)

    def np_step():
        loss, cache = G.forward(params, cfg, seq)
        grads, _ = clip_grad_norm(G.backward(cache), clip)
        adam_step(params, grads, opt, lr, weight_decay=wd, no_decay=nd)

    def torch_step():
        topt.zero_grad(set_to_none=True)
        TM.gpt_loss(tp, cfg, tseq)[0].backward()
        torch.nn.utils.clip_grad_norm_(list(tp.values()), clip)
        topt.step()

    return np_step, torch_step


def timing(cfg, B, repeats):
    np_step, torch_step = steps(cfg, B)
    np_step(), torch_step()  # warm up (allocations, first-call costs)
    tn, tt = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both
        t0 = time.perf_counter(); np_step(); tn.append(time.perf_counter() - t0)  # noqa: E702
        t0 = time.perf_counter(); torch_step(); tt.append(time.perf_counter() - t0)  # noqa: E702
    mn, mt = float(np.median(tn)), float(np.median(tt))
    print(f"training step float32, B={B}, sequence {cfg.context + 1} tokens (T={cfg.context}), "
          f"{THREADS} threads, median of {repeats}: numpy {mn:.3f} s, torch {mt:.3f} s, ratio {mn / mt:.2f}")
    print(f"  numpy runs: {' '.join(f'{t:.2f}' for t in tn)}; torch runs: {' '.join(f'{t:.2f}' for t in tt)}")
    from torch_reference import matmul_gflops  # the sibling script (benchmarks/ is on sys.path when run)
    gf, peak = step_gflop(cfg, B), matmul_gflops()
    print(f"  matrix-product work {gf:.1f} GFLOP/step: numpy reaches {gf / mn:.0f} GFLOP/s, torch {gf / mt:.0f}; "
          f"a large float32 matmul runs at {peak:.0f} GFLOP/s here, so products alone need {gf / peak * 1e3:.0f} ms")
    profile_numpy(np_step)
    return {"model": f"GPT T={cfg.context} B={B} train step", "numpy_ms": mn * 1e3, "torch_ms": mt * 1e3,
            "ratio": mn / mt}


def step_rss(side, context, B):
    """In a fresh process: the resident memory (MiB) that two training steps of `side` ('numpy'
    or 'torch') add at their peak above what the set-up (weights, batch, imports) holds.
    Linux: the peak (VmHWM) is reset through /proc/self/clear_refs after the set-up
    (ru_maxrss would carry the parent's peak across the exec)."""
    import subprocess
    code = (f"import sys; sys.argv = [sys.argv[0], '--threads', '{THREADS}']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import torch_reference_gpt as R; from minivq import transformer as G; "
            f"n, t = R.steps(G.GPTConfig(context={context}), {B}); f = n if {side!r} == 'numpy' else t; "
            f"kib = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]); "
            f"open('/proc/self/clear_refs', 'w').write('5'); base = kib('VmRSS'); f(); f(); "
            f"print((kib('VmHWM') - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def step_gflop(cfg, B):
    """Matrix-product work of one training step in GFLOP (2 per multiply-add), from the shapes.
    Per token and layer: the four linears (C x 3C, C x C, C x 4C, 4C x C) and, in attention,
    q k^T and A v over all T keys (the full T x T product is formed, then masked). Backward
    costs twice the linears (input and weight gradients) and four T x C products in attention.
    The LM head (C x V) is a linear too. Element-wise work is left out."""
    C, T, V = cfg.d_model, cfg.context, cfg.vocab_size
    lin = cfg.n_layer * 12 * C * C + C * V  # multiply-adds per token, forward
    att = cfg.n_layer * 2 * T * C
    return 2 * B * T * (3 * lin + 3 * att) / 1e9


def profile_numpy(step):
    """Where the numpy step goes: cProfile by function (tottime), top entries."""
    import cProfile
    import pstats
    pr = cProfile.Profile()
    pr.enable()
    step()
    pr.disable()
    st = pstats.Stats(pr)
    rows = sorted(((v[2], f"{os.path.basename(k[0])}:{k[2]}") for k, v in st.stats.items()), reverse=True)
    total = sum(r[0] for r in rows)
    print("  numpy step by function (self time): " +
          ", ".join(f"{name} {t:.2f}s ({100 * t / total:.0f}%)" for t, name in rows[:8]))


def sampling_speed(cfg, n=10, uncached_tokens=64):
    """Cached decoding of full cfg.context-token sequences; the uncached path (a full forward per
    token, O(T^2) each) is timed on the first ``uncached_tokens`` tokens only."""
    params = G.init_params(cfg, seed=3)
    for use_cache, n_tok in ((True, cfg.context), (False, uncached_tokens)):
        t0 = time.perf_counter()
        s = sample(params, cfg, n, cond=list(range(n)), seed=0, use_cache=use_cache, top_k=50, n_tokens=n_tok)
        dt = time.perf_counter() - t0
        print(f"sampling {'with' if use_cache else 'without'} KV cache: {n} x {s.shape[1]} tokens in {dt:.2f} s "
              f"= {s.size / dt:.0f} tokens/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads (both sides)")
    ap.add_argument("--context", type=int, nargs="+", default=[256],
                    help="positions T the model reads (one timed row each; 1024 = the CR=4 prior)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per training step (default 8192 // T)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per side")
    ap.add_argument("--memory", action="store_true", help="also the peak memory one step adds, each side")
    ap.add_argument("--sampling", action="store_true", help="also time sampling (256 tokens, batch 10)")
    ap.add_argument("--skip-timing", action="store_true", help="parity only")
    args = ap.parse_args()
    backend.use("cpu")
    cfg = G.GPTConfig()  # the default prior: K=512, T=256, d=128, 4 layers, 4 heads, class_every
    # parity for each kind of prefix the pipeline trains: dedicated class tokens (class_every on),
    # the shared class token (class_every off), the unconditional prior (start token), and the
    # conditional prior with a null class (half the batch fed it), and the digit+speaker prior
    ok = all([parity(c) for c in (cfg, G.GPTConfig(class_token="shared"), G.GPTConfig(cond="none"),
                                  G.GPTConfig(null_class=True), G.GPTConfig(speakers=("s0", "s1", "s2")))])
    for T in args.context:
        if T > 256:  # the long context too, where the attention runs in several query blocks
            ok = parity(G.GPTConfig(context=T), B=2) and ok
    print("PARITY OK" if ok else "PARITY FAILED")
    rows = []
    if not args.skip_timing:
        for T in args.context:
            B = args.batch or max(1, 8192 // T)
            rows.append(timing(G.GPTConfig(context=T), B, args.repeats))
            if args.memory:
                rows[-1]["numpy_mib"], rows[-1]["torch_mib"] = (step_rss(side, T, B) for side in ("numpy", "torch"))
                print(f"  peak memory one step adds: numpy {rows[-1]['numpy_mib']:.0f} MiB, "
                      f"torch {rows[-1]['torch_mib']:.0f} MiB")
    if args.sampling:  # at the longest context asked for: T=1024 decodes the CR=4 prior's whole sequence
        sampling_speed(G.GPTConfig(context=max(args.context)))
    if rows:
        mem = args.memory
        print(f"\n{'model':34s} {'device':18s} {'ours ms':>8s} {'torch ms':>9s} {'ratio':>6s}"
              + (f" {'ours MiB':>9s} {'torch MiB':>9s}" if mem else ""))
        for r in rows:
            print(f"{r['model']:34s} {f'cpu ({THREADS} threads)':18s} {r['numpy_ms']:8.0f} {r['torch_ms']:9.0f} "
                  f"{r['ratio']:6.2f}" + (f" {r['numpy_mib']:9.0f} {r['torch_mib']:9.0f}" if mem else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
