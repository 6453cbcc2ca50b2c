"""The layers of the package, checked on the source: no import cycle, and no import from a lower
layer to a higher one. Every import counts, also the ones inside functions (a lazy import is still
a dependency: it only hides a cycle until the function runs)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    ("foundation", ["dsdocre.errors", "dsdocre.fsio", "dsdocre.config", "dsdocre.relations", "dsdocre.savedir",
                    "dsdocre.testing"]),
    ("data and kernels", ["dsdocre.data", "dsdocre.kernels", "dsdocre.synth"]),
    ("models", ["dsdocre.model"]),
    ("training core, inference, scoring", ["dsdocre.train", "dsdocre.inference", "dsdocre.evaluation",
                                           "dsdocre.api"]),
    ("stages and jobs", ["dsdocre.finetune", "dsdocre.denoise", "dsdocre.pretrain", "dsdocre.predict",
                         "dsdocre.evaluate", "dsdocre.validate", "sharding"]),
    ("orchestration", ["dsdocre.pipeline", "dsdocre.cli"]),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted([*ROOT.glob("dsdocre/**/*.py"), *ROOT.glob("sharding/*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int:
    if module == "dsdocre":  # the package's own __init__ (imports nothing of the package)
        return 0
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return max(matches)[1]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports (an imported name resolves to its module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {m: imports(m, p, known) for m, p in known.items()}
    # a package's __init__ importing its own submodules is how a package exposes them, not a layer edge
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}


def test_every_module_is_in_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_goes_up_a_layer():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in import_graph().items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [module, target]))
            elif target not in state:
                visit(target, stack + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a two-module cycle and an upward import are found."""
    (tmp_path / "a.py").write_text("def f():\n    from dsdocre.pipeline import run\n")
    known = {"dsdocre.data.a": tmp_path / "a.py", "dsdocre.pipeline": tmp_path / "a.py"}
    assert imports("dsdocre.data.a", tmp_path / "a.py", known) == {"dsdocre.pipeline"}
    assert layer_of("dsdocre.pipeline") > layer_of("dsdocre.data.a")


# ---- layout: the library never imports a stage, Ray, or the CLI ------------------------------------
STAGES = {"dsdocre.cli", "dsdocre.denoise", "dsdocre.finetune", "dsdocre.predict", "dsdocre.evaluate", "dsdocre.pipeline",
          "dsdocre.validate", "dsdocre.synth.command"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_library_never_imports_a_stage_ray_or_the_cli():
    library = [p for p in (ROOT / "dsdocre").rglob("*.py")
               if ".".join(p.relative_to(ROOT).with_suffix("").parts) not in STAGES]
    assert len(library) > 15
    offenders = {}
    for path in library:
        bad = {m for m in _imports(path)
               if m in STAGES or m.split(".")[0] in ("ray", "sharding")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders
