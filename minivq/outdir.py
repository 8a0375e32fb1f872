"""Output folders: check them, lock them, tidy up after killed runs, and record what made them.

Every command that writes an output folder (python -m minivq.train vqvae|prior|classifier,
python -m minivq.pipeline, python -m minivq.generate) passes through here before any work:

  writable  The folder is created when missing and a probe file is created and deleted in it,
            so an --out that is a file, lies under a file, or cannot be written fails at once
            with one sentence, not after an epoch of training. (A probe, not os.access or the
            mode bits: those say nothing about a read-only mount, and root ignores them.)
  lock      OUT/.lock names the PID of the run writing the folder; a second run refuses to
            start and names that PID. The lock itself is an flock() on that file, which the
            kernel drops when its process dies, so a killed run (SIGKILL) never blocks the next
            one: its .lock is taken over with a note. Each folder has its own lock: the pipeline
            holds OUT while its trainers hold OUT/<stage>. Holding a folder again in the same
            thread only counts up, so nested calls on one folder do not lock themselves out.
  tidy      With the lock held, temporary files of minivq's own naming that a killed run left
            behind (checkpoint.save / atomic_write: NAME.npzXXXXXXXX.tmp, write_json:
            NAME.json.tmp) are deleted. Nothing else in the folder is touched.
  record    The command lines keep OUT/run.json: for each kind of run that wrote the folder, its
            settings (the command-line options apart from --out, --resume, --force, --export and
            --log-every). A run is refused, unless --force is given, when it would overwrite
              - the files of another kind of run (a prior into a VQ-VAE folder: metrics.json),
              - the files of a run of its kind made with other settings (train vqvae --cr 4
                over a CR=16 run; a pipeline with other options over a finished pipeline's
                results.json and report.md -- its stages it sets aside itself), or
              - files of its kind that no record accounts for (left by an older minivq).
            The same command again goes on as before (a trainer retrains, the pipeline reuses
            its finished stages); --resume goes on whatever the settings (each trainer checks
            what resuming needs) but never into another kind's files, and leaves the record as
            it is. A run that fails before writing any of its files puts the record back as it
            was (and a folder it created and left empty is removed). Metrics keep their one
            name, metrics.json: runs of different kinds belong in different folders, which is
            what the refusal says.

Use:
    @outdir.scoped                          # locks taken inside are released when run returns
    def run(args):
        outdir.claim(args.out, "vqvae", args)   # command lines: writable, lock, tidy, record
        ...
    @outdir.scoped
    def train(..., out_dir):
        outdir.hold(out_dir)                # library code: writable, lock, tidy (no record)
    with outdir.locked(path): ...           # the same as a context manager

Every refusal is an OutDirError, a ValueError, so the command lines print it as one
``error: ...`` line and exit with status 2.
"""
import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from minivq.checkpoint import atomic_write, write_json

try:
    import fcntl
except ImportError:  # not POSIX: the PID written in .lock decides alone (see _owner_alive)
    fcntl = None

LOCK_NAME = ".lock"
RECORD_NAME = "run.json"
PROBE_PREFIX = ".minivq-probe-"
# temporary files minivq writes, and only those: mkstemp adds 8 characters of [a-z0-9_]
TEMP_PATTERN = re.compile(r"(.+\.(npz|json)[a-z0-9_]{8}|.+\.json|" + re.escape(PROBE_PREFIX) + r"[a-z0-9_]{8})\.tmp")
# what each kind of run writes (and would overwrite) at the top of its folder
OUTPUTS = {
    "vqvae": ("last.npz", "vqvae.npz", "tokens.npz", "metrics.json"),
    "prior": ("prior.npz", "metrics.json"),
    "classifier": ("last.npz", "classifier.npz", "metrics.json"),
    "listener": ("listener.npz", "metrics.json"),
    "pipeline": ("results.json", "report.md", "report.html"),
    "paper": ("results.json", "report.md", "report.html"),  # python -m minivq.experiments paper
}
IGNORED_OPTIONS = ("out", "resume", "force", "log_every", "model", "export")  # not part of what a run makes
PATH_OPTIONS = ("data", "tokens")  # compared as absolute paths


