"""Checkpoints: params + optimiser state + config + metadata in ONE .npz, written atomically.

Layout inside the .npz:
    p/<name>            parameter arrays
    o/<name>/m, o/<name>/v, o/<name>/t   Adam state per parameter (when saved)
    x/<name>            extra arrays (normalisation stats, ...)
    __json__            a JSON string: {"config": {...}, "meta": {...}, "format": 1}
Atomic: written to a temporary file in the same folder, then os.replace()d over the
target, so an interrupted save never leaves a half-written checkpoint behind.
"""
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from minivq.backend import to_numpy

FORMAT = 1


def save(path, params, config=None, opt_state=None, meta=None, extra=None, dtype=None):
    """Write a checkpoint to ``path`` (.npz). ``dtype`` (e.g. np.float16) stores float
    params at lower precision (for shipped weights); optimiser state is always float32+."""
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
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path, dtype=None, kind=None):
    """Read a checkpoint -> dict(params, opt_state, extra, config, meta), all NumPy.
    ``dtype`` casts float params (e.g. float16 storage back to float32). ``kind`` ('vqvae',
    'prior', 'classifier' or 'listener'): refuse a checkpoint of another kind with a clear ValueError.

    Every array is read here, inside the error handling: np.load opens the zip lazily and
    reads (and CRC-checks) a member only when it is accessed, so a damaged file must be read
    in full to be caught here rather than later as a raw zipfile error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        blob = json.loads(str(z["__json__"]))
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a zip whose bytes were changed or cut
        raise ValueError(f"checkpoint {path} is damaged ({type(e).__name__}: {e})")
    except Exception as e:
        raise ValueError(f"checkpoint {path} is not a minivq checkpoint ({type(e).__name__}: {e})")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else None
        raise ValueError(f"checkpoint {path} has format {got}, this minivq reads format {FORMAT}")
    params, opt, extra = {}, {}, {}
    try:
        with z:
            for key in z.files:
                if key.startswith("p/"):
                    a = z[key]
                    params[key[2:]] = a.astype(dtype) if (dtype is not None and a.dtype.kind == "f") else a
                elif key.startswith("o/"):
                    name, field = key[2:].rsplit("/", 1)
                    opt.setdefault(name, {})[field] = int(z[key]) if field == "t" else z[key]
                elif key.startswith("x/"):
                    extra[key[2:]] = z[key]
    except Exception as e:
        raise ValueError(f"checkpoint {path} is damaged ({type(e).__name__}: {e})")
    if not isinstance(blob.get("config"), dict) or not isinstance(blob.get("meta"), dict):
        raise ValueError(f"checkpoint {path} is damaged (its config/meta record is not a JSON object)")
    ck = {"params": params, "opt_state": opt, "extra": extra, "config": blob["config"], "meta": blob["meta"]}
    if kind is not None and kind_of(ck) != kind:
        raise ValueError(f"{path} holds {KIND_NAMES.get(kind_of(ck), 'an unknown')} checkpoint, "
                         f"not {KIND_NAMES[kind]} checkpoint")
    return ck


KIND_NAMES = {"vqvae": "a VQ-VAE", "prior": "a transformer prior", "classifier": "a classifier",
              "listener": "a listener (second judge)"}


def kind_of(ck):
    """'vqvae', 'prior', 'classifier', 'listener' or 'unknown' for a loaded checkpoint: meta['kind'] when
    the trainer recorded it, else inferred from the layout (older checkpoints): a VQ-VAE keeps
    its config under 'vqvae', a prior under 'model', a classifier's config is flat (n_mels...)."""
    k = ck["meta"].get("kind")
    if k in KIND_NAMES:
        return k
    if "vqvae" in ck["config"]:
        return "vqvae"
    if "model" in ck["config"]:
        return "prior"
    if "n_mels" in ck["config"] and "conv1_w" in ck["params"]:
        return "classifier"
    if "listener" in ck["config"]:
        return "listener"
    return "unknown"


def check_resumable(ck, path, meta_keys):
    """A checkpoint to resume must hold training state: the meta fields ``meta_keys`` and, after
    step 0, the optimiser moments. Final/exported models keep neither; say so, not KeyError."""
    missing = [k for k in meta_keys if k not in ck["meta"]]
    if not ck["opt_state"] and ck["meta"].get("step", 0) > 0:
        missing.append("optimiser state")
    if missing:
        raise ValueError(f"{path} holds {KIND_NAMES.get(kind_of(ck), 'a')} model without its training state "
                         f"({', '.join(missing)} missing), so it cannot be resumed; train into a new --out folder")


def file_sha256(path):
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_from_dict(cls, d, strict=True):
    """A config dataclass from the dict saved in a checkpoint: fields the record lacks take their
    defaults; unknown keys are a ValueError (strict) or ignored (strict=False, for configs whose
    older checkpoints carried fields that have since gone)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown and strict:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; expected some of {sorted(names)}")
    return cls(**{k: v for k, v in d.items() if k in names})


def read_json(path, what="JSON file"):
    """Read a JSON file; a missing file is a FileNotFoundError and unreadable or invalid JSON
    (NaN/Infinity included, which strict JSON does not allow) a ValueError, each naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")

    def no_constants(name):
        raise ValueError(f"{name} is not allowed in JSON")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})")
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be read ({e.strerror or e})")


def write_json(path, obj):
    """Atomically write a JSON file (metrics, cards), through atomic_write."""
    text = json.dumps(_finite(obj), indent=2, allow_nan=False, default=_json_default) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _finite(o):
    """A copy of a JSON-bound structure with non-finite floats (NumPy's too) replaced by None:
    NaN and +-inf are written as null, so a written file is always valid JSON (json.dumps
    would otherwise write the non-standard NaN that strict readers refuse)."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write(path, write_fn):
    """Write ``path`` atomically; every file minivq writes (checkpoints, JSON, caches) goes
    through here. ``write_fn(f)`` fills a temporary binary file in the same folder, named
    NAME + 8 random characters + .tmp (the pattern outdir.TEMP_PATTERN clears away), which then
    replaces ``path`` with os.replace(). An interruption leaves the old file (or none) and no
    temporary file behind. Returns ``path`` as a Path."""
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
