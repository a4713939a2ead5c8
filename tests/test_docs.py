"""Documentation that cannot rot: every fenced code block of README.md and docs/**/*.md runs.

Each block is its own test (id ``<file>#<block index>-<language>``, the index counting every
fenced block of the file).  All blocks run in a fresh temporary working directory in which the
repository's ``scenarios``, ``examples``, ``models`` and ``evidence`` are reachable under the same relative
paths: the directories are recreated there and their files are symlinked, so relative paths in
the docs work and outputs (written atomically, replacing a link rather than writing through it)
land in the temporary directory, never in the repository.

Rules:

* ```` ```python ```` blocks run with :func:`exec` in a fresh namespace.
* ```` ```bash ```` blocks: lines ending in a backslash are joined; ``#`` comments (whole-line or
  trailing) are ignored; ``;`` and ``&&`` separate commands.  Every ``exosim ...`` command runs
  through ``exosim.cli.main(shlex.split(...)[1:])`` and must return exit code 0, with
  ``EXOSIM_SENSITIVITY_MAX_N=8`` so Sobol examples stay fast.  Globs are expanded in the
  temporary directory as the shell would.  Commands starting with ``pip``, ``python -m pip``
  (installation), ``python benchmarks/`` (benchmarks) or ``python -m pytest`` (the test suite)
  are not run.  Any other command fails the test: a bash block in the docs may show only what
  this test can check.
* A line with a placeholder is a usage synopsis, not an example, and is skipped: a word that is
  UPPER_CASE (``SCENARIO.yaml``, ``DATA.csv``, ``FILE.xml``, ``OUTDIR``, ``KEY``, ``D``; regex
  ``^[A-Z][A-Z0-9_]*(\\.[a-z]+)?$``) or contains ``[`` (``[-o OUTDIR]``, ``KEY[,KEY]``, ``[...]``).
* ``exosim figures`` and ``exosim delivery`` run every scenario they are given (slow): there
  every glob keeps only its first two matches in alphabetical order; explicitly named files are
  kept (``exosim validate`` globs are expanded in full: validating is fast).
* Blocks in other languages (yaml, text, none, ...) are not executed.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINKED = ("scenarios", "examples", "models", "evidence")

PYTHON = {"python", "py", "python3"}
BASH = {"bash", "sh", "shell", "console"}
IGNORED_PREFIXES = (("pip",), ("python", "-m", "pip"), ("python", "-m", "pytest"))
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$")
FENCE = re.compile(r"^(?P<indent>\s{0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
FIGURES_PER_GLOB = 2


@dataclass(frozen=True)
class Block:
    file: Path
    index: int  # position among all fenced blocks of the file
    language: str
    code: str
    line: int  # line of the opening fence

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(ROOT)}#{self.index}-{self.language or 'none'}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a markdown file, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, language = m.group("fence"), (m.group("info").split() or [""])[0].lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s{{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path}:{start + 1}: unclosed code fence"
        blocks.append(Block(path, len(blocks), language, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))] if DOCS.is_dir() else [README]


def executable_blocks() -> list[Block]:
    return [b for f in doc_files() for b in fenced_blocks(f) if b.language in PYTHON | BASH]


# -- bash blocks ----------------------------------------------------------------------------


def logical_lines(code: str) -> list[str]:
    """Lines of a shell block with backslash continuations joined."""
    out, current = [], ""
    for raw in code.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        out.append(current + raw)
        current = ""
    if current.strip():
        out.append(current)
    return [line.strip() for line in out if line.strip()]


def tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def is_placeholder(word: str) -> bool:
    return bool(PLACEHOLDER.match(word)) or "[" in word


def commands(line: str) -> list[list[str]]:
    """The commands of one logical line, split at ``;`` and ``&&``."""
    out: list[list[str]] = [[]]
    for tok in tokens(line):
        if tok in (";", "&&"):
            out.append([])
        elif tok and set(tok) <= set(";&|<>()"):
            raise AssertionError(f"unsupported shell operator {tok!r} in {line!r}")
        else:
            out[-1].append(tok)
    return [c for c in out if c]


def not_run(cmd: list[str]) -> bool:
    """An installation, benchmark or test-suite command: shown in the docs, not run here."""
    return any(tuple(cmd[: len(p)]) == p for p in IGNORED_PREFIXES) or (
        cmd[0] == "python" and len(cmd) > 1 and cmd[1].startswith("benchmarks/")
    )


def plan_bash(code: str) -> list[tuple[str, list[str] | None, str]]:
    """(line, exosim argv or None, reason) for every logical line of a bash block."""
    plan = []
    for line in logical_lines(code):
        if line.startswith("#"):
            continue
        cmds = commands(line)
        if all(map(not_run, cmds)):
            plan.append((line, None, "install, benchmark or test command"))
            continue
        if any(is_placeholder(w) for w in tokens(line)):
            plan.append((line, None, "synopsis"))
            continue
        for cmd in cmds:
            if cmd[0] == "exosim":
                plan.append((line, cmd, "run"))
            elif not_run(cmd):
                plan.append((line, None, "install, benchmark or test command"))
            else:
                raise AssertionError(
                    f"unsupported command in a bash block: {' '.join(cmd)!r} (line {line!r}); "
                    "docs bash blocks may show exosim commands, installation, benchmarks, tests"
                )
    return plan


def expand(argv: list[str]) -> list[str]:
    """Expand globs in the current directory; ``figures`` and ``delivery`` keep two matches per glob."""
    out = []
    for word in argv:
        if any(c in word for c in "*?"):
            matches = sorted(glob.glob(word))
            if argv[1:2] in (["figures"], ["delivery"]):
                matches = matches[:FIGURES_PER_GLOB]
            out.extend(matches or [word])
        else:
            out.append(word)
    return out


# -- the working directory ------------------------------------------------------------------


@pytest.fixture
def docs_workdir(tmp_path, monkeypatch):
    """A temporary working directory mirroring scenarios/, examples/ and models/ with symlinked files."""
    for top in LINKED:
        source = ROOT / top
        if not source.is_dir():
            continue
        for path in sorted(source.rglob("*")):
            target = tmp_path / path.relative_to(ROOT)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXOSIM_SENSITIVITY_MAX_N", "8")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def run_exosim(argv: list[str]) -> int:
    from exosim.cli import main

    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors and --help
        return exc.code if isinstance(exc.code, int) else 1


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("block", executable_blocks(), ids=lambda b: b.id)
def test_doc_code_block_runs(block, docs_workdir, capsys):
    where = f"{block.file.relative_to(ROOT)}:{block.line}"
    if block.language in PYTHON:
        exec(compile(block.code, where, "exec"), {"__name__": "__docs__"})  # noqa: S102 - the docs' own code
        return
    plan = plan_bash(block.code)  # raises on a command this test cannot check
    assert plan, f"{where}: empty bash block"
    for _line, argv, _reason in plan:
        if argv is None:
            continue
        argv = expand(argv)
        code = run_exosim(argv[1:])
        out = capsys.readouterr()
        assert code == 0, (
            f"{where}: {shlex.join(argv)} exited with {code}\nstdout:\n{out.out[-3000:]}\nstderr:\n{out.err[-3000:]}"
        )


def test_readme_has_code_blocks_that_run():
    blocks = [b for b in fenced_blocks(README) if b.language in PYTHON | BASH]
    assert blocks, "README.md has no python or bash code blocks"
    runnable = [argv for b in blocks if b.language in BASH for _, argv, _ in plan_bash(b.code) if argv]
    assert runnable or any(b.language in PYTHON for b in blocks), "README.md shows no exosim command that runs"


def test_the_rules_on_a_sample_document(tmp_path):
    doc = tmp_path / "sample.md"
    doc.write_text(
        "text\n\n```bash\n"
        "python -m pip install . && exosim run scenarios/a.yaml -o out\n"
        "# a comment line\n"
        "exosim run SCENARIO.yaml [-o OUTDIR]\n"
        "exosim fit scenarios/a.yaml data.csv \\\n"
        "    --params k --range k=0.3:30   # trailing comment\n"
        "exosim export SCENARIO.yaml -o member.xml ; exosim export-sbml -o models\n"
        "python benchmarks/bench_cli.py\n"
        "python -m pytest -q\n"
        'python -m pip install ".[test]" && python -m pytest -q\n'
        "```\n\n```yaml\nexosim: 1\n```\n\n~~~python\nx = 1\n~~~\n\n```\nplain\n```\n"
    )
    blocks = fenced_blocks(doc)
    assert [(b.index, b.language) for b in blocks] == [(0, "bash"), (1, "yaml"), (2, "python"), (3, "")]
    assert blocks[2].code == "x = 1\n"
    plan = plan_bash(blocks[0].code)
    assert [(argv, reason) for _, argv, reason in plan] == [
        (None, "install, benchmark or test command"),
        (["exosim", "run", "scenarios/a.yaml", "-o", "out"], "run"),
        (None, "synopsis"),
        (["exosim", "fit", "scenarios/a.yaml", "data.csv", "--params", "k", "--range", "k=0.3:30"], "run"),
        (None, "synopsis"),
        (None, "install, benchmark or test command"),
        (None, "install, benchmark or test command"),
        (None, "install, benchmark or test command"),
    ]
    with pytest.raises(AssertionError, match="unsupported command"):
        plan_bash("cd results\n")
    assert all(
        is_placeholder(w)
        for w in ["SCENARIO.yaml", "DATA.csv", "FILE.xml", "OUTDIR", "KEY", "D", "KEY[,KEY]", "[...]", "[-o"]
    )
    assert not any(is_placeholder(w) for w in ["scenarios/a.yaml", "-N", "1024", "Gy", "exosim", "--group"])


def test_figures_globs_keep_the_first_two_scenarios(docs_workdir):
    argv = expand(["exosim", "figures", "scenarios/*.yaml", "-o", "figures"])
    scenarios = sorted(glob.glob("scenarios/*.yaml"))
    assert argv == ["exosim", "figures", *scenarios[:FIGURES_PER_GLOB], "-o", "figures"]
    assert expand(["exosim", "validate", "scenarios/*.yaml"]) == ["exosim", "validate", *scenarios]
    assert os.path.islink(scenarios[0]) and not os.path.islink("scenarios")
