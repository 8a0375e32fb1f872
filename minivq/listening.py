"""Listening pages: an HTML file a person opens from disk to hear and see what a model made.

A page is a title and a list of sections; each section holds any of: paragraphs, Markdown
(a small subset: headings, paragraphs, pipe tables, `code`), tables, figures (PNG files) and
galleries. A gallery is rows of clips (one row per requested digit, say); each clip shows its
log-mel spectrogram, an audio player, and the verdict of every judge that heard it: the digit
it heard and its probability, marked when it is not the digit that was asked for.

    write_page("out/report.html", "title", [Section("prior A", tables=[...], galleries=[...]),
                                           Section("prior B", ...)])

writes out/report.html and, beside it, out/report_files/ with one WAV and one PNG per clip.
Every asset is referenced by a relative path, so the page opens as a plain file (file://) in
any browser, with no server, no network and no scripts; moving the page means moving its
_files folder with it. Relative files rather than data: URIs because the figures already lie
beside the page (the pipeline draws them for report.md), the WAVs stay playable on their own,
and the page stays small enough to read as text. Figures and WAVs given from outside the
page's folder are copied into the _files folder. All text is escaped with html.escape.

Size letters: N samples of one wave, M mel bands, T frames.
"""
import html
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from minivq import checkpoint, plots
from minivq.audio import save_wav

JUDGES_NOTE = ("Under each clip, what each judge heard and its probability: the classifier (the first judge) "
               "hears the log-mel of the sound, the image above the player; the listener (the second judge) "
               "hears the waveform through its own front end (MFCCs) and was trained on recordings only. "
               "A verdict marked \u2717 is not the digit that was asked for.")


@dataclass
class Clip:
    """One sound on a page."""
    wave: np.ndarray  # (N,) float in [-1, 1]; written as a WAV unless ``wav`` names one already on disk
    logmel: np.ndarray  # (M, T) log-mel of the sound (what the classifier hears)
    verdicts: list  # [(judge name, heard digit, probability of that digit), ...]
    want: int = None  # the requested digit (None: unconditional)
    wav: Path = None  # an existing WAV file of this sound, linked instead of writing a new one
    name: str = ""  # a line of small text under the clip (e.g. its file name)


@dataclass
class Gallery:
    """Rows of clips, each row with a label ("digit 3")."""
    title: str
    rows: list  # [(label, [Clip, ...]), ...]
    sr: int = 8000  # sample rate of the waves (Hz)
    note: str = ""


@dataclass
class Table:
    header: list  # column names
    rows: list  # one list of cells (str or numbers) per row
    caption: str = ""


@dataclass
class Figure:
    path: Path  # a PNG file
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list = field(default_factory=list)
    markdown: str = ""  # rendered after the paragraphs (see render_markdown)
    tables: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    galleries: list = field(default_factory=list)


def gallery_from_generation(title, g, want=None, keep=None, sr=8000, files=None, note=""):
    """A Gallery of clips made by bundle.generate_clips: g holds waves (B, N), heard (B, M, T), the
    classifier's pred/confidence (B,) and, when there is one, the listener's under "listener".

    want: (B,) requested digits -> one row per digit (in order of first appearance) with its first
    ``keep`` clips; None (unconditional) -> the first ``keep`` clips in rows of ten. keep=None
    keeps every clip. files: (B,) paths of WAVs already written for these clips, linked as they are."""
    n = len(g["waves"])
    judges = [("classifier", g)] + ([("listener", g["listener"])] if "listener" in g else [])

    def clip(i):
        verdicts = [(who, int(v["pred"][i]), float(v["confidence"][i])) for who, v in judges]
        return Clip(np.array(g["waves"][i]), np.array(g["heard"][i]), verdicts,  # copies: g may be large
                    want=None if want is None else int(want[i]),
                    wav=None if files is None else Path(files[i]), name="" if files is None else Path(files[i]).name)

    if want is None:
        idx = list(range(n if keep is None else min(keep, n)))
        rows = [(f"samples {i + 1}-{min(i + 10, len(idx))}", [clip(j) for j in idx[i:i + 10]])
                for i in range(0, len(idx), 10)]
    else:
        want = np.asarray(want).reshape(-1)
        if len(want) != n:
            raise ValueError(f"want has {len(want)} digits for {n} clips")
        order = list(dict.fromkeys(int(d) for d in want))  # digits in order of first appearance
        rows = [(f"digit {d}", [clip(i) for i in np.flatnonzero(want == d)[:keep]]) for d in order]
    return Gallery(title, rows, sr=sr, note=note)


