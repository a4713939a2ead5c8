"""One call run in a child process that was forked early, so that its slow preparation (for a
figure: importing matplotlib and loading its fonts, a third of a second) overlaps this process's
own work (integrating the scenario) on a second core.

The child is forked with :meth:`ForkedCall.start` and prepares at once; later, :meth:`ForkedCall.call`
sends it one function and its arguments (pickled through a pipe) and waits for it to finish.
Objects that existed before the fork (``shared``: the compiled model, which does not pickle, and
the scenario) are not copied: they travel as references to the child's own copies.

Nothing depends on the child: :meth:`call` returns False whenever the child could not do the
call (it failed, was killed, or could not be started), and the caller then does the call itself,
so that any error is reported as it would be without a child.  Without ``os.fork`` (not Linux),
with one usable core, or in a process that already runs threads (where a fork may deadlock),
:meth:`start` returns None and the caller works alone.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

__all__ = ["ForkedCall"]


def _read_only(mapping: dict) -> MappingProxyType:
    return MappingProxyType(mapping)


class _Pickler(pickle.Pickler):
    def __init__(self, file, shared: dict[int, int]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._shared = shared

    def persistent_id(self, obj):  # noqa: D102 - pickle hook
        return self._shared.get(id(obj))

    def reducer_override(self, obj):  # noqa: D102 - pickle hook
        if type(obj) is MappingProxyType:  # results hold read-only views of their dicts
            return _read_only, (dict(obj),)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, objects: Sequence[Any]):
        super().__init__(file)
        self._objects = objects

    def persistent_load(self, pid):  # noqa: D102 - pickle hook
        return self._objects[pid]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class ForkedCall:
    """A forked child that prepares now and runs one call later (see the module docstring)."""

    def __init__(self, pid: int, fd: int, shared: Sequence[Any]):
        self.pid = pid
        self._fd: int | None = fd
        self._shared = {id(o): i for i, o in enumerate(shared)}
        self._objects = list(shared)  # kept alive, so that their ids stay theirs

    @classmethod
    def start(cls, prepare: Callable[[], Any], shared: Sequence[Any] = ()) -> ForkedCall | None:
        """Fork a child that runs ``prepare()`` and then waits for :meth:`call`; None where a
        child is not worth it or not safe (no fork, one usable core, threads running)."""
        if not sys.platform.startswith("linux") or threading.active_count() > 1:
            return None
        try:
            if len(os.sched_getaffinity(0)) < 2:
                return None
        except OSError:  # pragma: no cover - affinity always readable on Linux
            return None
        objects = list(shared)
        for stream in (sys.stdout, sys.stderr):  # nothing buffered twice
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            return None
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(write)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent reports an interrupt, not the child
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                prepare()
                data = _read_all(read)
                if data:  # empty: the parent went on without the child
                    func, args, kwargs = _Unpickler(io.BytesIO(data), objects).load()
                    func(*args, **kwargs)
                code = 0
            except BaseException:  # noqa: BLE001 - the parent does the call itself and reports
                code = 1
            finally:
                os._exit(code)
        os.close(read)
        return cls(pid, write, objects)

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Run ``func(*args, **kwargs)`` in the child and wait for it; True if it returned
        normally there.  Once only: later calls, or a call after :meth:`close`, return False."""
        if self._fd is None:
            return False
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, self._shared).dump((func, args, kwargs))
        except Exception:  # noqa: BLE001 - something that does not pickle: the caller does the call
            self.close()
            return False
        view = memoryview(buffer.getbuffer())
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:  # the child is gone (BrokenPipeError)
            pass
        finally:
            view.release()
            os.close(self._fd)
            self._fd = None
        return self._wait() == 0

    def close(self) -> None:
        """Stop the child without a call (it may still be preparing) and reap it; safe to call
        twice, and after :meth:`call`."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self.pid is not None:
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:  # pragma: no cover - it has exited already
                    pass
            self._wait()

    def _wait(self) -> int:
        if self.pid is None:
            return 1
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # pragma: no cover - already reaped
            return 1
        finally:
            self.pid = None
        return os.waitstatus_to_exitcode(status)

    def __enter__(self) -> ForkedCall:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
