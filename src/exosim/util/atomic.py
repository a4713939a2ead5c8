"""Atomic file writing: a reader sees the old file or the complete new one, never a part.

A leaf module (it imports nothing from exosim), so any stage can use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "atomic_path", "staged_outputs", "OutputError"]


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
    """An output file or folder cannot be written."""


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
    file was written (so a failure leaves no partial output); raises :class:`OutputError`."""

    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.written: list[Path] = []

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write to output folder {str(self.outdir)!r}: {exc.strerror or exc}")

    def __enter__(self) -> Path:
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=".exosim-", dir=self.outdir))
        except OSError as exc:
            raise self._error(exc) from None
        return self.tmp

    def __exit__(self, kind, exc, tb) -> bool:
        try:
            if kind is None:
                for f in sorted(self.tmp.iterdir()):
                    os.replace(f, self.outdir / f.name)
                    self.written.append(self.outdir / f.name)
            elif issubclass(kind, OSError) and not issubclass(kind, OutputError):
                raise self._error(exc) from None
        except OutputError:
            raise
        except OSError as err:
            raise self._error(err) from None
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def staged_outputs(outdir: str | Path) -> _Staged:
    """Context manager: write files into the yielded folder; they appear in ``outdir`` together
    when the block succeeds (``.written`` lists them), and none appear when it fails."""
    return _Staged(outdir)
