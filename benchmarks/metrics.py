"""Timing and memory of TopP&R (and PRDC) on Gaussian features.

    python benchmarks/metrics.py                 # n = m = 4,000, d = 32: median of --repeats runs
    python benchmarks/metrics.py --big 20000     # also n = m = 20,000 in a subprocess: time + peak memory

The big run happens in a fresh subprocess so that its peak resident memory (ru_maxrss) and the
peak of NumPy allocations (tracemalloc) belong to that run alone.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    import minivq  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivq.metrics import prdc, top_pr


def features(n, d, seed=0):
    g = np.random.RandomState(seed)
    return g.normal(size=(n, d)), g.normal(size=(n, d)) + 0.2


def child(n, d):
    """Runs in the subprocess: one TopP&R call at size n, prints a JSON line."""
    import tracemalloc
    real, fake = features(n, d)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t = time.perf_counter()
    r = top_pr(real, fake, rng=0)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"n": n, "d": d, "seconds": seconds, "fidelity": r.fidelity, "diversity": r.diversity,
                      "tracemalloc_peak_mib": peak / 2**20, "rss_before_mib": rss_before / 1024,
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="points per set for the timed runs")
    ap.add_argument("--d", type=int, default=32, help="feature dimension")
    ap.add_argument("--repeats", type=int, default=7, help="timed TopP&R runs (median reported)")
    ap.add_argument("--big", type=int, default=0, help="points per set for the subprocess memory run (0: skip)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.d)
        return

    real, fake = features(args.n, args.d)
    top_pr(real, fake, rng=0)                                  # warm-up (BLAS threads, page cache)
    times, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        r = top_pr(real, fake, rng=0)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    # the machine may be shared: CPU time (all threads of this process) is the steadier figure
    print(f"top_pr  n=m={args.n} d={args.d}: wall median {np.median(times):.3f} s (min {min(times):.3f}, "
          f"max {max(times):.3f}), CPU-time median {np.median(cpu):.3f} s over {args.repeats} runs, "
          f"load average {os.getloadavg()[0]:.1f}  (fidelity {r.fidelity:.4f}, diversity {r.diversity:.4f}, "
          f"h_real {r.h_real:.3f})")
    t = time.perf_counter()
    p = prdc(real, fake, k=5)
    print(f"prdc    n=m={args.n} d={args.d}: {time.perf_counter() - t:.3f} s  {p}")

    if args.big:
        out = subprocess.run([sys.executable, __file__, "--child", str(args.big), "--d", str(args.d)],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"top_pr  n=m={res['n']} d={res['d']}: {res['seconds']:.1f} s, peak NumPy allocations "
              f"{res['tracemalloc_peak_mib']:.0f} MiB (tracemalloc), peak RSS {res['maxrss_mib']:.0f} MiB "
              f"(ru_maxrss; {res['rss_before_mib']:.0f} MiB before the call)  "
              f"fidelity {res['fidelity']:.4f} diversity {res['diversity']:.4f}")


if __name__ == "__main__":
    main()
