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


def write_paper_report(path, r):
    """report.md of python -m minivq.experiments paper: the 2x2 table of the four priors (T1, T2,
    TC1, TC2), per-digit accuracy, the compute-vs-CR table and the time of each stage."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def num(v, f="{:.3f}"):
        return "n/a" if v is None else f.format(v)
    S, M = r["settings"], r["models"]
    lines = ["# VQalAttent's 2x2 study (python -m minivq.experiments paper)", "",
             f"command: `{S['command']}`, seed {S['seed']}, data {S['data']} ({S['layout']} layout, official split), "
             f"{S['threads']['cores']} cores (OMP_NUM_THREADS={S['threads']['OMP_NUM_THREADS'] or 'unset'})", "",
             f"Real test clips: {r['real']['n']}, classifier accuracy {pct(r['real'].get('accuracy'))}, listener "
             f"{pct(r['real'].get('listener', {}).get('accuracy'))}; Griffin-Lim round trips: classifier "
             f"{pct(r['griffin_lim'].get('accuracy'))}, listener {pct(r['griffin_lim'].get('listener', {}).get('accuracy'))}.",
             "", "## The four priors", "",
             "| model | CR | conditioning | tokens per clip | clips | classifier: heard as requested | listener | "
             "heard-digit entropy (bits) | fidelity (TopP) | diversity (TopR) | TopF1 | precision | recall | "
             "density | coverage | Fréchet | test bits/token | parameters | train time | sampling s/clip |",
             "|---" * 20 + "|"]
    for name, m in M.items():
        me = m["metrics"]
        lines.append(
            f"| {name} | {m['cr']} | {'class' if m['cond'] == 'class' else 'none'} | {m['tokens_per_clip']} | {m['n']} | "
            f"{pct(m.get('accuracy')) if m['cond'] == 'class' else '—'} | "
            f"{pct(m.get('listener', {}).get('accuracy')) if m['cond'] == 'class' else '—'} | "
            f"{num(m['heard_entropy_bits'])} | {num(me.get('fidelity'))} | {num(me.get('diversity'))} | "
            f"{num(me.get('top_f1'))} | {num(me.get('precision'))} | {num(me.get('recall'))} | "
            f"{num(me.get('density'))} | {num(me.get('coverage'))} | {num(me.get('frechet'), '{:.1f}')} | "
            f"{num(m['test_bits_per_token'])} | {m['n_params']:,} | {fmt_time(m['train_seconds'])} "
            f"({m['epochs']} ep) | {num(m['sample_s_per_clip'], '{:.3f}')} |")
    lines += ["", "Conditional priors: n_per_digit clips of each digit, scored by the fraction the judge hears as "
              "requested. Unconditional priors: 10 x n_per_digit clips, scored by the entropy of the digits heard "
              "(uniform over ten: 3.322 bits). Distribution metrics: classifier embeddings of the clips against "
              "those of the real test clips. Sampling time: token grids only, one batch of "
              f"{S['time_clips']} clips.", "", "Per-digit accuracy (classifier), digits 0-9:", "",
              "| model | " + " | ".join(str(d) for d in range(10)) + " |", "|---" * 11 + "|"]
    for name, m in M.items():
        if m["cond"] == "class":
            lines.append(f"| {name} | " + " | ".join(num(v, "{:.2f}") for v in m["per_digit_accuracy"]) + " |")
    lines += ["", "Heard-digit histograms of the unconditional priors (classifier), digits 0-9:", ""]
    for name, m in M.items():
        if m["cond"] == "none":
            lines.append(f"- {name}: {m['heard_histogram']}")
    lines += ["", "## Compute vs compression ratio", "",
              "| | " + " | ".join(f"CR={c}" for c in r["ratios"]) + " | ratio |", "|---" * (len(r["ratios"]) + 2) + "|"]
    R = list(r["ratios"].values())
    by = {}  # CR -> cond -> model
    for m in M.values():
        by.setdefault(m["cr"], {})[m["cond"]] = m

    def row(label, vals, fmt, ratio=True):
        cells = [fmt(v) if v is not None else "n/a" for v in vals]
        rat = (f"{vals[-1] / vals[0]:.2f}x" if ratio and None not in vals and vals[0] else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {rat} |")
    row("tokens per clip", [x["tokens_per_clip"] for x in R], str)
    row("VQ-VAE training time", [x["vqvae_train_seconds"] for x in R], fmt_time)
    row("VQ-VAE test MSE (standardised log-mel)", [x["reconstruction"]["mse_standardised"] for x in R], "{:.4f}".format)
    row("reconstructions: classifier accuracy", [x["reconstruction"]["accuracy"] for x in R], pct, ratio=False)
    row("reconstructions: listener accuracy", [x["reconstruction_listener_accuracy"] for x in R], pct, ratio=False)
    row("reconstructions: TopF1", [x["reconstruction"]["metrics"].get("top_f1") for x in R], num, ratio=False)
    row("priors' training time (T + TC)", [x["prior_train_seconds"] for x in R], fmt_time)
    row("prior training time per epoch (TC)", [by[x["cr"]]["class"]["seconds_per_epoch"] for x in R], fmt_time)
    row("prior epochs (each)", [by[x["cr"]]["class"]["epochs"] for x in R], str, ratio=False)
    row("TC test bits per token", [by[x["cr"]]["class"]["test_bits_per_token"] for x in R], num)
    row("TC test bits per clip", [by[x["cr"]]["class"]["test_bits_per_clip"] for x in R], "{:.0f}".format)
    row("sampling time per clip (TC, tokens)", [by[x["cr"]]["class"]["sample_s_per_clip"] for x in R], "{:.3f} s".format)
    row("decoding + sound per clip", [by[x["cr"]]["class"]["decode_s_per_clip"] + by[x["cr"]]["class"]["audio_s_per_clip"]
                                      for x in R], "{:.3f} s".format)
    row("TC: heard as requested", [by[x["cr"]]["class"].get("accuracy") for x in R], pct, ratio=False)
    row("TC: TopF1", [by[x["cr"]]["class"]["metrics"].get("top_f1") for x in R], num, ratio=False)
    row("T: heard-digit entropy (bits)", [by[x["cr"]]["none"]["heard_entropy_bits"] for x in R], num, ratio=False)
    row("T: TopF1", [by[x["cr"]]["none"]["metrics"].get("top_f1") for x in R], num, ratio=False)
    if r.get("voice"):
        lines += voice_lines(r["voice"], pct, num)
    lines += ["", "## Time per stage", "", "| stage | wall time this run | training time recorded by the trainer |",
              "|---|---|---|"]
    named = {m["folder"]: f"{m['folder']} ({name})" for name, m in M.items()}
    for k, v in r["wall_seconds"].items():
        tr = r["train_seconds"].get(k)
        lines.append(f"| {named.get(k, k)} | {fmt_time(v)} | {fmt_time(tr) if tr else ''} |")
    lines += ["", "Names: T1/T2 unconditional, TC1/TC2 class-conditional (the paper's); subscript 1 = CR=4 and "
              "2 = CR=16 is our reading of the paper, not stated in it.",
              "Listen: eval_cr4/samples/ and eval_cr16/samples/ (conditional_D_*_heardH.wav: digit D requested, "
              "heard as H; unconditional_u_*); figures: eval_cr*/confusion_generated.png, real_vs_generated.png."]
    text = "\n".join(lines) + "\n"
    checkpoint.atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def voice_lines(v, pct, num):
    """The voice-conditioning table of the paper report: TC2 and the digit+speaker prior, asked for
    the same (digit, speaker) pairs with the same seeds, each judged for digit and speaker."""
    lines = ["", "## Voice: the digit in a requested speaker's voice (CR=16)", "",
             f"{len(v['speakers'])} speakers ({', '.join(v['speakers'])}), {v['n_per_pair']} clips per digit and "
             f"speaker, sampling `{v['sampling']}` (no guidance: the unconditional guide knows no voices). "
             f"Speaker classifier on real test clips: {pct(v['speaker_judge_real_accuracy'])}; the digit+speaker "
             f"prior: {v['speaker_prior_params']:,} parameters, {num(v['speaker_prior_test_bits_per_token'])} test "
             f"bits per token.", "",
             "| prior | clips | digit heard | speaker heard | both | TopP | TopR | TopF1 | Fréchet |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, name in (("class_only", "TC2 (digit only; speaker chance level)"), ("speaker_prior", "digit + speaker")):
        m = v[key]
        d = m["digit_space"]
        lines.append(f"| {name} | {m['n_clips']} | {pct(m['digit_accuracy'])} | {pct(m['speaker_accuracy'])} | "
                     f"{pct(m['both_accuracy'])} | {num(d.get('fidelity'))} | {num(d.get('diversity'))} | "
                     f"{num(d.get('top_f1'))} | {num(d.get('frechet'), '{:.1f}')} |")
    return lines