class OutDirError(ValueError):
    """An output folder that cannot be used: not writable, locked by another run, or holding
    another run's files. The message is one sentence naming the folder."""


# ----------------------------------------------------------------------------- writable
def check_writable(path, what="output folder"):
    """Create ``path`` (and its parents) when missing and prove that a file can be created in
    it; raise OutDirError naming ``what`` and the path otherwise. Returns the Path."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutDirError(f"{what} {p} is a file, not a folder")
    if not p.is_dir():
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise OutDirError(f"{what} {p} cannot be created: {parent} is a file, not a folder")
                break
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutDirError(f"{what} {p} cannot be created ({e.strerror or e})")
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=PROBE_PREFIX, suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutDirError(f"{what} {p} is not writable ({e.strerror or e})")
    return p


# ----------------------------------------------------------------------------- lock
_local = threading.local()  # per thread: held {folder: [fd, count]}, scopes [ExitStack, ...]


def _state():
    if not hasattr(_local, "held"):
        _local.held, _local.scopes = {}, []
    return _local


def _read_owner(fd):
    """The JSON record in a lock file ({'pid', 'started', 'command'}), or {} when unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 4096).decode() or "{}")
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _owner_alive(pid):
    """Whether process ``pid`` exists (only where flock is missing; a reused PID reads as alive)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    if os.name != "posix":  # os.kill(pid, 0) would terminate a process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _flock(fd):
    """True: this process now holds the kernel lock; False: another process holds it;
    None: no flock here (platform or file system), the PID in the file decides."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def _busy(folder, owner, what):
    started = f", started {owner['started']}" if owner.get("started") else ""
    return OutDirError(f"{what} {folder} is in use by another run (PID {owner.get('pid', '?')}{started}); "
                       f"wait for it to finish, or choose another folder")


def _acquire(folder, what):
    """Lock ``folder`` for this process -> the open file descriptor of its .lock."""
    lock = folder / LOCK_NAME
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutDirError(f"{what} {folder} is not writable ({e.strerror or e})")
        got, owner = _flock(fd), _read_owner(fd)
        if got is False or (got is None and _owner_alive(owner.get("pid"))):
            os.close(fd)
            raise _busy(folder, owner, what)
        # a run that releases its lock deletes the file: the one locked must still be at `lock`
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        if owner.get("pid") not in (None, os.getpid()):
            print(f"note: {lock} was left by PID {owner['pid']}, which ended without releasing it; "
                  "taking it over", file=sys.stderr)
        me = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        return fd
    raise OutDirError(f"{what} {folder}: could not take its lock (other runs keep replacing {lock})")


def _command():
    """The command line of this process, as typed (python -m minivq.train ...)."""
    return " ".join(getattr(sys, "orig_argv", None) or sys.argv)


def _tidy(folder):
    """Delete temporary files of minivq's naming (TEMP_PATTERN) left in ``folder`` by a killed run."""
    gone = []
    for p in sorted(folder.iterdir()):
        if TEMP_PATTERN.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                gone.append(p.name)
            except OSError:
                pass
    if gone:
        print(f"note: removed {len(gone)} temporary file(s) left in {folder} by an interrupted run: "
              f"{', '.join(gone)}", file=sys.stderr)
    return gone


@contextlib.contextmanager
def locked(path, what="output folder"):
    """Check ``path`` is a writable folder (creating it), lock it and tidy it; release on exit.
    Folders created here that are still empty at the release are removed again, so a run that
    fails before writing anything leaves no trace."""
    p = Path(path)
    created = [q for q in (p, *p.parents) if not q.exists()]  # deepest first
    key = None
    try:
        folder = check_writable(p, what)
        key = os.path.realpath(folder)
        held = _state().held
        if key in held:
            held[key][1] += 1
        else:
            held[key] = [_acquire(folder, what), 1]
            _tidy(folder)
        yield folder
    finally:
        if key is not None and key in held:
            entry = held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del held[key]
                with contextlib.suppress(OSError):
                    os.unlink(folder / LOCK_NAME)  # delete first, then drop the lock (see _acquire)
                os.close(entry[0])
        for q in created:
            try:
                q.rmdir()  # only succeeds while empty
            except OSError:
                break


