"""The lock on a Pi: which locked packages have no aarch64 wheel, and how each is handled.

A Raspberry Pi 4/5 (64-bit Raspberry Pi OS, Debian bookworm: glibc 2.36) installs from the same
uv.lock as CI. A package with no wheel for it is built from its sdist there, which needs a
compiler and headers a lot controller does not have, or cannot be installed at all. Each such
package is named in HANDLED with what happens to it; a lock that adds one fails here until
someone decides, and an entry that no longer applies fails too.

Standard library only: `python3 tests/test_lock.py` (what `scripts/test-arm64 --wheels` runs)
prints the table without a venv.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

LOCK = Path(__file__).parent.parent / "uv.lock"
BOOKWORM_GLIBC = (2, 36)  # Debian 12 and Raspberry Pi OS bookworm

# Locked packages with no aarch64 wheel for some Python, and what happens to each on a Pi.
HANDLED = {
    "lgpio": (
        "only in the `pi` extra (a Pi 5's GPIO); Raspberry Pi OS bookworm's Python 3.11 has a "
        "wheel. On 3.13 uv builds the sdist: it needs swig, a C compiler, the Python headers and "
        "liblgpio (Raspberry Pi OS's liblgpio-dev; not in Debian bookworm)"
    ),
}

# uv writes markers as `and`-joined comparisons of these three variables.
_CLAUSE = re.compile(
    r"(python_full_version|platform_machine|sys_platform) (==|!=|<|<=|>|>=) '([^']+)'")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def marker_holds(marker: str, python: str, machine: str) -> bool:
    """Whether a marker of the lock holds for a CPython `python` ("3.11") on Linux `machine`.

    Anything but the comparisons uv writes raises, so that a new form fails the test instead
    of being read wrongly.
    """
    values = {"platform_machine": machine, "sys_platform": "linux"}
    for clause in marker.split(" and "):
        match = _CLAUSE.fullmatch(clause.strip())
        if match is None:
            raise ValueError(f"a marker this check cannot read: {marker!r}")
        name, op, value = match.groups()
        if name == "python_full_version":
            if value.endswith(".*"):
                holds = (python == value[:-2]) == (op == "==")
            else:
                ours, theirs = _version(python), _version(value)
                holds = {"<": ours < theirs, "<=": ours <= theirs, ">": ours > theirs,
                         ">=": ours >= theirs, "==": ours == theirs, "!=": ours != theirs}[op]
        elif op in ("==", "!="):
            holds = (values[name] == value) == (op == "==")
        else:
            raise ValueError(f"a marker this check cannot read: {marker!r}")
        if not holds:
            return False
    return True


def wheel_fits(filename: str, python: str) -> bool:
    """Whether pip or uv would install this wheel on glibc 2.36 aarch64 under CPython `python`."""
    *_, interpreters, abis, platforms = filename.removesuffix(".whl").split("-")
    minor = int(python.split(".")[1])
    cp = f"cp3{minor}"

    def platform_fits(platform: str) -> bool:
        if platform == "any":
            return True
        if platform == "manylinux2014_aarch64":
            return True  # glibc 2.17
        match = re.fullmatch(r"manylinux_(\d+)_(\d+)_aarch64", platform)
        return match is not None and (int(match[1]), int(match[2])) <= BOOKWORM_GLIBC

    def abi_fits(interpreter: str, abi: str) -> bool:
        if abi == "none":
            return interpreter in ("py3", cp)
        if abi == "abi3":
            return bool(re.fullmatch(r"cp3\d+", interpreter)) and int(interpreter[3:]) <= minor
        return abi == cp == interpreter

    return any(platform_fits(p) for p in platforms.split(".")) and any(
        abi_fits(i, a) for i in interpreters.split(".") for a in abis.split("."))


def supported_pythons(lock: dict[str, Any]) -> list[str]:
    """The Python minors the lock covers, from its `requires-python` (">=3.11, <3.14")."""
    match = re.fullmatch(r">=\s*3\.(\d+),\s*<\s*3\.(\d+)", lock["requires-python"])
    if match is None:
        raise ValueError(f"a requires-python this check cannot read: {lock['requires-python']!r}")
    return [f"3.{minor}" for minor in range(int(match[1]), int(match[2]))]


def aarch64_gaps(lock: dict[str, Any]) -> dict[str, tuple[str, list[str], bool]]:
    """Registry packages with no fitting aarch64 wheel: name -> (version, Pythons, has an sdist).

    A package split by Python version (numpy, scipy) is checked for the Pythons its
    `resolution-markers` give it on aarch64; the project's own distributions (editable,
    built from this tree) are not registry packages.
    """
    gaps: dict[str, tuple[str, list[str], bool]] = {}
    for package in lock["package"]:
        if "registry" not in package["source"]:
            continue
        markers = package.get("resolution-markers")
        missing = [
            python for python in supported_pythons(lock)
            if (markers is None or any(marker_holds(m, python, "aarch64") for m in markers))
            and not any(wheel_fits(w["url"].rsplit("/", 1)[1], python)
                        for w in package.get("wheels", []))
        ]
        if missing:
            gaps[package["name"]] = (package["version"], missing, "sdist" in package)
    return gaps


def test_every_locked_package_without_an_aarch64_wheel_is_handled() -> None:
    gaps = aarch64_gaps(tomllib.loads(LOCK.read_text()))
    assert sorted(set(gaps) - set(HANDLED)) == [], "no aarch64 wheel: say in HANDLED what a Pi does"
    assert sorted(set(HANDLED) - set(gaps)) == [], "these have aarch64 wheels now: drop them"


def test_a_package_with_only_x86_64_wheels_or_a_too_new_glibc_is_a_gap() -> None:
    lock = {
        "requires-python": ">=3.11, <3.14",
        "package": [
            {"name": "ours", "version": "0.1", "source": {"editable": "."}},
            {"name": "pure", "version": "1", "source": {"registry": "x"},
             "wheels": [{"url": "https://h/pure-1-py3-none-any.whl"}]},
            {"name": "x86only", "version": "2", "source": {"registry": "x"}, "sdist": {},
             "wheels": [{"url": "https://h/x86only-2-cp311-abi3-manylinux_2_17_x86_64.whl"}]},
            {"name": "newglibc", "version": "3", "source": {"registry": "x"},
             "wheels": [{"url": "https://h/newglibc-3-cp311-abi3-manylinux_2_39_aarch64.whl"}]},
            {"name": "old", "version": "4", "source": {"registry": "x"},
             "resolution-markers": ["python_full_version < '3.12' and platform_machine == "
                                    "'aarch64' and sys_platform == 'linux'"],
             "wheels": [{"url": "https://h/old-4-cp311-cp311-manylinux2014_aarch64.whl"}]},
        ],
    }
    assert aarch64_gaps(lock) == {
        "x86only": ("2", ["3.11", "3.12", "3.13"], True),
        "newglibc": ("3", ["3.11", "3.12", "3.13"], False),
    }


def test_wheel_tags_are_read_as_pip_reads_them_on_a_pi() -> None:
    fits = {
        "a-1-cp39-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl": True,
        "a-1-cp315-abi3.abi3t-manylinux_2_17_aarch64.whl": False,  # abi3 from 3.15 on
        "a-1-cp312-cp312-manylinux_2_28_aarch64.whl": False,  # another Python's
        "a-1-cp311-cp311-manylinux_2_34_aarch64.whl": True,
        "a-1-cp311-cp311-manylinux_2_38_aarch64.whl": False,  # newer glibc than bookworm's
        "a-1-cp311-cp311-musllinux_1_2_aarch64.whl": False,
        "a-1-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl": True,
        "a-1-py2.py3-none-any.whl": True,
    }
    assert {name: wheel_fits(name, "3.11") for name in fits} == fits
    assert marker_holds("python_full_version == '3.12.*' and platform_machine == 'aarch64'",
                        "3.12", "aarch64")
    assert not marker_holds("python_full_version >= '3.13' and platform_machine == 'x86_64'",
                            "3.13", "aarch64")


def main() -> int:
    lock = tomllib.loads(LOCK.read_text())
    gaps = aarch64_gaps(lock)
    pythons = supported_pythons(lock)
    print(f"Locked packages with no manylinux aarch64 wheel (glibc <= 2.36; Python "
          f"{pythons[0]} to {pythons[-1]}), and how each is handled on a Pi:")
    for name, (version, missing, sdist) in sorted(gaps.items()):
        print(f"  {name} {version}, Python {', '.join(missing)}, "
              f"{'an sdist' if sdist else 'no sdist'}: {HANDLED.get(name, 'NOT HANDLED')}")
    registry = [p for p in lock["package"] if "registry" in p["source"]]
    print(f"The other {len(registry) - len(gaps)} of the {len(registry)} locked registry packages "
          "install from a wheel on aarch64; parking-gateway and parking-sim are built from this "
          "tree.")
    return 0 if set(gaps) == set(HANDLED) else 1


if __name__ == "__main__":
    sys.exit(main())
