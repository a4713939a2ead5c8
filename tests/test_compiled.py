"""The compiled (numba) backend: same method, same answers, same failure policy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import exosim
from conftest import SCENARIOS
from exosim.simulate.dopri5_numba import integrate_compiled
from exosim.simulate.solver import SolverOptions

pytest.importorskip("numba", reason="the test extra installs numba; this guards plain installs")


def test_compiled_model_matches_solve_ivp_at_tight_tolerance(model):
    n = 5
    p = np.tile(model.default_parameters(), (n, 1))
    p[:, model.parameter_index["donors__mir_22_copies_per_particle"]] = np.linspace(0.01, 10, n)
    p[:, model.parameter_index["recipients__internalisation_rate"]] *= np.logspace(-1, 1, n)
    y0 = model.initial_state(p)
    y0[:, model.state_index["donors__dsb"]] += 35 * np.linspace(0, 8, n)
    y0[:, model.state_index["recipients__dsb"]] += 35 * np.linspace(8, 0, n)
    scale = np.array([s.scale for s in model.states])
    t_eval = np.array([1.0, 10.0, 72.0])
    sol = integrate_compiled(
        model, 0.0, 72.0, y0, p, atol_scale=scale, t_eval=t_eval, options=SolverOptions(rtol=1e-10, atol=1e-13)
    )
    assert np.all(sol.status == 0) and sol.member_steps.min() > 0
    for i in range(n):
        ref = solve_ivp(
            lambda t, y, i=i: model.rhs(t, y[None], p[i : i + 1])[0],
            (0.0, 72.0),
            y0[i],
            t_eval=t_eval,
            method="DOP853",
            rtol=1e-12,
            atol=1e-15 * scale,
        )
        for j in range(t_eval.size):
            err = np.abs(sol.ys[i, j] - ref.y[:, j]) / (1e-7 * np.abs(ref.y[:, j]) + 1e-9 * scale)
            assert err.max() <= 1.0, (t_eval[j], model.state_names[err.argmax()], err.max())
        np.testing.assert_array_equal(sol.y[i], sol.ys[i, -1])


def test_compiled_failure_is_per_member(model):
    p = np.tile(model.default_parameters(), (3, 1))
    p[1, model.parameter_index["recipients__repair_half_time"]] = np.nan
    y0 = model.initial_state(p)
    y0[:, model.state_index["recipients__dsb"]] = 70.0
    scale = np.array([s.scale for s in model.states])
    sol = integrate_compiled(model, 0.0, 24.0, y0, p, atol_scale=scale)
    assert list(sol.status) == [0, 1, 0]
    assert "non-finite" in sol.message[1] and sol.t_failed[1] == 0.0
    assert np.all(np.isfinite(sol.y[[0, 2]])) and np.all(np.isnan(sol.y[1]))
    few = integrate_compiled(model, 0.0, 24.0, y0[[0]], p[[0]], atol_scale=scale, options=SolverOptions(max_steps=3))
    assert few.status[0] == 1 and "more than 3 steps" in few.message[0]


@pytest.mark.parametrize("name", ["hnscc_exosome_radioresistance", "iccm_bystander_medium_transfer"])
def test_scenario_gives_the_same_result_with_either_backend(name, runs):
    ref = runs(name)
    sc = ref.scenario

    def with_solver(**kw):
        return exosim.compile_scenario(sc.model_copy(update={"solver": sc.solver.model_copy(update=kw)})).run()

    fast = with_solver(backend="numba")
    tight = with_solver(backend="numba", rtol=1e-11, atol=1e-13)
    assert fast.timing["backend"] == "numba" and np.all(fast.status == 0)
    # the tight run is the reference: both backends at the scenario's tolerance are close to it
    scale = np.array([s.scale for s in ref.model.states])
    for run in (ref, fast):
        np.testing.assert_allclose(run.surviving_fraction, tight.surviving_fraction, rtol=1e-6)
        dev = np.abs(run.states - tight.states) / (1e-3 * np.abs(tight.states) + 1e-4 * scale)
        assert np.nanmax(dev) <= 1.0
    # and the numpy tight run agrees with the compiled tight run
    np.testing.assert_allclose(
        with_solver(rtol=1e-10, atol=1e-12).surviving_fraction, tight.surviving_fraction, rtol=1e-8
    )


def test_missing_numba_gives_a_clear_message(monkeypatch):
    from exosim.simulate import solver

    monkeypatch.setattr(solver, "numba_available", lambda: False)
    with pytest.raises(ValueError, match=r"exosim\[fast\]"):
        solver.resolve_backend("numba")
    assert solver.resolve_backend("auto") == "numpy"
    with pytest.raises(ValueError, match=r"exosim\[fast\]"):
        solver.get_solver("numba")


def test_an_installed_numba_that_does_not_import_falls_back_with_a_warning(monkeypatch):
    """numba installed but refusing to import (a numpy newer than it supports): ``auto`` uses numpy
    with a one-line warning naming the error, ``numba`` is refused with it (it was a traceback)."""
    from exosim.simulate import solver

    monkeypatch.setattr(solver, "_NUMBA_PROBLEM", ["ImportError: Numba needs NumPy 2.3 or less"])
    with pytest.warns(UserWarning, match="numba is installed but does not import .*NumPy 2.3.*numpy backend"):
        assert solver.resolve_backend("auto") == "numpy"
    with pytest.raises(ValueError, match=r"exosim\[fast\]\" \(it is installed but does not import: ImportError"):
        solver.resolve_backend("numba")
    monkeypatch.setattr(solver, "_NUMBA_PROBLEM", [])  # checked afresh: here numba imports
    assert solver.numba_problem() is None and solver.resolve_backend("auto") == "numba"


def test_scenario_file_selects_the_backend(tmp_path):
    import yaml

    path = SCENARIOS / "mir22_exosome_radiosensitisation.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("solver", {})["backend"] = "fortran"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(exosim.ScenarioError, match="solver.backend"):
        exosim.load_scenario(bad)


def _python(code: str, hash_seed: str, *args: str, env: dict | None = None) -> str:
    """The standard output of ``code`` run by a new Python process with the hash seed ``hash_seed``
    (and command-line arguments ``args``, environment variables ``env``)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **(env or {}), "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_generated_kernel_source_is_the_same_in_every_process():
    """The numba disk cache is keyed by the kernel's source: it must not depend on the hash
    seed of the process (set iteration), or every new process and Dask worker recompiles."""

    code = (
        "import hashlib, exosim;"
        "from exosim.simulate.dopri5_numba import module_source;"
        f"c = exosim.compile_scenario(exosim.load_scenario(r'{SCENARIOS / 'iccm_bystander_medium_transfer.yaml'}'));"
        "print(hashlib.sha256(module_source(c.model).encode()).hexdigest())"
    )
    digests = {_python(code, seed).strip() for seed in ("1", "2", "3")}
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_a_fresh_process_compiles_nothing_when_the_kernel_is_cached():
    """With the kernel in the disk cache, a new process (another hash seed) loads it and compiles
    nothing at all: no cache miss, and no code lifted out of nopython mode (an ``objmode`` clock
    was compiled again, uncached, at every process's first call).  It reads the cached code
    without numba's compiler set-up (its registries, e.g. ``numba.np.arraymath``, never
    imported), and integrates to the same numbers as a process that took numba's own way."""

    code = (
        "import sys, exosim, numba.core.event as ev;"
        "from exosim.simulate import dopri5_numba as dn;"
        "sys.argv[1:] and setattr(dn, '_load_cached', lambda fn, args: False);"
        f"c = exosim.compile_scenario(exosim.load_scenario(r'{SCENARIOS / 'iccm_bystander_medium_transfer.yaml'}'));"
        "p = c.parameters[:1];"
        "rec = ev.RecordingListener(); ev.register('numba:compile', rec);"
        "sol = dn.integrate_compiled(c.model, 0.0, 1.0, c.model.initial_state(p), p);"
        "print(sum(1 for _, e in rec.buffer if e.is_start), int(sol.status[0]),"
        " 'numba.np.arraymath' in sys.modules, sol.y.tobytes().hex())"
    )
    counts = [_python(code, seed).split() for seed in ("4", "5")]  # the first fills the cache if it is empty
    assert counts[1][:3] == ["0", "0", "False"], counts  # nothing compiled; integrated (status 0: ok)
    numbas_way = _python(code, "6", "numba").split()
    assert numbas_way[:3] == ["0", "0", "True"] and numbas_way[3] == counts[1][3]


