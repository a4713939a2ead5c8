"""Interruptions leave nothing half-written: stale outputs, signals, concurrent writers.

The signal tests start the command line in a real subprocess, wait until it has claimed its
output folder (the lock file) or staged its files, send SIGINT or SIGTERM and check the exit
code, the single line on stderr and that the folder holds nothing partial.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SCENARIOS, single_well
from exosim.cli import main
from exosim.util.atomic import (
    LOCK_NAME,
    OutputError,
    claim_output,
    output_claims,
    staged_outputs,
)

SLOW = str(SCENARIOS / "fractionated_course_exosome_buildup.yaml")  # a few seconds of simulation
FAST = str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml")  # well under a second


def staging(folder: Path) -> list[Path]:
    return sorted(folder.glob(".exosim-*"))


@pytest.fixture
def scenario_file(tmp_path) -> Path:
    f = tmp_path / "well.yaml"
    f.write_text(yaml.safe_dump(single_well(), sort_keys=False))
    return f


# -- stale outputs ----------------------------------------------------------------------------


def test_rerun_without_timecourses_removes_the_old_ones_and_keeps_other_files(tmp_path, scenario_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["run", str(scenario_file), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "notes.txt",
        "survival.csv",
        "summary.csv",
        "timecourses.csv",
        "provenance.json",
        "survival.png",
    }
    assert main(["run", str(scenario_file), "-o", str(out), "--no-timecourses", "--no-figure"]) == 0
    assert {p.name for p in out.iterdir()} == {"notes.txt", "survival.csv", "summary.csv", "provenance.json"}
    assert (out / "notes.txt").read_text() == "mine"
    assert "--no-timecourses" in (out / "provenance.json").read_text()
    capsys.readouterr()


def test_staged_commit_removes_only_declared_names_not_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.csv", "b.csv", "c.png", "user.txt"):
        (out / name).write_text("old")
    stage = staged_outputs(out, ["a.csv", "b.csv", "c.png"])
    with stage as tmp:
        (tmp / "a.csv").write_text("new")
    assert stage.written == [out / "a.csv"]
    assert stage.removed == [out / "b.csv", out / "c.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "user.txt"]
    assert (out / "a.csv").read_text() == "new" and (out / "user.txt").read_text() == "old"


def test_staged_commit_refuses_an_undeclared_file_and_moves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="not declared"):
        with staged_outputs(out, ["a.csv"]) as tmp:
            (tmp / "a.csv").write_text("new")
            (tmp / "surprise.csv").write_text("new")
    assert list(out.iterdir()) == []


def test_staged_outputs_without_names_replaces_only_what_it_writes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_text("old")
    with staged_outputs(out) as tmp:
        (tmp / "new.png").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.png", "old.png"]


def test_interrupt_inside_the_stage_moves_nothing_and_removes_the_staging_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(out, ["a.csv", "b.csv"]) as tmp:
            (tmp / "a.csv").write_text("new")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["a.csv"]
    assert (out / "a.csv").read_text() == "old"


def test_a_signal_handled_as_the_stage_ends_leaves_no_staging_folder(tmp_path, monkeypatch, capsys):
    """Python runs a signal's handler at the first instruction of the function it interrupts: a
    signal arriving as the staging block ends is handled at the start of its exit, before the exit
    defers signals, and the exit raises before its clean-up.  The command line removes such a
    staging folder on its way out: exit 130, one line, the folder as it was."""
    from exosim.util import atomic

    exit_block = atomic._Staged.__exit__

    def interrupted_exit(self, kind, exc, tb):
        raise KeyboardInterrupt  # what the handler raises there, before the block's own code

    monkeypatch.setattr(atomic._Staged, "__exit__", interrupted_exit)
    out = tmp_path / "out"
    out.mkdir()
    (out / "survival.csv").write_text("old")
    assert main(["run", FAST, "-o", str(out), "--no-figure"]) == 130
    assert capsys.readouterr().err == "exosim: interrupted\n"
    assert sorted(p.name for p in out.iterdir()) == ["survival.csv"] and (out / "survival.csv").read_text() == "old"
    monkeypatch.setattr(atomic._Staged, "__exit__", exit_block)
    assert main(["run", FAST, "-o", str(out), "--no-figure"]) == 0 and not staging(out)


# -- locks ------------------------------------------------------------------------------------


def hold_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the test
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def test_a_locked_folder_is_one_error_and_exit_2_before_the_run(tmp_path, capsys):
    out = tmp_path / "out"
    with hold_lock(out):
        start = time.perf_counter()
        assert main(["run", SLOW, "-o", str(out)]) == 2
        elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert err == f"exosim: error: another exosim command is writing to {out}\n"
    assert elapsed < 2.5, elapsed  # refused before the simulation (several seconds)
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # the holder's file, nothing else


def test_a_writer_cannot_commit_while_another_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    with hold_lock(out):
        with pytest.raises(OutputError, match="another exosim command is writing to"):
            with staged_outputs(out, ["a.csv"]) as tmp:
                (tmp / "a.csv").write_text("new")
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def test_claims_lock_until_the_scope_ends_and_tidy_up(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError):
        claim_output(out)
    with output_claims():
        claim_output(out)
        assert (out / LOCK_NAME).exists()
        with staged_outputs(out, ["a.csv"]) as tmp:  # the claimant's own commit is not refused
            (tmp / "a.csv").write_text("x")
        assert (out / LOCK_NAME).exists()
        with open(out / LOCK_NAME) as other, pytest.raises(BlockingIOError):  # anyone else is refused
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert sorted(p.name for p in out.iterdir()) == ["a.csv"]  # lock file removed
    with output_claims():
        claim_output(tmp_path / "unused" / "deeper")
    assert not (tmp_path / "unused").exists()  # folders a claim created and nothing filled are removed


def test_bad_input_after_the_claim_leaves_no_empty_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sensitivity", FAST, "--method", "local", "--group", "no_such_group", "-o", str(out)]) == 2
    assert "no_such_group" in capsys.readouterr().err
    assert not out.exists()


# -- subprocesses: signals and a second writer -----------------------------------------------


def start(*args: str) -> subprocess.Popen:
    """The command line in a subprocess; SIGINT at its default (a background shell may ignore it)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    return subprocess.Popen(
        [sys.executable, "-m", "exosim.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the command never reached the awaited point"
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the test fails
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_a_run_cleans_up_and_exits(tmp_path, sig, code, line):
    out = tmp_path / "out"
    # the numpy backend: seconds of simulation, so the signal lands in the run under any load (the
    # cached compiled kernel can finish the course within the 0.3 s the test waits)
    proc = start("run", SLOW, "-o", str(out), "--backend", "numpy")
    try:
        wait_for(lambda: (out / LOCK_NAME).exists(), proc)  # folder claimed: the simulation is under way
        time.sleep(0.3)
        proc.send_signal(sig)
    finally:
        _, err = finish(proc)
    assert proc.returncode == code, err
    assert err == f"exosim: {line}\n"
    assert not out.exists()  # the folder it created is gone again: no lock, no staging, no outputs


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_figures_discards_every_staged_figure(tmp_path, sig, code, line):
    out = tmp_path / "figs"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "mir22_exosome_radiosensitisation.png").write_text("old figure")
    proc = start("figures", FAST, SLOW, "-o", str(out))
    try:
        # the first scenario's figure is drawn in the staging folder; the slow one is running
        wait_for(lambda: any(s.glob("*.png") for s in staging(out)), proc)
        proc.send_signal(sig)
    finally:
        _, err = finish(proc)
    assert proc.returncode == code, err
    assert err == f"exosim: {line}\n"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "mir22_exosome_radiosensitisation.png"]
    assert (out / "mir22_exosome_radiosensitisation.png").read_text() == "old figure"