# ----------------------------------------------------------------------------- rendering
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.5em; }
nav a { margin-right: 1em; }
table.data { border-collapse: collapse; margin: 0.8em 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.2em 0.5em; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data th { background: #f2f2f2; }
caption { caption-side: bottom; font-size: 0.9em; color: #555; text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.row { display: flex; align-items: flex-start; border-top: 1px solid #eee; padding: 0.4em 0; }
.label { flex: 0 0 9em; font-weight: bold; padding-top: 0.3em; white-space: nowrap; }
.clips { display: flex; flex-wrap: wrap; gap: 0.6em; }
.clip { width: 170px; font-size: 12px; white-space: nowrap; }
.clip img { width: 128px; height: 128px; display: block; image-rendering: pixelated; border: 1px solid #ddd; }
.clip audio { width: 170px; height: 30px; margin: 2px 0; }
.miss { color: #b00020; font-weight: bold; }
.name { color: #777; font-size: 11px; overflow-wrap: anywhere; }
"""


def esc(x):
    """Any value as escaped HTML text."""
    return html.escape(str(x), quote=True)


def _cell(x):
    """A table cell: floats with 4 significant digits, None as n/a, everything else as text."""
    if x is None:
        return "n/a"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.4g}"
    return str(x)


NUMBER = re.compile(r"[-+]?[\d.,:]+(e[-+]?\d+)?\s*(%|s)?|n/a")  # cells aligned right: numbers, times


def _inline(text):
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(text))


def render_markdown(text):
    """The Markdown minivq's reports use, as HTML: '#' headings (shown one level below the
    page's own), paragraphs separated by blank lines, pipe tables (first row: header, second:
    the |---| rule) and `code`. Anything else is shown as escaped text."""
    out, para, lines = [], [], text.splitlines()

    def flush():
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            rows = [r for r in block if not all(re.fullmatch(r":?-+:?", c) for c in r)]  # drop the |---| rule
            out.append(_table_html(Table(rows[0], rows[1:]), inline=True))
            continue
        m = re.match(r"(#{1,4})\s+(.*)", s)
        if m:
            flush()
            level = min(len(m.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif not s:
            flush()
        else:
            para.append(s)
        i += 1
    flush()
    return "\n".join(out)


def _table_html(t, inline=False):
    fmt = _inline if inline else (lambda x: esc(_cell(x)))
    head = "".join(f"<th>{fmt(h)}</th>" for h in t.header)

    def td(c):
        return f'<td class="num">{fmt(c)}</td>' if NUMBER.fullmatch(_cell(c).strip()) else f"<td>{fmt(c)}</td>"
    body = "\n".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in t.rows)
    cap = f"<caption>{esc(t.caption)}</caption>" if t.caption else ""
    return f'<table class="data">{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _href(target, page_dir):
    """URL of a file relative to the page's folder (percent-encoded, forward slashes)."""
    return quote(Path(os.path.relpath(target, page_dir)).as_posix())


def _clip_html(c, wav_href, png_href):
    lines = [f'<img src="{esc(png_href)}" alt="log-mel spectrogram" width="128" height="128">',
             f'<audio controls preload="metadata" src="{esc(wav_href)}"></audio>']
    for who, digit, prob in c.verdicts:
        miss = c.want is not None and digit != c.want
        cls, mark = (' class="miss"', " &#x2717;") if miss else ("", "")
        lines.append(f"<div{cls}>{esc(who)}: {esc(digit)} ({prob:.2f}){mark}</div>")
    if c.name:
        lines.append(f'<div class="name">{esc(c.name)}</div>')
    title = f"requested {c.want}" if c.want is not None else "unconditional"
    return f'<div class="clip" title="{esc(title)}">' + "".join(lines) + "</div>"


ASSET_NAME = re.compile(r"clip\d{4}\.(wav|png)|fig\d{3}_.*\.png")  # what write_page puts in the _files folder


def write_page(path, title, sections, intro=()):
    """Write the HTML page ``path`` (and its ``<stem>_files/`` folder of clips; old clips and
    figure copies of an earlier page there are removed first) for a list of Sections.
    intro: paragraphs under the title. Returns the path. A figure or clip WAV file that does not
    exist is a FileNotFoundError, raised before anything is written."""
    path = Path(path)
    page_dir = path.parent.resolve()
    for s in sections:
        for f in s.figures:
            if not Path(f.path).is_file():
                raise FileNotFoundError(f"figure {f.path} for section {s.title!r} does not exist")
        for c in (c for g in s.galleries for _, clips in g.rows for c in clips):
            if c.wav is not None and not Path(c.wav).is_file():
                raise FileNotFoundError(f"clip WAV {c.wav} for section {s.title!r} does not exist")
    assets = path.with_name(path.stem + "_files")
    assets.mkdir(parents=True, exist_ok=True)
    for old in assets.iterdir():
        if ASSET_NAME.fullmatch(old.name):
            old.unlink()
    n_clip = n_fig = 0
    has_clips = any(g.rows for s in sections for g in s.galleries)
    body = [f"<h1>{esc(title)}</h1>"] + [f"<p>{esc(p)}</p>" for p in intro]
    if has_clips:
        body.append(f'<p class="note">{esc(JUDGES_NOTE)}</p>')
    if len(sections) > 1:
        body.append("<nav>" + "".join(f'<a href="#s{k}">{esc(s.title)}</a>' for k, s in enumerate(sections)) + "</nav>")
    for k, s in enumerate(sections):
        body.append(f'<section id="s{k}"><h2>{esc(s.title)}</h2>')
        body += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
        if s.markdown:
            body.append(render_markdown(s.markdown))
        body += [_table_html(t) for t in s.tables]
        for f in s.figures:
            src = Path(f.path).resolve()
            if page_dir not in src.parents:  # outside the page's folder: travels in the _files folder
                n_fig += 1
                dst = assets / f"fig{n_fig:03d}_{src.name}"
                shutil.copyfile(src, dst)
                src = dst
            href = esc(_href(src, page_dir))
            cap = esc(f.caption or src.name)
            body.append(f'<figure><a href="{href}"><img src="{href}" alt="{cap}"></a>'
                        f"<figcaption>{cap}</figcaption></figure>")
        for g in s.galleries:
            if g.title != s.title:  # a section of one gallery is headed by the section's title
                body.append(f"<h3>{esc(g.title)}</h3>")
            if g.note:
                body.append(f'<p class="note">{esc(g.note)}</p>')
            every = [c.logmel for _, clips in g.rows for c in clips]
            lo, hi = np.percentile(np.stack(every), [1, 99.9]) if every else (0, 1)  # one colour range per gallery
            for label, clips in g.rows:
                cells = []
                for c in clips:
                    n_clip += 1
                    png = assets / f"clip{n_clip:04d}.png"
                    plots.save_spectrogram_png(png, c.logmel, lo, hi)
                    wav = assets / f"clip{n_clip:04d}.wav"
                    if c.wav is None:
                        save_wav(wav, c.wave, g.sr)
                    elif page_dir in Path(c.wav).resolve().parents:  # linked where it is
                        wav = Path(c.wav)
                    else:  # outside the page's folder: a copy travels in the _files folder
                        shutil.copyfile(c.wav, wav)
                    cells.append(_clip_html(c, _href(wav.resolve(), page_dir), _href(png.resolve(), page_dir)))
                body.append(f'<div class="row"><div class="label">{esc(label)}</div>'
                            f'<div class="clips">{"".join(cells)}</div></div>')
        body.append("</section>")
    if not any(assets.iterdir()):
        assets.rmdir()
    text = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    checkpoint.atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


# ----------------------------------------------------------------------------- the pipeline's page
PIPELINE_FIGURES = [("confusion_real.png", "classifier on real test clips"),
                    ("confusion_generated.png", "classifier on conditional generations (rows: requested digit)"),
                    ("real_vs_generated.png", "real test clips above generated clips")]


def write_pipeline_page(out, galleries, figure_dirs=None):
    """OUT/report.html for a pipeline (or experiment) folder: report.md's text and tables, the
    figures the run drew (those that exist: the evaluation's, in OUT or in each of
    ``figure_dirs`` = {caption prefix: folder}, and each VQ-VAE's recon.png) and one section per
    gallery (galleries: {name: Gallery}). Returns the page's path."""
    out = Path(out)
    md = (out / "report.md").read_text(encoding="utf-8")
    first, _, rest = md.partition("\n")
    title = first[2:].strip() if first.startswith("# ") else "minivq report"
    md = rest if first.startswith("# ") else md
    dirs = figure_dirs or {"": out}
    figs = [Figure(Path(d) / name, f"{pre}{cap}") for pre, d in dirs.items()
            for name, cap in PIPELINE_FIGURES if (Path(d) / name).is_file()]
    figs += [Figure(p, f"{p.parent.name}: test clips, reconstructions, tokens and codebook usage")
             for p in sorted(out.glob("vqvae_*/recon.png"))]
    sections = [Section("Results", markdown=md), Section("Figures", figures=figs)]
    sections += [Section(g.title, galleries=[g]) for g in galleries.values()]
    return write_page(out / "report.html", title, sections,
                      intro=["The numbers of report.md, the figures of this run and a few of its generated clips."])
