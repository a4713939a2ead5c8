"""Atomic file writing: a reader sees the old file or the complete new one, never a part.

Also output folders as a whole: :func:`staged_outputs` writes a command's files in a
hidden staging folder and commits them together (replacing the command's files of an
earlier run, stale ones included), under an exclusive lock on the folder
(``.exosim.lock``, :func:`fcntl.flock`); :func:`claim_output` checks that a folder can
be written and holds that lock for a whole command. SIGINT and SIGTERM are deferred
while a commit or a clean-up runs, so neither stops half-way.

A leaf module (it imports nothing from exosim), so any stage can use it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no folder locks
    fcntl = None

__all__ = [
    "atomic_write",
    "atomic_path",
    "staged_outputs",
    "claim_output",
    "output_claims",
    "OutputError",
    "LOCK_NAME",
]

LOCK_NAME = ".exosim.lock"
"""Lock file inside an output folder while a command writes to it (removed afterwards)."""

STAGE_PREFIX = ".exosim-"
"""Name prefix of the staging folders (and the writability probe) inside an output folder."""


def _default_mode() -> int:
    """Permissions of a newly created ordinary file: ``0o666`` less the process umask."""
    # the umask can only be read by setting it; restore it at once
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, data: str | bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically.

    The data go to a temporary file in the same folder, which is flushed to disk,
    given its permissions and renamed over ``path`` (:func:`os.replace`, atomic on
    POSIX and Windows). On any failure the temporary file is removed and ``path``
    is left as it was.

    Parameters
    ----------
    path : str or Path
        File to create or replace; its folder must exist.
    data : str or bytes
        Content; text is encoded as UTF-8 (newlines are written as given).
    mode : int, optional
        Permission bits of the file; default ``0o666`` less the umask, as for a
        file created with :func:`open`.

    Raises
    ------
    OSError
        The folder does not exist or is not writable, the disk is full, etc.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class OutputError(OSError):
    """An output file or folder cannot be written (or another exosim command is writing to it)."""


_DEFERRED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Block SIGINT and SIGTERM for a short step that must not stop half-way (a commit, a
    clean-up); a signal that arrives meanwhile is delivered, and handled, when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_local = threading.local()  # .locks: folder -> [fd, lock path, depth]; .scopes: claims per output_claims()

#: staging folders made by this process and not yet committed or removed, with its pid (a forked
#: child inherits the set: it never removes its parent's)
_LIVE: set[tuple[int, Path]] = set()


def remove_staging() -> None:
    """Remove the staging folders an interrupted command of this process left behind.

    Python runs a signal's handler at the first instruction of the function it interrupts, so a
    signal that arrives just as a ``with`` block of :func:`staged_outputs` ends can be handled at
    the very start of the block's exit, before the exit defers signals: the exit then raises
    KeyboardInterrupt before its clean-up, and the staging folder (with the files written so
    far) stayed in the output folder.  The command line calls this on its way out; it is also an
    exit hook of the interpreter.
    """
    with _signals_deferred():
        pid = os.getpid()
        for entry in [e for e in _LIVE if e[0] == pid]:
            shutil.rmtree(entry[1], ignore_errors=True)
            _LIVE.discard(entry)


atexit.register(remove_staging)


#: the exception of a signal (SIGINT, SIGTERM) whose handler ran inside a C callback (numba
#: compiling a kernel calls back into Python), where Python prints a raised exception and drops
#: it: the command would go on and commit its outputs. :func:`raise_pending` raises it at the
#: next commit (and the CLI at its end), so a signal is never lost.
_PENDING: list[type[BaseException]] = []


def note_signal(exc: type[BaseException]) -> None:
    """Record the exception a signal handler is about to raise (in case it is dropped)."""
    _PENDING[:] = [exc]


def clear_signal() -> None:
    """The recorded signal was handled."""
    _PENDING.clear()


def pending_signal() -> bool:
    """Whether a signal's exception is recorded and not yet handled."""
    return bool(_PENDING)


def pending_exception() -> type[BaseException] | None:
    """The exception class of the recorded signal (None: none recorded)."""
    return _PENDING[0] if _PENDING else None


def raise_pending() -> None:
    """Raise the exception of a signal whose handler's exception was dropped, if any."""
    if _PENDING:
        raise _PENDING[0]()


def _locks() -> dict:
    if not hasattr(_local, "locks"):
        _local.locks = {}
    return _local.locks


def _lock_file(folder: Path) -> int | None:
    """An open descriptor holding the exclusive lock of ``folder`` (``None`` without fcntl).

    Raises :class:`OutputError` when another process (or another thread) holds it.
    """
    if fcntl is None:  # pragma: no cover - not POSIX
        return None
    path = folder / LOCK_NAME
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"another exosim command is writing to {folder}") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            return fd
        # the holder removed this file as it let go (it unlinks before unlocking): lock the new one
        os.close(fd)
    raise OutputError(f"cannot lock output folder {str(folder)!r}")  # pragma: no cover


def _acquire(folder: Path) -> None:
    """Lock ``folder`` for this thread; reentrant (a command's claim and its writer's commit)."""
    key = os.path.realpath(folder)
    locks = _locks()
    if key in locks:
        locks[key][2] += 1
        return
    locks[key] = [_lock_file(folder), folder / LOCK_NAME, 1]