def test_a_second_command_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    first = start("figures", SLOW, SLOW, "-o", str(out))
    try:
        wait_for(lambda: bool(staging(out)), first)
        second = start("run", FAST, "-o", str(out))
        _, err = finish(second)
        assert second.returncode == 2, err
        assert err == f"exosim: error: another exosim command is writing to {out}\n"
        assert first.poll() is None  # the first is still at work, undisturbed
        first.send_signal(signal.SIGTERM)
    finally:
        _, err = finish(first)
    assert first.returncode == 143, err
    assert not out.exists()


# -- a signal whose exception a C callback drops -------------------------------------------------


@pytest.mark.parametrize(
    ("exc_name", "code", "line"), [("Terminated", 143, "terminated"), ("KeyboardInterrupt", 130, "interrupted")]
)
def test_a_signal_whose_exception_was_dropped_still_ends_the_command(
    tmp_path, monkeypatch, capsys, exc_name, code, line
):
    """A handler that runs inside a C callback (numba compiling a kernel calls back into Python)
    raises into a frame that prints the exception and drops it: the command would go on and
    commit. The recorded signal ends it at the commit, with its exit code and nothing written."""
    import builtins

    from exosim import cli
    from exosim.io import figures
    from exosim.util import atomic

    exc = cli.Terminated if exc_name == "Terminated" else getattr(builtins, exc_name)
    drawn = figures.plot_survival

    def dropped(*args, **kwargs):
        drawn(*args, **kwargs)
        atomic.note_signal(exc)  # the handler ran; its exception never reached this frame

    monkeypatch.setattr(figures, "plot_survival", dropped)
    out = tmp_path / "out"
    assert main(["run", FAST, "-o", str(out)]) == code
    assert capsys.readouterr().err.strip().endswith(f"exosim: {line}")
    assert not out.exists() or not [p for p in out.iterdir() if p.name != LOCK_NAME]
    # the record does not outlive its command
    monkeypatch.undo()
    assert main(["run", FAST, "-o", str(out)]) == 0