def scoped(fn):
    """Decorator: folders held (hold, claim) while ``fn`` runs are released when it returns or raises."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        scopes = _state().scopes
        with contextlib.ExitStack() as stack:
            scopes.append(stack)
            try:
                return fn(*args, **kwargs)
            finally:
                scopes.pop()
    return wrapper


def hold(*paths, what="output folder"):
    """``locked(path)`` for each path (None is skipped) until the enclosing @scoped function ends."""
    scopes = _state().scopes
    if not scopes:
        raise RuntimeError("outdir.hold() needs an enclosing function decorated with @outdir.scoped")
    for p in paths:
        if p is not None:
            scopes[-1].enter_context(locked(p, what))


# ----------------------------------------------------------------------------- record
def settings_of(args):
    """The options of a command line (argparse Namespace) that decide what a run makes."""
    s = {}
    for k, v in sorted(vars(args).items()):
        if k in IGNORED_OPTIONS or callable(v):
            continue
        s[k] = str(Path(v).resolve()) if k in PATH_OPTIONS and v else v
    return json.loads(json.dumps(s, default=str))


def _read_record(path):
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in rec.items() if k in OUTPUTS and isinstance(v, dict)} if isinstance(rec, dict) else {}


def _differences(old, new):
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    text = "; ".join(f"--{k.replace('_', '-')} {old.get(k)} there, {new.get(k)} now" for k in keys[:3])
    return text + ("; ..." if len(keys) > 3 else "")


def claim(path, kind, args, what="--out"):
    """For a command line of ``kind`` (a key of OUTPUTS) with options ``args``: hold ``path``
    (writable, locked, tidied) and check and update its run.json record (see the module
    docstring); args.force and args.resume are read when present."""
    hold(path, what=what)
    folder = Path(path)
    force, resume = bool(getattr(args, "force", False)), bool(getattr(args, "resume", False))
    settings = settings_of(args)
    go_on = "continue it with --resume, " if hasattr(args, "resume") else ""  # the pipeline resumes by itself
    records = _read_record(folder / RECORD_NAME)
    existing = [f for f in OUTPUTS[kind] if (folder / f).exists()]
    if existing and not force:
        others = [k for k in records if k != kind and set(OUTPUTS[k]) & set(existing)]
        mine = records.get(kind)
        if others:
            shared = [f for f in existing if f in OUTPUTS[others[0]]]
            raise OutDirError(f"{what} {folder} holds the {others[0]} run recorded in {RECORD_NAME}, whose "
                              f"{', '.join(shared)} a {kind} run would overwrite; choose another folder, or pass "
                              f"--force to overwrite")
        if mine is None and not resume:
            raise OutDirError(f"{what} {folder} holds {', '.join(existing)} of a run that left no {RECORD_NAME} "
                              f"record; {go_on}choose another folder, or pass --force to overwrite it")
        if mine is not None and not resume and mine.get("settings") != settings:
            raise OutDirError(f"{what} {folder} holds a {kind} run made with other settings "
                              f"({_differences(mine.get('settings') or {}, settings)}); {go_on}choose another folder, "
                              f"or pass --force to overwrite it")
    if force or not resume or not existing:
        if force:  # runs whose files this one overwrites no longer own them
            records = {k: v for k, v in records.items() if not set(OUTPUTS[k]) & set(existing)}
        records[kind] = {"settings": settings, "command": _command(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        rec_path = folder / RECORD_NAME
        old, stamp = (rec_path.read_bytes() if rec_path.is_file() else None), _stamp(folder, kind)
        write_json(rec_path, records)

        def undo(exc_type, exc, tb):  # a run that fails before writing anything leaves the record as it was
            if exc_type is not None and _stamp(folder, kind) == stamp:
                if old is None:
                    rec_path.unlink(missing_ok=True)
                else:
                    atomic_write(rec_path, lambda f: f.write(old))
            return False
        _state().scopes[-1].push(undo)  # runs before the lock is released
    return folder


def _stamp(folder, kind):
    """{file: modification time} of the outputs of ``kind`` present in ``folder``."""
    return {f: (folder / f).stat().st_mtime_ns for f in OUTPUTS[kind] if (folder / f).exists()}