def test_code_read_from_the_cache_without_numbas_set_up_serves_callers_compiled_later(tmp_path):
    """A function whose machine code ``_load_cached`` read from the disk cache is registered as
    numba's own cache hit registers it: a jitted function compiled afterwards can call it."""
    pytest.importorskip("numba")
    (tmp_path / "kmod.py").write_text("import numba\n@numba.njit(cache=True)\ndef f(x):\n    return x.sum() * 2.0\n")
    code = (
        "import sys, numpy as np, numba;"
        f"sys.path.insert(0, r'{tmp_path}');"
        "import kmod;"
        "from exosim.simulate.dopri5_numba import _load_cached;"
        "x = np.arange(4.0);"
        "loaded = sys.argv[1:] == ['fast'] and _load_cached(kmod.f, (x,));"
        "g = numba.njit(lambda x: kmod.f(x) + 1.0);"
        "print(loaded, kmod.f(x), g(x))"
    )
    env_cache = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    assert _python(code, "1", "fill", env=env_cache).split() == ["False", "12.0", "13.0"]
    assert _python(code, "2", "fast", env=env_cache).split() == ["True", "12.0", "13.0"]


def test_a_kernel_with_code_does_not_wait_for_numbas_compiler_lock():
    """Every call of a kernel asks for its cached code first; a kernel that has code returns at
    once, even while another thread holds numba's compiler lock (compiling another kernel)."""
    import threading
    import types

    pytest.importorskip("numba")
    from numba.core.compiler_lock import global_compiler_lock

    from exosim.simulate import dopri5_numba as dn

    held, release = threading.Event(), threading.Event()

    def hold():
        with global_compiler_lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    got = []
    caller = threading.Thread(target=lambda: got.append(dn._load_cached(types.SimpleNamespace(overloads={1: 1}), ())))
    caller.start()
    caller.join(5)  # returns in microseconds unless it waits for the lock (30 s)
    finished = not caller.is_alive()
    release.set()
    holder.join()
    caller.join()
    assert finished and got == [True]


