"""The documentation names only what exists, and its tables match the result files.

* Every repository path that README.md, docs/*.md or benchmarks/studies/README.md names, in inline
  code or as a link target, exists (links relative to their file, with their #anchor checked).
* Every dotted name ``dsdocre.x.y`` or ``sharding.x`` in inline code is an importable module, or an
  attribute of one; every ``python -m X`` in inline or fenced code names a module that exists.
* ``python -m benchmarks.studies.render_results --check``: no generated table is stale.

Which inline-code tokens are repository paths: a token (inline code is split at whitespace, so the
paths inside a command count) that contains a ``/`` or ends in .py, .md, .yaml, .json or .sh, and
whose first component is an entry at the top of the repository (``dsdocre/``, ``configs/``,
``README.md``, ...). Everything else is an example or a place outside the repository: what a command
writes (``runs/...``, ``model/``, ``shards/``, ``metrics.jsonl``), the real data beside the
checkout (``../shared``), ``/tmp``, ``~``. A bare file name is checked only when it ends in .py or
.sh (code and scripts, which commands never write): it must exist somewhere in the repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "studies" / "README.md"]
PATH_SUFFIXES = (".py", ".md", ".yaml", ".json", ".sh")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOTTED = re.compile(r"^((?:dsdocre|sharding)(?:\.\w+)+)")
MODULE_RUN = re.compile(r"python3? -m ([\w.]+)")
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"} - {"runs"}


def _names(path: Path) -> str:
    return str(path.relative_to(ROOT))


def inline_code(text: str) -> list[str]:
    return INLINE.findall(FENCE.sub("", text))


def path_tokens(code: str) -> list[str]:
    """The tokens of one inline-code span that name repository paths (the rule in the docstring)."""
    out = []
    for token in code.split():
        token = token.strip("()[],;:'\"")
        if token.startswith("--") and "=" in token:  # --out=benchmarks/x.json
            token = token.split("=", 1)[1]
        if "://" in token or not token:
            continue
        looks_like_path = "/" in token or token.endswith(PATH_SUFFIXES)
        if not looks_like_path:
            continue
        first = token.split("/", 1)[0]
        if "/" in token and first in TOP:
            out.append(token)
        elif "/" not in token and token.endswith((".py", ".sh")):
            out.append(token)
    return out


def exists(token: str) -> bool:
    """A repository path (``{a,b}`` alternatives, ``*`` and ``<name>`` placeholders allowed), or a
    bare file name found anywhere in the repository."""
    alternatives = [token]
    brace = re.search(r"\{([^{}]*)\}", token)
    if brace:
        alternatives = [token[:brace.start()] + part + token[brace.end():] for part in brace.group(1).split(",")]
    for alt in alternatives:
        pattern = re.sub(r"<[^>]*>", "*", alt).rstrip("/")
        if "/" not in pattern:
            if not any(p for p in ROOT.rglob(pattern) if ".venv" not in p.parts and "runs" not in p.parts):
                return False
        elif not any(ROOT.glob(pattern)):
            return False
    return True


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=_names)
def test_every_repository_path_the_docs_name_exists(doc):
    text = doc.read_text()
    missing = sorted({t for code in inline_code(text) for t in path_tokens(code) if not exists(t)})
    assert not missing, f"{_names(doc)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_names)
def test_every_link_resolves(doc):
    broken = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if "://" in target or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{_names(doc)} has broken links: {broken}"


def importable(dotted: str) -> bool:
    """``a.b.c``: the longest prefix that imports as a module, the rest attributes of it."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attribute in parts[i:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_names)
def test_every_dotted_name_the_docs_give_imports(doc):
    names = {m.group(1) for code in inline_code(doc.read_text()) for token in code.split()
             if (m := DOTTED.match(token.strip("()[],;:'\"")))}
    missing = sorted(n for n in names if not importable(n))
    assert not missing, f"{_names(doc)} names modules or attributes that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_names)
def test_every_module_the_docs_run_exists(doc):
    modules = {m for m in MODULE_RUN.findall(doc.read_text()) if m == m.lower()}  # NAME: a placeholder
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"{_names(doc)} runs modules that do not exist: {missing}"


def test_the_rule_for_paths():
    assert path_tokens("dsdocre/data/documents.py") == ["dsdocre/data/documents.py"]
    assert path_tokens("dsdocre evaluate --model runs/x/model --input gold.json --out result.json") == []
    assert path_tokens("python -m benchmarks.bilinear --out=benchmarks/results/bilinear.json") == \
        ["benchmarks/results/bilinear.json"]
    assert path_tokens("../shared/data/redocred/train.json ~/.cache/torch_extensions /tmp/x.py model/") == []
    assert path_tokens("conftest.py") == ["conftest.py"]
    assert exists("configs/pretrain_ablation_wo_{mm,rd}.yaml") and exists("configs/deepspeed/*.json")
    assert exists("benchmarks/results/denoise_cut_100_training_docs_<name>.json")
    assert not exists("dsdocre/documents.py") and not exists("no_such_script.py")
    assert importable("dsdocre.data.encoding.MarkerTokenizer") and not importable("dsdocre.encoding")
    assert slug("BERT+D against BERT") == "bertd-against-bert"
    assert slug("Pre-training, does each task learn?") == "pre-training-does-each-task-learn"


def test_generated_tables_match_the_result_files():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.studies.render_results", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