@pytest.mark.parametrize(
    ("exc_name", "code", "line"), [("Terminated", 143, "terminated"), ("KeyboardInterrupt", 130, "interrupted")]
)
def test_a_dropped_signal_exception_is_not_printed_as_an_error(tmp_path, monkeypatch, capsys, exc_name, code, line):
    """Python reports an exception raised in a callback it cannot propagate from (a fork handler
    of a worker pool, a finaliser) through ``sys.unraisablehook`` as 'Exception ignored in ...'
    with a traceback. For a recorded signal that is noise: the command ends with its one line."""
    import builtins
    import types

    from exosim import cli
    from exosim.io import figures
    from exosim.util import atomic

    exc = cli.Terminated if exc_name == "Terminated" else getattr(builtins, exc_name)
    drawn = figures.plot_survival

    def dropped(*args, **kwargs):
        drawn(*args, **kwargs)
        atomic.note_signal(exc)
        info = types.SimpleNamespace(
            exc_type=exc, exc_value=exc(), exc_traceback=None, err_msg="Exception ignored in", object=None
        )
        sys.unraisablehook(info)  # what Python does with the handler's exception in such a callback
        other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError(), exc_traceback=None, object=None)
        sys.unraisablehook(other)  # any other dropped exception is still reported

    monkeypatch.setattr(figures, "plot_survival", dropped)
    reported = []  # the hook in place before the command (Python's prints the traceback)
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    assert main(["run", FAST, "-o", str(tmp_path / "out")]) == code
    assert capsys.readouterr().err == f"exosim: {line}\n"
    # the recorded signal's exception was not handed on to be printed; the other one was
    assert [type(r.exc_value) for r in reported] == [ValueError]
    assert sys.unraisablehook == reported.append  # and the command's hook is gone with it


@pytest.mark.parametrize(
    ("exc_name", "code", "line"), [("Terminated", 143, "terminated"), ("KeyboardInterrupt", 130, "interrupted")]
)
def test_a_signal_inside_compiled_code_ends_the_command_with_its_code(
    tmp_path, monkeypatch, capsys, exc_name, code, line
):
    """A signal's exception raised inside numba's compiled code surfaces as SystemError ("returned
    a result with an exception set"); the recorded signal decides: its exit code and one line, no
    traceback, nothing written."""
    import builtins

    from exosim import cli
    from exosim.scenario import runner
    from exosim.util import atomic

    exc = cli.Terminated if exc_name == "Terminated" else getattr(builtins, exc_name)

    def interrupted(self, **kwargs):
        atomic.note_signal(exc)
        raise SystemError("<built-in method clock> returned a result with an exception set")

    monkeypatch.setattr(runner.CompiledScenario, "run", interrupted)
    out = tmp_path / "out"
    assert main(["run", FAST, "-o", str(out)]) == code
    assert capsys.readouterr().err.strip() == f"exosim: {line}"
    assert not out.exists() or not [p for p in out.iterdir() if p.name != LOCK_NAME]
    assert not atomic.pending_signal()


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_after_the_command_has_ended_is_one_line_and_its_code(tmp_path, sig, code, line):
    """The ``exosim`` command (``cli.entry``): a signal while the interpreter shuts down, after the
    outputs are complete, ends the process with one line and the signal's code (it had died
    silently, or with a traceback from an exit hook).  An exit hook sends the signal, so it lands
    after the command, deterministically."""
    out = tmp_path / "out"
    code_text = (
        "import atexit, os, signal, sys, time;"
        f"atexit.register(lambda: (os.kill(os.getpid(), {int(sig)}), time.sleep(5)));"
        f"sys.argv = ['exosim', 'run', {FAST!r}, '-o', {str(out)!r}, '--no-figure', '--no-timecourses'];"
        "from exosim import cli; cli.entry()"
    )
    proc = subprocess.run([sys.executable, "-c", code_text], capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == f"exosim: {line} (after the command had ended: its outputs are complete)\n"
    assert "wrote" in proc.stdout and (out / "survival.csv").is_file() and not staging(out)