def _release(folder: Path) -> None:
    """Undo one :func:`_acquire`; the last removes the lock file (before unlocking) and unlocks."""
    key = os.path.realpath(folder)
    locks = _locks()
    entry = locks[key]
    entry[2] -= 1
    if entry[2]:
        return
    del locks[key]
    fd, path, _ = entry
    if fd is None:  # pragma: no cover - not POSIX
        return
    try:
        os.unlink(path)
    except OSError:
        pass
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: forked workers may share the descriptor
    finally:
        os.close(fd)


def _missing(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove the folders (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def output_claims() -> Iterator[None]:
    """Scope of :func:`claim_output`: when the block ends, however it ends, every folder claimed
    inside it is unlocked, and a folder the claim created is removed again if it is still empty."""
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    _local.scopes.append([])
    try:
        yield
    finally:
        claims = _local.scopes.pop()
        with _signals_deferred():
            for folder, created in reversed(claims):
                _release(folder)
                _remove_empty(created)


def claim_output(outdir: str | Path) -> Path:
    """Check, before any work, that ``outdir`` can be written, and lock it for the rest of the
    enclosing :func:`output_claims` block.

    The folder (and its parents) is created and a probe file written in it and removed.

    Raises
    ------
    OutputError
        The folder cannot be created or written ("cannot write to output folder ..."), or
        another exosim command holds its lock ("another exosim command is writing to ...").
    RuntimeError
        Called outside an :func:`output_claims` block.
    """
    scopes = getattr(_local, "scopes", None)
    if not scopes:
        raise RuntimeError("claim_output() outside an output_claims() block")
    outdir = Path(outdir)
    with _signals_deferred():
        created = _missing(outdir)
        try:
            outdir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f"{STAGE_PREFIX}probe-", dir=outdir)
            os.close(fd)
            os.unlink(probe)
            _acquire(outdir)
        except OSError as exc:
            _remove_empty(created)
            if isinstance(exc, OutputError):
                raise
            if Path(outdir).exists() and not Path(outdir).is_dir():
                raise OutputError(f"output folder {str(outdir)!r} is a file, not a folder") from None
            raise OutputError(f"cannot write to output folder {str(outdir)!r}: {exc.strerror or exc}") from None
        scopes[-1].append((outdir, created))
    return outdir


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed to ``path``.

    For writers that need a file name (matplotlib's ``savefig``): the file appears
    complete or not at all.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _Staged:
    """A temporary folder inside ``outdir`` whose files are moved into ``outdir`` only when every
    file was written (so a failure leaves no partial output); raises :class:`OutputError`.

    With ``names`` (every file the command can write) the commit also removes the files of
    ``names`` this run did not write, so no stale output of an earlier run stays beside the
    new ones; other files in ``outdir`` are never touched.
    """

    def __init__(self, outdir: str | Path, names: Iterable[str] | None = None):
        self.outdir = Path(outdir)
        self.names = None if names is None else frozenset(names)
        self.written: list[Path] = []
        self.removed: list[Path] = []

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write to output folder {str(self.outdir)!r}: {exc.strerror or exc}")

    def __enter__(self) -> Path:
        with _signals_deferred():  # the staging folder exists only inside the with-block
            try:
                self.outdir.mkdir(parents=True, exist_ok=True)
                self.tmp = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=self.outdir))
            except OSError as exc:
                raise self._error(exc) from None
            _LIVE.add((os.getpid(), self.tmp))
        return self.tmp

    def _commit(self) -> None:
        files = sorted(self.tmp.iterdir())
        new = {f.name for f in files}
        if self.names is not None and not new <= self.names:
            raise ValueError(f"files not declared for this output folder: {sorted(new - self.names)}")
        _acquire(self.outdir)  # another process's commit never interleaves with this one
        try:
            for f in files:
                os.replace(f, self.outdir / f.name)
                self.written.append(self.outdir / f.name)
            for name in sorted((self.names or frozenset()) - new):
                stale = self.outdir / name
                try:
                    stale.unlink()
                except FileNotFoundError:
                    continue
                self.removed.append(stale)
        finally:
            _release(self.outdir)

    def __exit__(self, kind, exc, tb) -> bool:
        with _signals_deferred():  # a signal now is handled once the folder is committed or cleaned up
            try:
                if kind is None:
                    raise_pending()  # a signal whose exception a C callback dropped: commit nothing
                    self._commit()
                elif issubclass(kind, OSError) and not issubclass(kind, OutputError):
                    raise self._error(exc) from None
            except OutputError:
                raise
            except OSError as err:
                raise self._error(err) from None
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)
                _LIVE.discard((os.getpid(), self.tmp))
        return False


def staged_outputs(outdir: str | Path, names: Iterable[str] | None = None) -> _Staged:
    """Context manager: write files into the yielded folder; they appear in ``outdir`` together
    when the block succeeds (``.written`` lists them), and none appear when it fails (or is
    interrupted: SIGINT's KeyboardInterrupt or any exception).

    ``names``: the full set of file names the command can produce; committing removes those
    of them this run did not write (``.removed`` lists them). Without it only the files
    written are replaced. The commit holds the folder's lock (:data:`LOCK_NAME`); if another
    process holds it, :class:`OutputError` and nothing is moved.
    """
    return _Staged(outdir, names)
