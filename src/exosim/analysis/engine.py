"""Where batches run: one tiny interface, three engines (after pyPESTO's ``engine``).

Analysis code calls :meth:`Engine.map` with a picklable top-level function and a
list of tasks; it never imports a parallel library.  Results come back in task
order, so serial, process and Dask runs of the same seeded job are identical.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = [
    "Engine",
    "SerialEngine",
    "ProcessEngine",
    "AutoEngine",
    "DaskEngine",
    "EngineError",
    "make_engine",
    "parse_workers",
    "usable_cores",
]


#: steps of batches under way in this process inside :func:`frozen_heap` (nested ones count too)
_FROZEN = 0
#: whether the heap is frozen by :func:`frozen_heap` (not by the application: that is left alone)
_OWNED = False
_FREEZE_LOCK = threading.Lock()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Exempt the objects alive now from the cyclic garbage collector while a step of a batch runs
    (a task in this process, or the wait for a worker's next result).

    A job allocates many short-lived arrays; each full collection it triggers would otherwise
    walk every long-lived object of the process (numba, scipy, the catalogues: about 0.06 s a
    time on this project's 2-core box), and in a forked worker it also writes to every page the
    worker shares with its parent (copy-on-write).  Objects made during the step are still
    collected; the frozen ones return to the collector when the outermost step ends, so a batch
    whose results are not all taken (an abandoned or a suspended map) leaves nothing frozen
    (``gc.freeze``, as the Python documentation recommends around ``fork``).  A heap the
    application has frozen itself is left as it is.
    """
    global _FROZEN, _OWNED
    with _FREEZE_LOCK:
        if _FROZEN == 0:
            _OWNED = gc.get_freeze_count() == 0
            if _OWNED:
                gc.freeze()
        _FROZEN += 1
    try:
        yield
    finally:
        with _FREEZE_LOCK:
            _FROZEN -= 1
            if _FROZEN == 0 and _OWNED:
                gc.unfreeze()
                _OWNED = False


class EngineError(RuntimeError):
    """An engine that cannot start (e.g. an unreachable scheduler)."""


