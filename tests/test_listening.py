"""Listening pages (minivq/listening.py, generate --html): every clip and figure is linked by a
relative path that exists, text is escaped, verdicts are shown as given; and, where a Chromium
or Chrome is installed, a real headless browser loads every image and every audio element."""
import html
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from minivq import generate, listening
from minivq.listening import Clip, Figure, Gallery, Section, Table

SR = 8000
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Links(HTMLParser):
    """Collects the tags of a page with their attributes."""
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def of(self, tag, attr="src"):
        return [a[attr] for t, a in self.tags if t == tag and attr in a]


def parse(path):
    p = Links()
    p.feed(Path(path).read_text(encoding="utf-8"))
    return p


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def fake_generation(want, seed=0, listener=True):
    """What bundle.generate_clips returns, for B clips: tones of different pitch, random
    'log-mels', and verdicts that are right for even clip indices and off by one for odd ones."""
    g = np.random.default_rng(seed)
    n = len(want) if want is not None else 25
    t = np.arange(2048) / SR
    waves = np.stack([0.5 * np.sin(2 * np.pi * (200 + 40 * i) * t) for i in range(n)]).astype(np.float32)  # (B, N)
    heard = g.standard_normal((n, 64, 64)).astype(np.float32) - 6  # (B, M, T)
    truth = np.asarray(want) if want is not None else np.arange(n) % 10
    pred = np.where(np.arange(n) % 2 == 0, truth, (truth + 1) % 10)  # (B,)
    out = {"waves": waves, "heard": heard, "pred": pred, "confidence": np.linspace(0.5, 0.99, n)}
    if listener:
        out["listener"] = {"pred": truth, "confidence": np.full(n, 0.75)}
    return out


