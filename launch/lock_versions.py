"""Print the lock file (launch/requirements.lock): the exact installed versions of every package that
pyproject.toml declares, with all its extras, and of everything those need in turn.

    .venv/bin/python launch/lock_versions.py > launch/requirements.lock

Run it with the interpreter of the environment the figures were measured in, after an upgrade there.
launch/install.sh installs with the lock as pip constraints, so a fresh install gets these versions
and not whatever is newest that day; pyproject.toml keeps its ranges (tests/test_requirements_lock.py
checks that the two agree).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# Installers, not dependencies: pinning them would fight the installer's own upgrades.
NOT_LOCKED = {"pip", "setuptools", "wheel"}


def declared_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The dependencies and the optional dependencies of every extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return [Requirement(r) for r in requirements]


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """name -> installed version of ``roots`` and, transitively, of what they require (with the
    extras asked for; requirements whose markers do not hold here are left out)."""
    versions: dict[str, str] = {}
    visited: set[tuple[str, frozenset]] = set()
    pending = list(roots)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in visited or name in NOT_LOCKED:
            continue
        visited.add((name, frozenset(requirement.extras)))
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"lock_versions: {requirement.name} is declared but not installed in {sys.prefix}")
        # A local label (torch's +cpu) names a build, not a release: install.sh pins the release.
        versions[name] = Version(dist.version).public
        environments = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate(env) for env in environments):
                pending.append(sub)
    return versions


def main() -> None:
    versions = installed_closure(declared_requirements())
    print("# Exact versions of dsdocre's dependencies (pyproject.toml, every extra) and of what they need,")
    print("# as installed where the committed figures were measured. launch/install.sh installs with")
    print("# `-c launch/requirements.lock`. Regenerate:")
    print("#   .venv/bin/python launch/lock_versions.py > launch/requirements.lock")
    for name in sorted(versions):
        print(f"{name}=={versions[name]}")


if __name__ == "__main__":
    main()
