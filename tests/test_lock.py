"""requirements.lock: requirements.txt's ranges resolved to exact, hash-checked versions.

`make` installs the lock, so every machine runs the same OpenCV, ffmpeg, HDF5 and torch, whose
JPEG encoder, TV-L1 and file writers decide the stores' bytes; requirements.txt keeps the ranges
for people who install the package into an environment of their own.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def ranges() -> list[Requirement]:
    """The requirements of requirements.txt (comments and options left out)."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def lock() -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (pinned version, its sha256 hashes) of requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), [])
        elif current and (found := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(found.group(1))
    return pins


def test_the_lock_satisfies_every_range():
    pins = lock()
    for req in ranges():
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.txt asks for {req}, requirements.lock has no {name}: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name][0]}, outside requirements.txt's {req}: run `make lock`")


def test_every_pin_is_exact_and_hashed_and_the_file_names_no_machine():
    text = (REPO / "requirements.lock").read_text()
    pins = lock()
    assert len(pins) > len(ranges())  # the dependencies of the dependencies are pinned too
    assert all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]
    assert not re.search(r"^\s*-(e|-editable|-index-url|-extra-index-url|-find-links|f)\b", text, re.M)
    assert "file://" not in text and not re.search(r"(^|\s)/\w", text)


def test_the_environment_is_the_lock():
    """`make` installed exactly the lock's versions (a venv from the ranges would drift)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {name: (version, installed.get(name)) for name, (version, _) in lock().items()
             if installed.get(name) != version}
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("not running in the environment `make` installs (.venv)")
    assert not drift, f"installed versions differ from requirements.lock (lock, installed): {drift}"
