"""The forked drawer of `exosim run` (exosim.util.forked): a child prepares while the parent
works, runs one call, and whenever it cannot, the caller does the call itself with the same
result.  The figure it draws is the in-process figure byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import MappingProxyType

import pytest

from exosim.util.forked import ForkedCall

ROOT = Path(__file__).resolve().parents[1]
HNSCC = ROOT / "scenarios" / "hnscc_exosome_radioresistance.yaml"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2, reason="a child needs fork and two cores"
)


def _child_or_skip(**kw) -> ForkedCall:
    child = ForkedCall.start(lambda: None, **kw)
    if child is None and threading.active_count() > 1:
        pytest.skip("threads left running by an earlier test: no fork")
    assert child is not None
    return child


def _write(path: Path, text: str, mapping) -> None:
    path.write_text(f"{text} {dict(mapping)} {os.getpid()}")


def _fail() -> None:
    raise RuntimeError("the child fails")


class Unpicklable:
    """Holds a lambda: pickles only as a reference to the child's own copy (shared)."""

    def __init__(self):
        self.f = lambda: "from before the fork"


def _use_shared(path: Path, thing: Unpicklable) -> None:
    path.write_text(thing.f())


def test_the_child_runs_the_call_with_read_only_mappings_and_shared_objects(tmp_path):
    thing = Unpicklable()
    child = _child_or_skip(shared=(thing,))
    assert child.call(_write, tmp_path / "a.txt", "hello", MappingProxyType({"k": 1}))
    content = (tmp_path / "a.txt").read_text()
    assert content.startswith("hello {'k': 1} ") and int(content.split()[-1]) != os.getpid()  # by the child
    assert child.call(_write, tmp_path / "b.txt", "again", {}) is False  # one call only
    assert not (tmp_path / "b.txt").exists()
    other = _child_or_skip(shared=(thing,))
    assert other.call(_use_shared, tmp_path / "c.txt", thing)
    assert (tmp_path / "c.txt").read_text() == "from before the fork"


def test_a_failing_or_unpicklable_call_returns_false_and_the_child_is_reaped(tmp_path):
    child = _child_or_skip()
    assert child.call(_fail) is False and child.pid is None
    child = _child_or_skip()
    assert child.call(_use_shared, tmp_path / "d.txt", Unpicklable()) is False  # not shared: does not pickle
    assert child.pid is None and not (tmp_path / "d.txt").exists()
    child = _child_or_skip()
    pid = child.pid
    child.close()
    child.close()  # twice is fine
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left
    assert child.call(_write, tmp_path / "e.txt", "late", {}) is False


def test_no_child_in_a_process_that_runs_threads():
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert ForkedCall.start(lambda: None) is None
    finally:
        stop.set()
        worker.join()


def test_exosim_run_draws_the_in_process_figure_byte_for_byte(tmp_path):
    """The whole command (child drawing) against the figure drawn here without a child."""
    from exosim.io import figures
    from exosim.scenario.load import load_scenario
    from exosim.scenario.runner import run

    exe = Path(sys.executable).with_name("exosim")
    done = subprocess.run([str(exe), "run", str(HNSCC), "-o", str(tmp_path / "cli")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = run(load_scenario(HNSCC))
    figures.plot_survival(result, result.survival_rows(), tmp_path / "here.png")
    assert (tmp_path / "cli" / "survival.png").read_bytes() == (tmp_path / "here.png").read_bytes()


def test_the_drawer_is_used_and_a_failed_child_falls_back_to_drawing_here(tmp_path, monkeypatch):
    from exosim.io import outputs
    from exosim.scenario.load import load_scenario
    from exosim.scenario.runner import run

    result = run(load_scenario(HNSCC))
    calls = []

    class Drawer:
        def __init__(self, ok):
            self.ok = ok

        def call(self, func, *args, **kwargs):
            calls.append(func.__name__)
            return self.ok  # False: as if the child had failed; nothing drawn

        def close(self):
            calls.append("close")

    outputs.write_outputs(result, tmp_path / "a", drawer=Drawer(True))
    assert calls == ["plot_survival"] and not (tmp_path / "a" / "survival.png").exists()
    outputs.write_outputs(result, tmp_path / "b", drawer=Drawer(False))
    assert (tmp_path / "b" / "survival.png").stat().st_size > 0  # drawn here instead
    outputs.write_outputs(result, tmp_path / "c", figure=False, drawer=Drawer(True))
    assert calls[-1] == "close"