def fake_page(folder, n_per_digit=2):
    """A two-section page (a table, a figure, a conditional and an unconditional gallery) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    fig = folder / "figure.png"
    listening.plots.save_spectrogram_png(fig, np.random.default_rng(1).standard_normal((64, 64)), -2, 2)
    want = np.repeat(np.arange(10), n_per_digit)
    cond = listening.gallery_from_generation("conditional <prior>", fake_generation(want), want, sr=SR)
    unc = listening.gallery_from_generation("unconditional", fake_generation(None, listener=False), None,
                                            keep=10, sr=SR)
    sections = [Section("model A & co", paragraphs=["accuracy <b>0.9</b>"], figures=[Figure(fig, "a figure")],
                        tables=[Table(["set", "accuracy"], [["real", 0.91234], ["missing", None]])], galleries=[cond]),
                Section("model B", galleries=[unc])]
    return listening.write_page(folder / "page.html", "a <title> & more", sections), want


# ----------------------------------------------------------------------------- without a browser
def test_every_clip_is_linked_written_and_judged(tmp_path):
    page, want = fake_page(tmp_path / "site")
    text = page.read_text()
    links = parse(page)
    audio, imgs = links.of("audio"), links.of("img")
    assert len(audio) == 20 + 10 and len(imgs) == 30 + 1  # 30 clips, one spectrogram each, and the figure
    for src in audio + imgs:  # relative links that resolve next to the page: it opens as a plain file
        assert "://" not in src and not src.startswith("/") and (page.parent / src).is_file(), src
    g = fake_generation(want)
    wave, sr = sf.read(page.parent / audio[3])  # the fourth clip: digit 1, its second sample
    # 16-bit PCM: each sample within half a quantisation step (plus rounding) of the original
    assert sr == SR and np.abs(wave - g["waves"][3]).max() <= 1 / 32767 + 1e-7
    assert png_size(page.parent / imgs[1]) == (128, 128)  # 64 x 64 bins at 2 x 2 pixels
    # verdicts: odd clips are wrong for the classifier (marked), the listener always right
    assert text.count("&#x2717;") == 10  # 10 odd clips of 20; unconditional clips have no request
    assert "classifier: 2 (" in text and "listener: 1 (0.75)" in text
    assert text.count("<div class=\"row\">") == 10 + 1  # 10 digits; 25 unconditional clips kept 10, one row
    assert "<script" not in text and "&lt;title&gt; &amp; more" in text and "accuracy &lt;b&gt;0.9&lt;/b&gt;" in text
    assert "<td class=\"num\">0.9123</td>" in text and "<td class=\"num\">n/a</td>" in text


def test_gallery_from_generation_keeps_the_first_clips_of_each_digit():
    want = np.repeat([3, 1, 4], 5)
    gal = listening.gallery_from_generation("t", fake_generation(want), want, keep=2)
    assert [label for label, _ in gal.rows] == ["digit 3", "digit 1", "digit 4"]
    first_of_1 = gal.rows[1][1][0]
    assert first_of_1.want == 1 and first_of_1.verdicts[0] == ("classifier", 2, pytest.approx(0.5 + 0.49 * 5 / 14))
    assert [len(clips) for _, clips in gal.rows] == [2, 2, 2]
    unc = listening.gallery_from_generation("u", fake_generation(None), None, keep=23)
    assert [len(c) for _, c in unc.rows] == [10, 10, 3] and unc.rows[2][0] == "samples 21-23"
    assert [v[0] for v in unc.rows[0][1][0].verdicts] == ["classifier", "listener"]
    with pytest.raises(ValueError, match="want has 4 digits for 15 clips"):
        listening.gallery_from_generation("t", fake_generation(want), want[:4])


def test_clips_made_by_hand_link_their_own_wavs(tmp_path):
    """Clip and Gallery directly, as a page of several models side by side would build them: a
    clip with a WAV on disk is linked as it is (nothing copied), one whose WAV is gone is refused."""
    wav = tmp_path / "takes" / "seven.wav"
    wav.parent.mkdir()
    sf.write(wav, np.zeros(800, np.float32), SR)
    logmel = np.linspace(-8, 0, 64 * 64, dtype=np.float32).reshape(64, 64)  # (M, T)
    clip = Clip(None, logmel, [("classifier", 7, 0.81), ("listener", 1, 0.4)], want=7, wav=wav, name="seven & co")
    gal = Gallery("by hand", [("digit 7", [clip])], sr=SR)
    page = listening.write_page(tmp_path / "p.html", "t", [Section("A", galleries=[gal]), Section("B")])
    text = page.read_text()
    assert parse(page).of("audio") == ["takes/seven.wav"] and not list((tmp_path / "p_files").glob("*.wav"))
    assert "classifier: 7 (0.81)</div>" in text and "listener: 1 (0.40) &#x2717;" in text
    assert "seven &amp; co" in text and '<a href="#s1">B</a>' in text
    elsewhere = listening.write_page(tmp_path / "site" / "p.html", "t", [Section("A", galleries=[gal])])
    (src,) = parse(elsewhere).of("audio")  # outside the page's folder: copied beside the page
    assert src == "p_files/clip0001.wav" and (elsewhere.parent / src).read_bytes() == wav.read_bytes()
    wav.unlink()
    before = sorted(p.name for p in (tmp_path / "p_files").iterdir())
    with pytest.raises(FileNotFoundError, match="clip WAV .*seven.wav for section 'A' does not exist"):
        listening.write_page(tmp_path / "p.html", "other", [Section("A", galleries=[gal])])
    assert sorted(p.name for p in (tmp_path / "p_files").iterdir()) == before and "<title>t</title>" in page.read_text()


def test_markdown_tables_and_code_render():
    md = ("## Results\n\nsettings: `{\"cr\": 16}` and <i>\n\n| clips | n | accuracy |\n|---|---|---|\n"
          "| real | 60 | 91.0 % |\n| generated | 20 | n/a |\n\nlast line\nwraps")
    out = listening.render_markdown(md)
    assert "<h4>Results</h4>" in out and "<code>{&quot;cr&quot;: 16}</code>" in out and "&lt;i&gt;" in out
    assert "<th>clips</th><th>n</th><th>accuracy</th>" in out and "---" not in out
    assert '<tr><td>real</td><td class="num">60</td><td class="num">91.0 %</td></tr>' in out
    assert "<p>last line wraps</p>" in out


def test_figures_outside_travel_with_the_page_and_missing_ones_are_refused(tmp_path):
    fig = tmp_path / "elsewhere" / "f.png"
    fig.parent.mkdir()
    listening.plots.save_spectrogram_png(fig, np.zeros((8, 8)), 0, 1)
    page = listening.write_page(tmp_path / "site" / "p.html", "t", [Section("s", figures=[Figure(fig)])])
    (src,) = parse(page).of("img")
    assert src == "p_files/fig001_f.png" and (page.parent / src).read_bytes() == fig.read_bytes()
    with pytest.raises(FileNotFoundError, match="figure .*nope.png for section 's' does not exist"):
        listening.write_page(tmp_path / "site" / "q.html", "t", [Section("s", figures=[Figure(tmp_path / "nope.png")])])
    assert not (tmp_path / "site" / "q.html").exists()


def test_writing_a_page_again_removes_its_old_clips(tmp_path):
    fake_page(tmp_path, n_per_digit=3)
    assert len(list((tmp_path / "page_files").glob("clip*.wav"))) == 40
    (tmp_path / "page_files" / "notes.txt").write_text("kept")
    page, _ = fake_page(tmp_path, n_per_digit=1)
    files = sorted(p.name for p in (tmp_path / "page_files").iterdir())
    assert len([f for f in files if f.endswith(".wav")]) == 20 and "notes.txt" in files
    assert {Path(s).name for s in parse(page).of("audio")} == {f for f in files if f.endswith(".wav")}


def test_pipeline_page_has_report_tables_figures_and_galleries(tmp_path):
    (tmp_path / "report.md").write_text("# minivq pipeline report\n\n| clips | n |\n|---|---|\n"
                                        "| real test clips | 60 |\n")
    for name in ("confusion_real.png", "real_vs_generated.png", "vqvae_cr16/recon.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        listening.plots.save_spectrogram_png(tmp_path / name, np.zeros((4, 4)), 0, 1)
    want = np.repeat(np.arange(10), 3)
    gal = {"class": listening.gallery_from_generation("conditional", fake_generation(want), want, keep=3)}
    page = listening.write_pipeline_page(tmp_path, gal)
    text = page.read_text()
    assert page == tmp_path / "report.html" and "<title>minivq pipeline report</title>" in text
    assert '<td>real test clips</td><td class="num">60</td>' in text
    imgs = parse(page).of("img")
    assert imgs[:3] == ["confusion_real.png", "real_vs_generated.png", "vqvae_cr16/recon.png"]
    assert len(parse(page).of("audio")) == 30


def test_generate_html_links_the_wavs_it_wrote(tmp_path, capsys):
    assert generate.main(["--digit", "3", "--n", "2", "--gl-iters", "4", "--html", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    page = tmp_path / "index.html"
    links = parse(page)
    assert links.of("audio") == ["digit3_000.wav", "digit3_001.wav"]
    assert "spectrograms.png" in links.of("img") and all((tmp_path / s).is_file() for s in links.of("img"))
    text = page.read_text()
    # the page shows the verdicts the command printed: file, requested, classifier, confidence, listener.
    # The table prints the confidence to 3 decimals and the page to 2, both rounded from the same
    # float: re-rounding the printed value can differ in the last place (0.995 printed, 0.9951 on
    # the page as 1.00), so the two must agree within half a unit of each rounding, 0.005 + 0.0005.
    rows = [line.split() for line in out.splitlines() if line.startswith("digit3_")]
    assert len(rows) == 2
    for row in rows:
        m = re.search(rf"classifier: {row[2]} \((\d\.\d\d)\)</div><div>listener: {row[4]} \([^)]*\)</div>"
                      rf"<div class=\"name\">{re.escape(row[0])}<", text)  # the verdicts of this clip
        assert m, f"no verdict 'classifier: {row[2]} (..)', 'listener: {row[4]}' for {row[0]} on the page"
        assert abs(float(m.group(1)) - float(row[3])) <= 0.0055
    assert "--html" in text and "wrote 2 WAVs, index.html" in out


# ----------------------------------------------------------------------------- in a real browser
PROBE = """<script>
// added by the test only: wait until every audio element has its metadata or an error, then
// write what loaded into the DOM for --dump-dom
function probe() {
  const audio = [...document.querySelectorAll('audio')];
  if (audio.some(a => a.readyState < 1 && !a.error)) { setTimeout(probe, 100); return; }
  const r = {audio: audio.map(a => [a.getAttribute('src'), a.readyState, a.error ? a.error.code : 0, a.duration]),
             img: [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])};
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
}
window.addEventListener('load', probe);
</script>"""


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_probe(browser, page):
    """Open a copy of ``page`` (same folder, so its relative links hold) with PROBE added in
    headless Chromium; returns {"audio": [[src, readyState, error code, duration]], "img": [[src,
    complete, naturalWidth]]}. Virtual time stands still while files load, so the budget is
    not a race against the disk."""
    probe = page.with_name("_probe_" + page.name)
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={profile}", "--virtual-time-budget=60000", "--dump-dom",
                            probe.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    probe.unlink()
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the browser did not finish the probe (exit {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.slow
def test_a_real_browser_loads_every_clip_and_image(tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no browser to test the page in: none of {', '.join(BROWSERS)} is on PATH "
                    "(Debian: apt-get install chromium)")
    page, _ = fake_page(tmp_path / "site")
    seen = browser_probe(browser, page)
    assert len(seen["audio"]) == 30 and len(seen["img"]) == 31
    for src, ready, error, duration in seen["audio"]:
        # HAVE_METADATA or more, no MediaError, and the clip's length: 2048 samples at 8 kHz
        assert ready >= 1 and error == 0 and duration == pytest.approx(2048 / SR, abs=1e-3), src
    for src, complete, width in seen["img"]:
        assert complete and width == 128, src
    # the probe can fail: a page whose files are gone shows errors for exactly those
    gone_wav, gone_png = parse(page).of("audio")[5], parse(page).of("img")[7]
    (page.parent / gone_wav).unlink()
    (page.parent / gone_png).unlink()
    seen = browser_probe(browser, page)
    assert [a[0] for a in seen["audio"] if a[2] != 0] == [gone_wav]  # MEDIA_ERR_SRC_NOT_SUPPORTED
    assert [i[0] for i in seen["img"] if i[2] == 0] == [gone_png]
