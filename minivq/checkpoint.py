"""Checkpoints: params + optimiser state + config + metadata in ONE .npz, written atomically.

Layout inside the .npz:
    p/<name>            parameter arrays
    o/<name>/m, o/<name>/v, o/<name>/t   Adam state per parameter (when saved)
    x/<name>            extra arrays (normalisation stats, ...)
    __json__            a JSON string: {"config": {...}, "meta": {...}, "format": 1}
Atomic: written to a temporary file in the same folder, then os.replace()d over the
target, so an interrupted save never leaves a half-written checkpoint behind.
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from minivq.backend import to_numpy

FORMAT = 1


def save(path, params, config=None, opt_state=None, meta=None, extra=None, dtype=None):
    """Write a checkpoint to ``path`` (.npz). ``dtype`` (e.g. np.float16) stores float
    params at lower precision (for shipped weights); optimiser state is always float32+."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, v in params.items():
        a = to_numpy(v)
        arrays[f"p/{k}"] = a.astype(dtype) if (dtype is not None and a.dtype.kind == "f") else a
    for k, st in (opt_state or {}).items():
        if st:
            arrays[f"o/{k}/m"] = to_numpy(st["m"])
            arrays[f"o/{k}/v"] = to_numpy(st["v"])
            arrays[f"o/{k}/t"] = np.asarray(st["t"])
    for k, v in (extra or {}).items():
        arrays[f"x/{k}"] = to_numpy(v)
    blob = {"format": FORMAT, "config": config or {}, "meta": meta or {}}
    arrays["__json__"] = np.asarray(json.dumps(blob))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load(path, dtype=None):
    """Read a checkpoint -> dict(params, opt_state, extra, config, meta), all NumPy.
    ``dtype`` casts float params (e.g. float16 storage back to float32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        blob = json.loads(str(z["__json__"]))
    except Exception as e:
        raise ValueError(f"checkpoint {path} is not a minivq checkpoint ({type(e).__name__}: {e})")
    if blob.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} has format {blob.get('format')}, this minivq reads format {FORMAT}")
    params, opt, extra = {}, {}, {}
    for key in z.files:
        if key.startswith("p/"):
            a = z[key]
            params[key[2:]] = a.astype(dtype) if (dtype is not None and a.dtype.kind == "f") else a
        elif key.startswith("o/"):
            name, field = key[2:].rsplit("/", 1)
            opt.setdefault(name, {})[field] = int(z[key]) if field == "t" else z[key]
        elif key.startswith("x/"):
            extra[key[2:]] = z[key]
    return {"params": params, "opt_state": opt, "extra": extra,
            "config": blob["config"], "meta": blob["meta"]}


def write_json(path, obj):
    """Atomically write a JSON file (metrics, cards)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write(path, write_fn):
    """Write ``path`` atomically: ``write_fn(f)`` fills a temporary binary file in the same folder
    (named NAME + 8 random characters + .tmp, like save's), which then replaces ``path`` with
    os.replace(). An interruption leaves the old file (or none) and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
