"""The forked drawer of `exosim run` (exosim.util.forked): a child prepares while the parent
works, runs one call, and whenever it cannot, the caller does the call itself with the same
result.  The figure it draws is the in-process figure byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exosim.util.forked import ForkedCall

ROOT = Path(__file__).resolve().parents[1]
HNSCC = ROOT / "scenarios" / "hnscc_exosome_radioresistance.yaml"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2, reason="a child needs fork and two cores"
)


#: the unit checks run in a fresh interpreter: earlier tests of this session may leave threads
#: running (a Dask cluster, numba's pool), and a process with threads never forks a child
CHECKS = r"""
import os, sys
from pathlib import Path
from types import MappingProxyType
from exosim.util.forked import ForkedCall

tmp = Path(sys.argv[1])


def write(path, text, mapping):
    path.write_text(f"{text} {dict(mapping)} {os.getpid()}")


def fail():
    raise RuntimeError("the child fails")


class Unpicklable:  # holds a lambda: pickles only as a reference to the child's own copy (shared)
    def __init__(self):
        self.f = lambda: "from before the fork"


def use_shared(path, thing):
    path.write_text(thing.f())


thing = Unpicklable()
child = ForkedCall.start(lambda: None, shared=(thing,))
assert child.call(write, tmp / "a.txt", "hello", MappingProxyType({"k": 1}))
content = (tmp / "a.txt").read_text()
assert content.startswith("hello {'k': 1} ") and int(content.split()[-1]) != os.getpid()  # by the child
assert child.call(write, tmp / "b.txt", "again", {}) is False and not (tmp / "b.txt").exists()  # once only
other = ForkedCall.start(lambda: None, shared=(thing,))
assert other.call(use_shared, tmp / "c.txt", thing) and (tmp / "c.txt").read_text() == "from before the fork"

failing = ForkedCall.start(lambda: None)
assert failing.call(fail) is False and failing.pid is None
unshared = ForkedCall.start(lambda: None)
assert unshared.call(use_shared, tmp / "d.txt", Unpicklable()) is False  # not shared: does not pickle
assert unshared.pid is None and not (tmp / "d.txt").exists()
idle = ForkedCall.start(lambda: None)
pid = idle.pid
idle.close()
idle.close()  # twice is fine
try:
    os.waitpid(pid, os.WNOHANG)
    raise AssertionError("the child was not reaped")
except ChildProcessError:
    pass
assert idle.call(write, tmp / "e.txt", "late", {}) is False
print("checked")
"""


def test_the_child_runs_one_call_and_reports_every_failure_as_false(tmp_path):
    """Read-only mappings and shared objects reach the child; a failing or unpicklable call, a
    second call and a call after close give False; a closed child is reaped."""
    done = subprocess.run([sys.executable, "-c", CHECKS, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr


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

    spy = (  # the command as a user runs it, with a note of whether the child drew the figure
        "import sys\n"
        "from exosim.util.forked import ForkedCall\n"
        "call = ForkedCall.call\n"
        "def noted(self, *a, **k):\n"
        "    done = call(self, *a, **k)\n"
        "    print('child drew:', done, file=sys.stderr)\n"
        "    return done\n"
        "ForkedCall.call = noted\n"
        "from exosim.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", spy, "run", str(HNSCC), "-o", str(tmp_path / "cli")]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0 and "child drew: True" in done.stderr, done.stderr
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
