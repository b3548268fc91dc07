"""The package's shape: no import cycle, data flowing one way, and the README's tree matching it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gmsense"
README = PACKAGE.parent / "README.md"

#: Pipeline stages in the order data flows (DESIGN.md): a module may import its own stage or an
#: earlier one, never a later one. Shared foundations (config, errors, files, records, the
#: translations the rules' sentences use) come first; the store is the sink the batch scan
#: writes to; labels and training read what reviewers decided (review -> labels -> train). The
#: restoration science (restoration.status, restoration.reference) sits with recovery; the
#: restoration run, which reads imagery for the register in the store and writes its status
#: there, sits after the batch scan.
STAGES = [
    ("config", "errors", "files", "records", "_numeric", "_parallel", "outputs.i18n"),
    ("geo",),
    ("cube",),
    ("sources",),
    ("detect",),
    ("classify.baseline", "classify.trust", "classify.model"),
    ("recovery", "restoration.status", "restoration.reference"),
    ("flags",),
    ("pipeline",),
    ("classify",),
    ("store",),
    ("batch",),
    ("restoration",),
    ("outputs",),
    ("review",),
    ("classify.labels", "classify.train"),
    ("api",),
    ("bench", "testutils", "cli"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The gmsense modules ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gmsense"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
    return {m for m in out if m in modules}


def _stage(module: str) -> int | None:
    name = module.removeprefix("gmsense.")
    best = None
    for rank, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def test_every_module_has_a_stage() -> None:
    missing = sorted(m for m in _modules() if m != "gmsense" and _stage(m) is None)
    assert not missing, f"modules outside the pipeline's stages: {missing}"


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m in modules.items() for m, p in [m]}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == "gmsense" or nxt.startswith(node + "."):
                continue  # a package importing its own submodules is no cycle
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_data_flows_one_way() -> None:
    modules = _modules()
    backwards = []
    for module, path in modules.items():
        here = _stage(module)
        for target in _imports(path, modules):
            there = _stage(target)
            if here is not None and there is not None and there > here:
                backwards.append(f"{module} imports {target}")
    assert not backwards, "imports against the flow of data: " + "; ".join(sorted(backwards))


def test_the_readme_tree_names_every_package() -> None:
    text = README.read_text(encoding="utf-8")
    tree = text[text.index("## Layout"):]
    tree = tree[: tree.index("```", tree.index("```") + 3)]
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name != "__pycache__")
    missing = [p for p in packages if not re.search(rf"\b{p}/", tree)]
    assert not missing, f"README layout does not show: {missing}"
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    unnamed = [m for m in modules if not re.search(rf"\b{m}\.py\b", tree)]
    assert not unnamed, f"README layout does not name: {unnamed}"
