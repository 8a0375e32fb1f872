"""Fetch and unpack the public spoken-digit archives (used by ``python -m minivq.data download``).

This module knows archives, not dataset layouts: it imports nothing from minivq. Finding the
recordings inside what it unpacked is ``minivq.data.find_data_root``.

Standard library only: urllib for http(s):// and file:// URLs, hashlib for the checksum,
zipfile/tarfile for unpacking (members that would land outside the target folder are refused).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

# Public archives. size/sha256 are None where we have not pinned a release: the download then
# reports its sha256 so it can be passed with --sha256 next time.
ARCHIVES = {
    "fsdd": {"url": "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
             "size": None, "sha256": None},
    "audiomnist": {"url": "https://github.com/soerenab/AudioMNIST/archive/refs/heads/master.zip",
                   "size": None, "sha256": None},
}


def _fetch(url: str, dest: Path, progress: bool = True) -> tuple[int, str]:
    """Stream ``url`` into ``dest``; returns (bytes, sha256 hex)."""
    h = hashlib.sha256()
    n, t0, last = 0, time.perf_counter(), 0.0
    try:
        resp = urllib.request.urlopen(url, timeout=60)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot open {url} ({e})") from None
    with resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        while True:
            block = resp.read(1 << 20)
            if not block:
                break
            out.write(block)
            h.update(block)
            n += len(block)
            now = time.perf_counter()
            if progress and now - last > 1.0:
                last = now
                rate = n / max(now - t0, 1e-9)
                eta = f", ETA {(total - n) / rate:.0f} s" if total else ""
                print(f"downloaded {n / 1e6:.1f}{f' / {total / 1e6:.1f}' if total else ''} MB, "
                      f"{rate / 1e6:.1f} MB/s{eta}", file=sys.stderr)
    return n, h.hexdigest()


def _safe_target(to: Path, name: str) -> Path:
    target = (to / name).resolve()
    if target != to and to not in target.parents:
        raise ValueError(f"archive member {name!r} would be written outside {to}; refusing to unpack")
    return target


def unpack(archive: Path, to: Path) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into ``to`` (path traversal refused)."""
    to = to.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                _safe_target(to, name)
            z.extractall(to)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = t.getmembers()
            for m in members:
                _safe_target(to, m.name)
                if m.issym() or m.islnk():
                    raise ValueError(f"archive member {m.name!r} is a link; refusing to unpack")
            t.extractall(to, members=members)
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")


def download(name: str, to, url: str | None = None, sha256: str | None = None,
             size: int | None = None, progress: bool = True) -> Path:
    """Download dataset ``name`` ('fsdd' or 'audiomnist') into folder ``to``, verify, unpack.

    Size and sha256 are checked when given or known for the default URL; a mismatch deletes
    the download and raises ValueError. Returns ``to``, the folder it unpacked into; the data
    folder to pass to ``load_features`` is ``minivq.data.find_data_root(to)``.
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(ARCHIVES)}")
    known = ARCHIVES[name]
    if url is None:
        url, sha256, size = known["url"], sha256 or known["sha256"], size or known["size"]
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=to, prefix=f".{name}-", suffix=".part")
    os.close(fd)
    tmp = Path(tmp)
    try:
        n, digest = _fetch(url, tmp, progress)
        if size is not None and n != size:
            raise ValueError(f"download from {url} has {n} bytes, expected {size}")
        if sha256 is not None and digest != sha256.lower():
            raise ValueError(f"download from {url} has sha256 {digest}, expected {sha256}")
        if sha256 is None:
            print(f"sha256 {digest} ({n} bytes), not verified: no checksum known", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=to, prefix=f".{name}-unpack-") as staging:
            unpack(tmp, Path(staging))
            for item in Path(staging).iterdir():  # move into place only once all of it unpacked
                dest = to / item.name
                if dest.exists():
                    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                shutil.move(str(item), str(dest))
    finally:
        tmp.unlink(missing_ok=True)
    return to
