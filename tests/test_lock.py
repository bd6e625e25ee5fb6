"""The install lock agrees with pyproject.toml, and `make install` uses it.

If one of these fails after an edit of pyproject.toml's dependencies, run `make lock`, then
`make test`, and commit requirements/ with the change.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"


def _load_lock_script():
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) for every `name==version` entry of a hashed requirements file."""
    text = path.read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if m:
            pins[canonicalize_name(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def _pyproject_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for group in data["project"].get("optional-dependencies", {}).values():
        reqs += group
    reqs += data["build-system"]["requires"]
    return [Requirement(r) for r in reqs]


def test_lock_digest_matches_pyproject():
    lock = _load_lock_script()
    first = (REQ / "lock.txt").read_text().splitlines()[0]
    assert first == lock.DIGEST_PREFIX + lock.pyproject_digest(), (
        "pyproject.toml's dependencies changed since requirements/lock.txt was written: run `make lock`")


def test_every_requirement_is_pinned_within_its_range():
    pins = _pins(REQ / "lock.txt")
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":  # installed by TORCH_SPEC; checked below
            continue
        assert name in pins, f"{req} is in pyproject.toml but not in requirements/lock.txt: run `make lock`"
        version, hashes = pins[name]
        assert req.specifier.contains(version, prereleases=True), f"lock pins {name}=={version}, outside {req}"
        assert hashes, f"{name} has no hash in the lock"


def test_every_pin_has_a_hash_and_torch_is_left_to_torch_spec():
    pins = _pins(REQ / "lock.txt")
    assert len(pins) > 50  # the whole tree, not just the direct dependencies
    assert all(hashes for _, hashes in pins.values())
    assert "torch" not in pins and not any(n.startswith("nvidia-") for n in pins), \
        "the lock must not carry torch or a CUDA stack: TORCH_SPEC picks the build"


def test_torch_spec_default_is_what_the_lock_was_resolved_against():
    spec = _load_lock_script().read_torch_spec()
    torch_req = next(r for r in _pyproject_requirements() if r.name == "torch")
    assert spec.startswith("torch=="), spec
    assert torch_req.specifier.contains(spec.removeprefix("torch=="))
    assert f"# resolved against {spec}" in (REQ / "lock.txt").read_text()


def test_data_packages_are_pinned_with_hashes():
    names = [ln.split("#")[0].strip() for ln in (REQ / "data.in").read_text().splitlines()]
    names = [canonicalize_name(n) for n in names if n]
    pins = _pins(REQ / "data.txt")
    assert sorted(names) == sorted(pins), "requirements/data.in and data.txt disagree: run `make lock`"
    assert all(hashes for _, hashes in pins.values())


def test_make_install_uses_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/lock.txt" in makefile
    assert "--no-deps --require-hashes -r requirements/data.txt" in makefile
    assert "LOCKED     ?= 1" in makefile


def test_sliced_model_packages_are_locked_at_the_version_their_hash_was_measured_on():
    """tfamily.interop.packaged pins each sliced model's packages and sha256; the data lock must
    install exactly that version, or the joined file would be refused."""
    from tfamily.interop.packaged import SLICED_MODELS

    pins = _pins(REQ / "data.txt")
    for model in SLICED_MODELS.values():
        for dist in model.packages:
            assert pins.get(canonicalize_name(dist), ("not locked",))[0] == model.version, dist
