"""Spoken-digit folders, read from file names alone: which layout, which clips, which speakers.

Layouts (detected from the folder given):
- FSDD: ``{digit}_{speaker}_{take}.wav`` in the folder or its ``recordings/`` subfolder;
  an optional ``speakers.csv`` (speaker,gender,accent,language) next to either gives gender.
- AudioMNIST: ``NN/{digit}_{NN}_{take}.wav`` (one numbered folder per speaker) in the folder
  or its ``data/`` subfolder; an optional ``audioMNIST_meta.txt`` (JSON keyed by speaker id:
  gender, age, accent, ...) gives gender.

Size letters: none (no audio is read here, except a WAV header in wav_truncation).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path

_NAME = re.compile(r"^(\d)_([A-Za-z0-9\-]+)_(\d+)\.wav$", re.IGNORECASE)


@dataclasses.dataclass
class Clip:
    path: Path          # absolute path of the file
    digit: int          # 0-9
    speaker: str        # FSDD name ("jackson") or AudioMNIST id ("07")
    take: int           # repetition index
    gender: str         # "male"/"female"/... or "unknown"


@dataclasses.dataclass
class Listing:
    """What a folder holds, from file names alone (no audio read)."""
    root: Path          # the folder given
    base: Path          # the folder the recordings are found under
    layout: str         # "fsdd" or "audiomnist"
    clips: list         # [Clip], sorted by path
    skipped: list       # [(path str, reason)] for .wav files whose names do not fit
    meta_files: list    # [Path] speakers.csv / audioMNIST_meta.txt that were read



def _wavs(folder: Path):
    with os.scandir(folder) as it:  # DirEntry.is_file() needs no extra system call
        names = sorted(e.name for e in it if e.name.lower().endswith(".wav") and e.is_file())
    return [folder / n for n in names]


def wav_truncation(path) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None when it is whole (or not a RIFF/WAVE file).

    A WAV header states the byte size of its ``data`` chunk; when the file ends before that
    many bytes (a copy or download stopped half-way), libsndfile reads what is there without
    complaint, so a cut clip would pass as a shorter one. Compares the promised size with the
    bytes after the chunk's start. A size of 0 or 0xFFFFFFFF (a writer that could not go back
    and fill it in) is not checked; nor are other containers (RF64, AIFF, FLAC: libsndfile's own
    checks apply).
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos, rate_bytes = 12, 0
            while pos + 8 <= size:  # walk the chunks: id (4 bytes), size (4, little-endian), body, pad byte
                fh.seek(pos)
                cid, n = fh.read(4), int.from_bytes(fh.read(4), "little")
                if cid == b"fmt ":
                    fmt = fh.read(min(n, 16))
                    if len(fmt) >= 12:
                        rate_bytes = int.from_bytes(fmt[8:12], "little")  # bytes per second of audio
                elif cid == b"data":
                    have = size - (pos + 8)
                    if n in (0, 0xFFFFFFFF) or have >= n:
                        return None
                    secs = (lambda b: f" ({b / rate_bytes:.3f} s)") if rate_bytes else (lambda b: "")
                    return (f"is truncated: its WAV header promises {n} bytes of samples{secs(n)} "
                            f"but the file holds only {have}{secs(have)}")
                pos += 8 + n + (n & 1)
    except OSError:
        return None  # unreadable: load_wav reports it
    return None


def _speaker_dirs(folder: Path):
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and _wavs(p))


def _read_gender(layout: str, folders) -> tuple[dict, list]:
    """speaker -> gender from the metadata file found in any of ``folders``."""
    name = "speakers.csv" if layout == "fsdd" else "audioMNIST_meta.txt"
    for f in folders:
        p = f / name
        if not p.is_file():
            continue
        try:
            if layout == "fsdd":
                with open(p, newline="") as fh:
                    rows = list(csv.DictReader(fh))
                return {r["speaker"].strip(): r.get("gender", "unknown").strip() or "unknown" for r in rows}, [p]
            meta = json.loads(p.read_text())
            return {str(k).strip(): str(v.get("gender", "unknown")).strip() for k, v in meta.items()}, [p]
        except (OSError, ValueError, KeyError, AttributeError, csv.Error) as e:
            raise ValueError(f"metadata file {p} is malformed ({e})") from None
    return {}, []


def detect_layout(root) -> tuple[str, Path]:
    """('fsdd' | 'audiomnist', folder holding the recordings) for a data folder, or a clear error."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"data path {root} is a file; expected a folder of FSDD or AudioMNIST recordings")
    for cand in (root, root / "data"):
        if cand.is_dir() and _speaker_dirs(cand):
            return "audiomnist", cand
    for cand in (root / "recordings", root):
        if cand.is_dir() and _wavs(cand):
            return "fsdd", cand
    if not any(root.iterdir()):
        raise ValueError(f"data folder {root} is empty; expected FSDD ({{digit}}_{{speaker}}_{{take}}.wav) "
                         "or AudioMNIST (NN/{digit}_NN_{take}.wav) recordings")
    raise ValueError(f"data folder {root} holds no .wav recordings in the FSDD layout ({{digit}}_{{speaker}}_{{take}}.wav, "
                     "directly or in recordings/) or the AudioMNIST layout (NN/{digit}_NN_{take}.wav, directly or in data/)")


def find_data_root(to: Path, max_depth: int = 4) -> Path:
    """The shallowest folder under ``to`` (e.g. an unpacked archive) that :func:`detect_layout` accepts."""
    level = [to]
    for _ in range(max_depth + 1):
        for d in level:
            try:
                detect_layout(d)
                return d
            except (ValueError, FileNotFoundError):
                pass
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    raise ValueError(f"no FSDD or AudioMNIST recordings were found in the unpacked archive under {to}")


def scan(root, strict: bool = False) -> Listing:
    """List the clips of a data folder from file names (digit, speaker, take, gender)."""
    root = Path(root).expanduser()
    layout, base = detect_layout(root)
    base = base.resolve()  # once: clip paths below are built from it, not resolved one by one
    genders, meta = _read_gender(layout, [base, root, base.parent])
    clips, skipped = [], []
    files = _wavs(base) if layout == "fsdd" else [f for d in _speaker_dirs(base) for f in _wavs(d)]
    for f in files:
        m = _NAME.match(f.name)
        reason = None
        if not m:
            reason = "name does not match {digit}_{speaker}_{take}.wav"
        elif layout == "audiomnist" and m.group(2) != f.parent.name:
            reason = f"speaker {m.group(2)} in the name differs from its folder {f.parent.name}"
        if reason:
            if strict:
                raise ValueError(f"{f}: {reason}")
            skipped.append((str(f), reason))
            continue
        spk = m.group(2)
        clips.append(Clip(f, int(m.group(1)), spk, int(m.group(3)), genders.get(spk, "unknown")))
    if not clips:
        raise ValueError(f"data folder {root} holds no recording named like {{digit}}_{{speaker}}_{{take}}.wav")
    return Listing(root, base, layout, clips, skipped, meta)
