"""Spoken-digit datasets: FSDD and AudioMNIST layouts, splits, and a cached log-mel feature set.

Size letters: N clips, M mel bands, T frames.

Layouts (FSDD, AudioMNIST) are read by minivq/layouts.py (``scan``, re-exported here).

Splits: ``"official"`` is FSDD's (takes 0-4 test, the rest train); AudioMNIST has no official
split, so there it means ``"speakers"``. ``"speakers"`` holds out round(20 %) of the speakers
(at least one), those whose sha256(name) sorts first: deterministic, independent of file order.

Bad input, and what happens (``strict=True`` turns every "skipped" into a ValueError):
- missing folder -> FileNotFoundError naming it; a path that is a file -> ValueError;
- empty folder, or one without any recognisable recording -> ValueError naming it;
- a ``.wav`` whose name does not fit the layout -> skipped, reason "name does not match ...";
- a non-audio file named ``.wav``, a zero-length WAV, NaN/inf samples -> skipped with
  :func:`minivq.audio.load_wav`'s reason (any non-finite sample marks the file as damaged);
- an all-silent clip (max |sample| < 1e-4, about -80 dBFS) -> skipped, reason "silent";
- a PCM WAV cut short (its header promises more sample bytes than the file holds) -> skipped,
  reason "truncated ..." (libsndfile would silently read the part that is there);
- a split without any clip (e.g. FSDD files that are all takes >= 5: no test set) -> ValueError
  naming the folder and the split rule, before any training.
Skipped files are listed in ``Features.skipped`` and on stderr, one line each and a count, on
every load (the feature cache remembers them); the rest load normally. Clips holding more than
``LONG_SOUND_WINDOWS`` windows of sound after silence trimming are centre-cropped like every
clip, and counted in ``Features.cropped`` and a stderr note, with an example file.
Ctrl-C while loading raises :class:`LoadInterrupted` (a KeyboardInterrupt) whose message says
whether the feature cache was written (it never is half-written).

Feature cache: ``$MINIVQ_CACHE`` or ``~/.cache/minivq``; the file name hashes the data folder,
the selected files' names/sizes/mtimes, the metadata files and ``FeatureConfig.key()``, so any
change builds a new one. Written to a temporary file and renamed (atomic).

CLI: ``python -m minivq.data info PATH`` and ``python -m minivq.data download fsdd|audiomnist --to DIR``.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from minivq import audio
from minivq.checkpoint import atomic_write
from minivq.cli import sha256_hex
from minivq.download import download
from minivq.layouts import Listing, find_data_root, scan, wav_truncation
from minivq.progress import Progress

CACHE_VERSION = 1
SILENT_PEAK = 1e-4          # a clip whose max |sample| is below this (about -80 dBFS) has no speech
LONG_SOUND_WINDOWS = 2      # more sound than this many feature windows (2 x 1.024 s) after trimming: noted
TEST_SPEAKER_FRACTION = 0.2


@dataclasses.dataclass
class Split:
    """One side of a split: features and labels, row i describes clip path[i]."""
    x: np.ndarray       # (N, M, T) float32 log-mel, not standardised
    digit: np.ndarray   # (N,) int64
    speaker: np.ndarray  # (N,) str
    gender: np.ndarray  # (N,) str ("unknown" when no metadata)
    take: np.ndarray    # (N,) int64
    path: list          # [str] absolute paths

    def __len__(self):
        return len(self.path)


@dataclasses.dataclass
class Features:
    train: Split
    test: Split
    cfg: audio.FeatureConfig
    skipped: list       # [(path str, reason)]
    layout: str
    root: Path
    cropped: list = dataclasses.field(default_factory=list)  # [(path str, seconds of sound after trimming)]


class LoadInterrupted(KeyboardInterrupt):
    """Ctrl-C while features load; the message says what was (not) written. CLIs print it and exit 130."""


# -------------------------------------------------------------------------------- splits

def test_speakers(speakers) -> list:
    """The deterministic held-out speakers: round(20 %) (>= 1) with the smallest sha256(name)."""
    spk = sorted(set(speakers))
    if len(spk) < 2:
        raise ValueError(f"a speaker-disjoint split needs at least 2 speakers, found {len(spk)}")
    n_test = max(1, int(round(TEST_SPEAKER_FRACTION * len(spk))))
    return sorted(sorted(spk, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:n_test])


def split_clips(listing: Listing, split: str = "official") -> tuple[list, list]:
    """(train clips, test clips) for split 'official' or 'speakers' (see the module docstring)."""
    if split not in ("official", "speakers"):
        raise ValueError(f"split must be 'official' or 'speakers', got {split!r}")
    if split == "official" and listing.layout == "fsdd":
        is_test = [c.take <= 4 for c in listing.clips]
    else:
        held = set(test_speakers(c.speaker for c in listing.clips))
        is_test = [c.speaker in held for c in listing.clips]
    return ([c for c, t in zip(listing.clips, is_test) if not t],
            [c for c, t in zip(listing.clips, is_test) if t])


def split_rule(listing: Listing, split: str) -> str:
    """How the test split is chosen, in words, for error messages."""
    if split == "official" and listing.layout == "fsdd":
        return "takes 0-4 of every speaker are the test set, the other takes the training set"
    return (f"the held-out speakers {test_speakers(c.speaker for c in listing.clips)} are the test set, "
            "the other speakers the training set")


def _check_split(listing: Listing, split: str, n_train: int, n_test: int, after_skips: bool = False):
    """ValueError naming the folder and the split rule when a side of the split has no clip."""
    for name, n in (("test", n_test), ("training", n_train)):
        if n == 0:
            why = ("every one of them was skipped (see the 'skipped' lines above)" if after_skips else
                   f"none of its {len(listing.clips)} recordings is one")
            raise ValueError(f"data folder {listing.root} has no {name} clips under the {split} split "
                             f"({split_rule(listing, split)}): {why}")


def subset(clips, max_per_digit: int | None):
    """At most ``max_per_digit`` clips per digit, chosen by sha256 of the file name (spreads over
    speakers and takes, same choice every run); order by path is kept."""
    if max_per_digit is None:
        return list(clips)
    by_digit = collections.defaultdict(list)
    for c in sorted(clips, key=lambda c: hashlib.sha256(c.path.name.encode()).hexdigest()):
        if len(by_digit[c.digit]) < max_per_digit:
            by_digit[c.digit].append(c)
    keep = {id(c) for v in by_digit.values() for c in v}
    return [c for c in clips if id(c) in keep]


# -------------------------------------------------------------------------- feature cache

def default_cache_dir() -> Path:
    return Path(os.environ.get("MINIVQ_CACHE") or Path.home() / ".cache" / "minivq")


def _cache_key(listing: Listing, clips, cfg: audio.FeatureConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, cfg.key(), str(listing.base), listing.layout]).encode())
    for p in [str(c.path) for c in clips] + [str(m) for m in listing.meta_files]:
        st = os.stat(p)
        h.update(f"\n{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def compute_features(clips, cfg: audio.FeatureConfig, strict: bool = False, progress: bool = True, chunk: int = 256):
    """log-mel of each clip: (x (N_ok, M, T) float32, ok paths [str], skipped [(path, reason)],
    cropped [(path, seconds)]): cropped lists the clips with more than LONG_SOUND_WINDOWS windows
    of sound after silence trimming (the seconds of sound), which the window cuts short."""
    bar = Progress(len(clips), desc="log-mel features", every=1.0) if progress and len(clips) >= 200 else None
    xs, ok, skipped, waves, cropped = [], [], [], [], []
    for i, c in enumerate(clips):
        try:
            cut = wav_truncation(c.path)
            if cut:
                raise ValueError(f"{c.path} {cut}")
            w = audio.load_wav(c.path, cfg.sr)
            if np.abs(w).max() < SILENT_PEAK:
                raise ValueError(f"{c.path} is silent (max |sample| {np.abs(w).max():.1e} < {SILENT_PEAK:g})")
        except ValueError as e:
            if strict:
                raise
            skipped.append((str(c.path), str(e).removeprefix(f"{c.path} ")))  # the path is listed beside it
            continue
        n_sound = len(audio.trim_silence(w, top_db=cfg.trim_db))  # what prepare() centre-crops to n_samples
        if n_sound > LONG_SOUND_WINDOWS * cfg.n_samples:
            cropped.append((str(c.path), n_sound / cfg.sr))
        waves.append(audio.prepare(w, cfg))
        ok.append(str(c.path))
        if len(waves) == chunk or i == len(clips) - 1:
            xs.append(audio.log_mel(np.stack(waves), cfg))                     # (chunk, M, T)
            waves = []
        if bar:
            bar.update(i + 1, 1)
    if waves:
        xs.append(audio.log_mel(np.stack(waves), cfg))
    x = np.concatenate(xs) if xs else np.zeros((0, cfg.n_mels, cfg.n_frames), np.float32)  # (N_ok, M, T)
    return x, ok, skipped, cropped


def _make_split(clips, x_by_path, cfg: audio.FeatureConfig) -> Split:
    clips = [c for c in clips if str(c.path) in x_by_path]
    x = (np.stack([x_by_path[str(c.path)] for c in clips]) if clips
         else np.zeros((0, cfg.n_mels, cfg.n_frames), np.float32))            # (N, M, T)
    return Split(x=x.astype(np.float32),                                       # (N, M, T)
                 digit=np.array([c.digit for c in clips], dtype=np.int64),
                 speaker=np.array([c.speaker for c in clips], dtype=str),
                 gender=np.array([c.gender for c in clips], dtype=str),
                 take=np.array([c.take for c in clips], dtype=np.int64),
                 path=[str(c.path) for c in clips])


def _report_loading(listing: Listing, n_loaded: int, skipped: list, cropped: list, cfg: audio.FeatureConfig):
    """stderr: one line per skipped file and a count, then a note on long clips (on every load)."""
    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} of {n_loaded + len(skipped)} files in {listing.root} were skipped (listed above)",
              file=sys.stderr)
    if cropped:
        p, secs = max(cropped, key=lambda c: c[1])
        print(f"note: {len(cropped)} clip{'s' if len(cropped) > 1 else ''} in {listing.root} "
              f"hold{'' if len(cropped) > 1 else 's'} more than {LONG_SOUND_WINDOWS * cfg.n_samples / cfg.sr:.3f} s "
              f"of sound after silence trimming; only the central {cfg.n_samples / cfg.sr:.3f} s is used, "
              f"e.g. {p} ({secs:.1f} s of sound)", file=sys.stderr)


def load_features(root, split: str = "official", cache_dir=None, strict: bool = False,
                  max_per_digit: int | None = None, cfg: audio.FeatureConfig = audio.FeatureConfig(),
                  progress: bool = True) -> Features:
    """Log-mel features and labels of a data folder, split into train and test, cached on disk.

    Returns :class:`Features` (train/test :class:`Split` with x (N, M, T) float32). The first
    call computes the features of every selected clip; later calls with the same files and cfg
    read them from ``cache_dir`` (default :func:`default_cache_dir`). ``max_per_digit`` keeps a
    deterministic subset of each split (see :func:`subset`). Bad files: see the module docstring.
    Every call lists the skipped files and notes the long clips on stderr, cached or not.
    Ctrl-C raises :class:`LoadInterrupted` saying whether the cache was written.
    """
    wrote = []  # the cache file once written, for the Ctrl-C message
    try:
        return _load_features(root, split, cache_dir, strict, max_per_digit, cfg, progress, wrote)
    except LoadInterrupted:
        raise
    except KeyboardInterrupt:
        done = (f"the feature cache {wrote[0]} had been written complete" if wrote else
                "nothing was written (the feature cache is only saved once every clip is done)")
        raise LoadInterrupted(f"interrupted while loading features from {root}; {done}") from None


def _load_features(root, split, cache_dir, strict, max_per_digit, cfg, progress, wrote) -> Features:
    listing = scan(root, strict=strict)
    try:
        train, test = split_clips(listing, split)
    except ValueError as e:
        raise ValueError(f"data folder {listing.root}: {e}") from None
    _check_split(listing, split, len(train), len(test))
    train, test = subset(train, max_per_digit), subset(test, max_per_digit)
    clips = sorted(train + test, key=lambda c: str(c.path))
    key = _cache_key(listing, clips, cfg)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cpath = cache / f"{listing.layout}-{key}.npz"
    x = None
    if cpath.is_file():
        try:
            with np.load(cpath, allow_pickle=False) as z:
                x, ok = z["x"], list(z["paths"])
                bad = list(zip(z["skipped_paths"].tolist(), z["skipped_reasons"].tolist()))
                cropped = list(zip(z["cropped_paths"].tolist(), z["cropped_seconds"].tolist()))
        except (OSError, ValueError, KeyError):
            x = None  # unreadable cache (e.g. an old format): rebuild it
    if x is None:
        x, ok, bad, cropped = compute_features(clips, cfg, strict=strict, progress=progress)
        arrays = dict(x=x, paths=np.array(ok, dtype=str),
                      skipped_paths=np.array([p for p, _ in bad], dtype=str),
                      skipped_reasons=np.array([r for _, r in bad], dtype=str),
                      cropped_paths=np.array([p for p, _ in cropped], dtype=str),
                      cropped_seconds=np.array([s for _, s in cropped], dtype=np.float64))
        atomic_write(cpath, lambda f: np.savez(f, **arrays))  # never a half-written cache
        wrote.append(cpath)
    elif strict and bad:
        raise ValueError(f"{bad[0][0]}: {bad[0][1]}")
    _report_loading(listing, len(ok), listing.skipped + bad, cropped, cfg)
    x_by_path = dict(zip(ok, x))
    feats = Features(train=_make_split(train, x_by_path, cfg), test=_make_split(test, x_by_path, cfg), cfg=cfg,
                     skipped=listing.skipped + bad, layout=listing.layout, root=listing.root, cropped=cropped)
    _check_split(listing, split, len(feats.train), len(feats.test), after_skips=True)
    return feats


# ---------------------------------------------------------------------------------- CLI

def info(root) -> str:
    """A report of a data folder: counts per digit/speaker/split, durations, rates, skipped files.

    Reads file names and WAV headers only (fast); damaged sample data is found when features
    are built.
    """
    import soundfile as sf
    listing = scan(root)
    durs, rates, chans, good, skipped = [], collections.Counter(), collections.Counter(), [], list(listing.skipped)
    for c in listing.clips:
        try:
            h = sf.info(str(c.path))
            if h.frames == 0:
                raise ValueError("contains no samples (zero-length audio)")
        except Exception as e:
            skipped.append((str(c.path), f"unreadable header: {str(e).strip() or type(e).__name__}"))
            continue
        cut = wav_truncation(c.path)
        if cut:
            skipped.append((str(c.path), cut))
            continue
        durs.append(h.frames / h.samplerate)
        rates[h.samplerate] += 1
        chans[h.channels] += 1
        good.append(c)
    out = [f"{listing.root}: {listing.layout} layout, recordings in {listing.base}",
           f"clips: {len(good)} readable, {len(skipped)} skipped"]
    listing.clips = good
    count = lambda clips, attr: dict(sorted(collections.Counter(getattr(c, attr) for c in clips).items()))
    out.append(f"per digit: {count(good, 'digit')}")
    genders = {c.speaker: c.gender for c in good}
    out.append("per speaker: " + ", ".join(f"{s} ({genders[s]}) {n}" for s, n in count(good, "speaker").items()))
    for name in (("official", "speakers") if listing.layout == "fsdd" else ("speakers",)):
        try:
            tr, te = split_clips(listing, name)
        except ValueError as e:
            out.append(f"split {name}: unavailable ({e})")
            continue
        extra = f", test speakers {test_speakers(c.speaker for c in good)}" if name == "speakers" else ""
        out.append(f"split {name}: train {len(tr)}, test {len(te)}{extra}")
    if durs:
        d = np.array(durs)  # (N,)
        out.append(f"duration (s): min {d.min():.3f}, median {np.median(d):.3f}, max {d.max():.3f}, "
                   f"total {d.sum() / 60:.1f} min; over 1.024 s: {(d > 1.024).sum()}")
    out.append(f"sample rates (Hz): {dict(rates)}; channels: {dict(chans)}")
    out += [f"skipped {p}: {r}" for p, r in skipped]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minivq.data", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_info = sub.add_parser("info", help="counts, durations, rates and skipped files of a data folder",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p_info.add_argument("path", help="FSDD or AudioMNIST folder")
    p_dl = sub.add_parser("download", help="fetch and unpack a public archive",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p_dl.add_argument("dataset", choices=["fsdd", "audiomnist"])
    p_dl.add_argument("--to", required=True, help="folder to unpack into")
    p_dl.add_argument("--url", default=None, help="archive URL (http(s):// or file://); default: the public one")
    p_dl.add_argument("--sha256", type=sha256_hex, default=None,
                      help="expected sha256 of the archive (checked when given or known)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "info":
            print(info(args.path))
        else:
            root = find_data_root(download(args.dataset, args.to, url=args.url, sha256=args.sha256))
            print(f"{args.dataset} is ready: pass {root} as the data folder")
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