class Engine:
    """Run ``func`` over ``tasks``; yield results in task order."""

    #: processes that run tasks at once (callers size their tasks to keep them all busy)
    workers: int = 1

    def map(self, func: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        """Apply ``func`` to every task, yielding results in order."""
        raise NotImplementedError

    def size(self, tasks: int) -> int:
        """The processes a job of ``tasks`` tasks (as cut for one process) will run on; an engine
        whose size is fixed ignores the job (:class:`AutoEngine` decides here)."""
        return self.workers

    def close(self, abort: bool = False) -> None:
        """Release resources (processes, client connections).  ``abort``: the job was interrupted
        (a signal, an error): end the work still running instead of waiting for it."""

    def describe(self) -> str:
        """One line for provenance."""
        return type(self).__name__

    def record(self) -> dict:
        """What provenance records of the engine."""
        return {"engine": self.describe(), "workers": self.workers}


class SerialEngine(Engine):
    """In this process, one task after another."""

    def map(self, func, tasks):
        """Apply ``func`` to every task, in order."""
        for task in tasks:
            with frozen_heap():
                result = func(task)
            yield result


class ProcessEngine(Engine):
    """A pool of worker processes on this machine."""

    def __init__(self, workers: int):
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        # a worker's collector leaves alone what it inherited (forked) or imported before its first task
        self._pool = ProcessPoolExecutor(max_workers=workers, initializer=gc.freeze)

    def map(self, func, tasks):
        """Apply ``func`` to every task in worker processes; results in task order."""
        with frozen_heap():  # the workers are forked here, at the first task
            results = self._pool.map(func, tasks)
        while True:
            with frozen_heap():
                try:
                    result = next(results)
                except StopIteration:
                    return
            yield result

    def close(self, abort: bool = False) -> None:
        """Shut the pool down: after its tasks, or (``abort``) at once, the queued tasks cancelled
        and the running ones ended (a worker does not see its parent end: interrupted, the
        parent would wait for a long task, or leave workers behind that hold its pipes open)."""
        if not abort:
            self._pool.shutdown()
            return
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()
        for process in workers:
            process.join(timeout=5.0)

    def describe(self) -> str:
        """Engine and worker count."""
        return f"ProcessEngine(workers={self.workers})"


class AutoEngine(Engine):
    """``--workers auto``: one worker process per usable core, but no more processes than the
    job has tasks, and none for a job of one task (about a second of work), which runs in this
    process.  The choice is made once, by :meth:`size` (or at the first :meth:`map`, from its
    number of tasks), and holds for the engine's later jobs.  Results are those of any other
    engine: tasks come back in order."""

    def __init__(self, cores: int | None = None):
        self.cores = usable_cores() if cores is None else max(1, int(cores))
        self.workers = self.cores
        self._inner: Engine | None = None

    def size(self, tasks: int) -> int:
        """Decide the processes for a job of ``tasks`` tasks (first call only); their number."""
        if self._inner is None:
            n = max(1, min(self.cores, int(tasks)))
            self._inner = ProcessEngine(n) if n > 1 else SerialEngine()
            self.workers = n
        return self.workers

    def map(self, func, tasks):
        """Apply ``func`` to every task on the engine chosen by :meth:`size`, in order."""
        if self._inner is None:
            tasks = list(tasks)
            self.size(len(tasks))
        yield from self._inner.map(func, tasks)

    def close(self, abort: bool = False) -> None:
        """Shut the worker pool down, if one was started (``abort``: see :meth:`ProcessEngine.close`)."""
        if self._inner is not None:
            self._inner.close(abort)

    def describe(self) -> str:
        """The engine chosen (or still to be chosen) and ``auto``."""
        inner = "undecided" if self._inner is None else self._inner.describe()
        return f"{inner} (--workers auto, {self.cores} usable core{'s' if self.cores != 1 else ''})"


class DaskEngine(Engine):
    """A Dask distributed cluster reached at ``address`` (``tcp://host:port``)."""

    def __init__(self, address: str, timeout: float = 10.0):
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - depends on installed extras
            raise EngineError('--scheduler needs the dask extra: pip install "exosim[dask]"') from None
        self.address = address
        try:
            self._client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise EngineError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
        # every worker must compute what this process would: same exosim, same numba
        self.worker_versions = self._client.run(_versions)
        self.workers = max(1, len(self.worker_versions))
        #: tasks the scheduler restarted because their worker died, and workers lost since the start
        self.retried_tasks = 0
        self.lost_workers = 0
        here = _versions()
        for worker, theirs in self.worker_versions.items():
            if theirs != here:
                self._client.close()
                raise EngineError(
                    f"Dask worker {worker} runs exosim {theirs['exosim']} / numba {theirs['numba']}, this process "
                    f"exosim {here['exosim']} / numba {here['numba']}: install the same versions on every worker"
                )

    def map(self, func, tasks):
        """Submit all tasks; gather results in task order; count restarts and lost workers."""
        futures = self._client.map(func, list(tasks), pure=False)
        try:
            for fut in futures:
                yield fut.result()
        finally:  # while the futures are held, the scheduler still knows their tasks
            self._count_losses([f.key for f in futures])

    def _count_losses(self, keys: list) -> None:
        try:
            self.retried_tasks += int(self._client.run_on_scheduler(_restarted, keys=keys))
            alive = len(self._client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001 - a closed or unreachable scheduler: nothing to count
            return
        self.lost_workers = max(self.lost_workers, len(self.worker_versions) - alive)

    def close(self, abort: bool = False) -> None:
        """Close the client connection (the cluster keeps running; its tasks of this client are
        released with it)."""
        self._client.close()

    def describe(self) -> str:
        """Engine and scheduler address."""
        return f"DaskEngine(scheduler={self.address!r}, workers={self.workers})"

    def record(self) -> dict:
        """Engine, scheduler, workers and their (checked) versions."""
        return {
            "engine": "DaskEngine",
            "scheduler": self.address,
            "workers": self.workers,
            "worker_versions": self.worker_versions,
            "retried_tasks": self.retried_tasks,
            "lost_workers": self.lost_workers,
        }


def _restarted(dask_scheduler, keys: list) -> int:
    """Times the scheduler had to restart these tasks because their worker died (run on it)."""
    return sum(dask_scheduler.tasks[k].suspicious for k in keys if k in dask_scheduler.tasks)


def _versions() -> dict:
    """exosim and numba versions of this process (run on every Dask worker)."""
    from importlib.metadata import PackageNotFoundError, version

    from exosim._version import __version__

    try:
        numba = version("numba")
    except PackageNotFoundError:
        numba = None
    return {"exosim": __version__, "numba": numba}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_workers(text: str) -> int | None:
    """``--workers``: a positive integer, or ``auto`` (None: one per usable core); ValueError otherwise."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def make_engine(workers: int | str | None = 1, scheduler: str | None = None) -> Engine:
    """The engine for the CLI options ``--workers`` / ``--scheduler`` (``workers`` None or
    ``"auto"``: :class:`AutoEngine`)."""
    if scheduler:
        return DaskEngine(scheduler)
    if workers is None or (isinstance(workers, str) and parse_workers(workers) is None):
        return AutoEngine()
    if isinstance(workers, str):
        workers = parse_workers(workers)
    if workers and workers > 1:
        return ProcessEngine(workers)
    return SerialEngine()