def test_the_kernels_clock_is_read_natively_and_agrees_with_pythons():
    """The kernels read CLOCK_MONOTONIC through the C library (no objmode), the clock of the
    deadline that ``max_seconds`` sets."""
    import time

    numba = pytest.importorskip("numba")
    from exosim.simulate import clock
    from exosim.simulate.dopri5_numba import module_source

    assert clock.NATIVE == hasattr(time, "clock_gettime")
    model = exosim.compile_scenario(exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml")).model
    assert ("objmode" in module_source(model)) is not clock.NATIVE

    if not clock.NATIVE:  # Windows: Python's clock through objmode, checked above
        return

    @numba.njit
    def read():
        return clock.monotonic()

    before = clock.now()
    assert before <= read() <= clock.now() < before + 5.0


def test_the_kernel_cache_is_pruned_least_recently_used_first(tmp_path):
    """A new kernel prunes the cache to its bound: the kernels used longest ago go first (source
    and numba's files together, also numba's files whose source is gone), and none used within
    the last hour (another process may be loading it)."""
    import os
    import time

    from exosim.simulate.dopri5_numba import prune_cache

    cache = tmp_path / "kernels"
    (cache / "__pycache__").mkdir(parents=True)
    now = time.time()
    ages = {"old": 30 * 86400, "mid": 3 * 86400, "recent": 600, "orphan": 10 * 86400}
    for name, age in ages.items():
        files = [cache / "__pycache__" / f"exosim_kernel_{name}.integrate-1.py311.nbi"]
        files.append(cache / "__pycache__" / f"exosim_kernel_{name}.integrate-1.py311.1.nbc")
        if name != "orphan":
            files.append(cache / f"exosim_kernel_{name}.py")
        for f in files:
            f.write_bytes(b"x" * 1000)
            os.utime(f, (now - age, now - age))
    (cache / "unrelated.txt").write_text("kept")
    total = 11 * 1000
    assert prune_cache(cache, limit=total) == []  # within the bound: nothing goes
    assert prune_cache(cache, limit=total - 1) == ["old"]  # the least recently used first
    assert not list(cache.rglob("exosim_kernel_old*"))
    assert prune_cache(cache, limit=3000) == ["orphan", "mid"]  # numba's files alone: dated by them
    assert prune_cache(cache, limit=0) == []  # used ten minutes ago: kept although over the bound
    assert sorted(f.name for f in cache.rglob("*") if f.is_file()) == sorted(
        ["exosim_kernel_recent.py", "exosim_kernel_recent.integrate-1.py311.nbi"]
        + ["exosim_kernel_recent.integrate-1.py311.1.nbc", "unrelated.txt"]
    )


def test_loading_a_kernel_marks_it_used_and_a_new_one_prunes_the_cache(tmp_path, monkeypatch):
    """The kernel's source file is touched at each load in a new process (its last use), and
    writing a new kernel prunes the cache to ``EXOSIM_CACHE_MAX_MB``."""
    import os

    from exosim.simulate import dopri5_numba as dn

    monkeypatch.setenv("EXOSIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("EXOSIM_CACHE_MAX_MB", "0")
    stale = tmp_path / "kernels" / "exosim_kernel_stale.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# an old kernel")
    os.utime(stale, (1e9, 1e9))
    model = exosim.compile_scenario(exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml")).model
    source = dn.module_source(model)
    monkeypatch.setattr(dn, "_loaded", {})  # as in a new process
    monkeypatch.setattr(dn, "_by_model", {})
    monkeypatch.setattr(dn, "module_source", lambda m, method="dopri5", frozen=(): source)
    monkeypatch.setattr(dn.importlib.util, "spec_from_file_location", _no_import)
    with pytest.raises(_Imported) as first:
        dn._module_for(model)
    assert not stale.exists()  # the new kernel pruned the cache (bound 0: every kernel not in use)
    path = first.value.path
    os.utime(path, (1e9, 1e9))
    with pytest.raises(_Imported):
        dn._module_for(model)
    assert path.stat().st_mtime > 1e9 + 86400  # loaded again: touched


class _Imported(Exception):
    def __init__(self, path):
        self.path = path


def _no_import(name, path):
    raise _Imported(path)  # stop before numba compiles: the file handling is what is tested


def test_damaged_cache_files_are_removed_and_the_kernel_compiled_again(tmp_path, monkeypatch):
    """numba raises when its cache files are damaged (a truncated pickle after a full disk): the
    kernel's first call then removes them, warns in one line and loads the kernel again, instead
    of a traceback.  Other errors pass through.  (The real case, a truncated ``.nbc``, was checked
    from a shell: one warning, then the run; numba's recompile is too slow for the suite.)"""
    import pickle
    import types

    from exosim.simulate import dopri5_numba as dn

    numba_file = tmp_path / "numba" / "core" / "caching.py"  # where numba's cache loader raises
    numba_file.parent.mkdir(parents=True)
    numba_file.write_text("import pickle\ndef load():\n    return pickle.loads(b'\\x80\\x04\\x95')\n")
    raising = {}
    exec(compile(numba_file.read_text(), str(numba_file), "exec"), raising)
    (tmp_path / "__pycache__").mkdir()
    damaged = tmp_path / "__pycache__" / "exosim_kernel_abc.integrate-1.py311.nbi"
    damaged.write_bytes(b"junk")

    def kernel_module(fn):
        module = types.ModuleType("exosim_kernel_abc")
        module.__file__ = str(tmp_path / "exosim_kernel_abc.py")
        fn.py_func = types.SimpleNamespace(__module__=module.__name__)
        module.integrate = fn
        return module

    bad = kernel_module(lambda *args: raising["load"]())
    good = kernel_module(lambda *args: ("integrated", args))
    modules = [bad, good]
    monkeypatch.setattr(dn, "_module_for", lambda model, method="dopri5", frozen=(): modules[0])
    monkeypatch.setitem(dn.sys.modules, "exosim_kernel_abc", bad)

    def forget(module):
        modules.pop(0)
        real_forget(module)

    real_forget = dn._forget
    monkeypatch.setattr(dn, "_forget", forget)
    kernel = dn.kernel_for(object())
    with pytest.warns(RuntimeWarning, match="cache files .* could not be read .*UnpicklingError.*compiled again"):
        assert kernel(1, 2) == ("integrated", (1, 2))
    assert not damaged.exists() and "exosim_kernel_abc" not in dn.sys.modules
    with pytest.raises(pickle.UnpicklingError):  # an error that is not numba reading its cache: raised
        dn._Guarded.__call__(types.SimpleNamespace(fn=lambda: pickle.loads(b"\x80\x04\x95")))


def test_an_unwritable_kernel_cache_falls_back_to_a_private_folder(tmp_path, monkeypatch):
    """EXOSIM_CACHE_DIR not writable (here: under a file): the kernels go to this user's folder in
    the temporary folder, made private (0700); if that folder is someone else's or writable by
    others (a planted cache would be unpickled), to a new private folder for this process; and if
    nothing can be written, one message (OutputError: exit 2 in the CLI)."""
    import os
    import stat

    from exosim.simulate import dopri5_numba as dn
    from exosim.util.atomic import OutputError

    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("EXOSIM_CACHE_DIR", str(afile / "sub"))
    monkeypatch.setattr(dn.tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(dn, "_SESSION_DIR", [])
    (tmp_path / "tmp").mkdir()
    user = tmp_path / "tmp" / f"exosim-kernels-{os.getuid()}"
    assert dn._cache_dir() == user and stat.S_IMODE(user.stat().st_mode) == 0o700
    user.chmod(0o777)  # writable by others: not used
    session = dn._cache_dir()
    assert session != user and session.parent == tmp_path / "tmp" and stat.S_IMODE(session.stat().st_mode) == 0o700
    assert dn._cache_dir() == session  # one folder per process
    monkeypatch.setattr(dn, "_SESSION_DIR", [])
    monkeypatch.setattr(dn.tempfile, "tempdir", str(afile / "tmp"))  # no temporary folder either
    with pytest.raises(OutputError, match="no folder to write compiled kernels in.*EXOSIM_CACHE_DIR"):
        dn._cache_dir()


@pytest.mark.parametrize("text", ["abc", "-1", "nan", "inf"])
def test_a_bad_cache_bound_is_noted_and_the_default_kept(monkeypatch, text):
    from exosim.simulate import dopri5_numba as dn

    monkeypatch.setenv("EXOSIM_CACHE_MAX_MB", text)
    with pytest.warns(UserWarning, match=f"EXOSIM_CACHE_MAX_MB: expected a size in MB .*got '{text}'"):
        assert dn.cache_limit_bytes() == dn.CACHE_MAX_MB * 2**20
    monkeypatch.setenv("EXOSIM_CACHE_MAX_MB", "0.5")
    assert dn.cache_limit_bytes() == 0.5 * 2**20
