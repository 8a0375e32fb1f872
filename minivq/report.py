"""The pipeline's report.md: results.json (what run_pipeline returns) as tables a person reads.

Nothing here measures anything: every value printed comes from results.json.
"""
import json

from minivq import checkpoint
from minivq.progress import fmt_time


def write_report(path, r):
    """A short human-readable report of results.json."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def num(v, f="{:.3f}"):
        return "n/a" if v is None else f.format(v)
    rows = [("real test clips", r["real"]), ("Griffin-Lim round trips", r["griffin_lim"]),
            ("VQ-VAE reconstructions", r["reconstruction"])]
    if "generated_class" in r:
        rows.append(("conditional generations", r["generated_class"]))
    lines = ["# minivq pipeline report", "", f"settings: `{json.dumps(r['settings'])}`", "",
             "| clips | n | classifier accuracy | listener accuracy | mean confidence | fidelity | diversity | TopF1 | "
             "precision | recall | density | coverage | Fréchet |", "|---" * 13 + "|"]
    for name, s in rows:
        m = s.get("metrics", {})
        lines.append(f"| {name} | {s['n']} | {pct(s.get('accuracy'))} | {pct(s.get('listener', {}).get('accuracy'))} | "
                     f"{num(s['mean_confidence'])} | "
                     f"{num(m.get('fidelity'))} | {num(m.get('diversity'))} | {num(m.get('top_f1'))} | "
                     f"{num(m.get('precision'))} | {num(m.get('recall'))} | {num(m.get('density'))} | "
                     f"{num(m.get('coverage'))} | {num(m.get('frechet'), '{:.2f}')} |")
    cov = r.get("clips_per_digit")
    if cov and (0 in cov["train"] or 0 in cov["test"]):
        lines += ["", f"Not every digit has clips (per digit 0-9: train {cov['train']}, test {cov['test']}): "
                  f"conditional generations cover digits {r['generated_digits']}, those with training clips; "
                  "the real-clip rows cover the test clips there are."]
    lines += ["", "Two judges: the classifier (the headline: it hears the 64x64 log-mel the models make) and the "
              "listener, a second judge that hears the waveform through its own front end (MFCCs, 25 ms / 10 ms) "
              "and was trained on recordings only; where the two disagree, neither figure alone says how the "
              "clips sound.",
              "Distribution metrics compare each set's classifier embeddings with the real test clips'.",
              f"VQ-VAE test reconstruction MSE (standardised log-mel): {r['reconstruction']['mse_standardised']:.4f}"]
    if "prior_as_classifier" in r:
        a = r["prior_as_classifier"]
        lines += ["", f"Conditional prior as a classifier of the test token grids (argmax of log p(grid | digit)): "
                  f"{pct(a['accuracy'])}; I(digit; grid) >= {a['mi_bits_lower_bound']:.3f} bits (max 3.322); "
                  f"mean log-likelihood margin {a['mean_margin_bits']:.1f} bits"]
    if "generated_none" in r:
        u = r["generated_none"]
        lines += ["", f"Unconditional generations ({u['n']}): heard-digit histogram {u['heard_histogram']}, "
                  f"entropy {u['heard_entropy_bits']:.3f} bits (uniform: 3.322), digit score {u['digit_score']:.2f}, "
                  f"fidelity {num(u['metrics'].get('fidelity'))}, diversity {num(u['metrics'].get('diversity'))}"]
    lines += ["", "| stage | wall time this run | training time recorded by the trainer |", "|---|---|---|"]
    for k, v in r["wall_seconds"].items():
        lines.append(f"| {k} | {fmt_time(v)} | {fmt_time(r['train_seconds'][k]) if r['train_seconds'].get(k) else ''} |")
    lines += ["", "Figures: confusion_real.png, confusion_generated.png, real_vs_generated.png; sounds: samples/."]
    text = "\n".join(lines) + "\n"
    checkpoint.atomic_write(path, lambda f: f.write(text.encode("utf-8")))
