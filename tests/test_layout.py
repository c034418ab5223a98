"""The package's imports point down the layers and form no cycle (parsed with ``ast``, not run).

Layers, lowest first: ``core``, ``images``, ``config`` and ``jsonio`` (utilities) <
``invertible_backprop`` (on ``core`` alone) and ``nn`` < ``layers`` < ``priors`` < ``models`` <
``training`` and ``testing`` < ``experiments`` < ``cli``. ``evaluation`` and ``data`` import no model, training or cli code (``data``
may use ``evaluation.imresize``); models may use ``evaluation`` (bits/dim) but never ``data``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "attnflow"

#: what each top-level part may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "invertible_backprop": {"core"},
    "images": set(),
    "config": set(),
    "jsonio": set(),
    "nn": {"core"},
    "layers": {"core", "nn"},
    "priors": {"core", "nn", "layers"},
    "evaluation": {"core", "images", "config"},
    "data": {"core", "images", "config", "evaluation"},
    "models": {"core", "invertible_backprop", "images", "config", "nn", "layers", "priors", "evaluation"},
    "testing": {"core", "invertible_backprop", "nn", "layers", "priors", "models"},
    "training": {"core", "invertible_backprop", "images", "config", "nn", "layers", "priors", "evaluation", "data",
                 "models", "testing"},
    "experiments": {"core", "invertible_backprop", "images", "config", "jsonio", "nn", "layers", "priors",
                    "evaluation", "data", "models", "testing", "training"},
    "cli": {"core", "invertible_backprop", "images", "config", "jsonio", "nn", "layers", "priors", "evaluation",
            "data", "models", "testing", "training", "experiments"},
}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute names of the attnflow modules ``path`` imports (at any depth of the file)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attnflow")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("attnflow"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}  # `from .x import y` may be a module
    return found


def _graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, root) if m in modules and m != name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in graph.items():
        part = _part(module)
        if not part:  # attnflow/__init__.py: the public facade
            continue
        for dep in deps:
            target = _part(dep)
            if target and target != part and target not in ALLOWED[part]:
                bad.append(f"{module} -> {dep} ({part} may not import {target})")
    return sorted(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if dep == "attnflow" or node.startswith(dep + ".") and dep != node:
                continue  # importing a submodule runs its parent packages first: not an edge back
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def test_every_import_points_down():
    bad = _upward(_graph())
    assert not bad, "imports pointing up or sideways:\n" + "\n".join(bad)


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_catch_planted_violations(tmp_path):
    """A copy of the package with an upward import and a cycle planted in it must fail both checks."""
    import shutil

    copy = tmp_path / "attnflow"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "layers" / "masks.py", "a") as f:
        f.write("\nfrom ..models import build_model  # planted: layers -> models\n")
    with open(copy / "nn" / "__init__.py", "a") as f:
        f.write("\nfrom ..layers.masks import make_mask  # planted: nn -> layers -> nn\n")
    graph = _graph(copy)
    bad = _upward(graph)
    assert any("attnflow.layers.masks -> attnflow.models" in b for b in bad)
    assert any("attnflow.nn -> attnflow.layers" in b for b in bad)
    assert any("attnflow.nn" in c and "attnflow.layers.masks" in c for c in _cycles(graph))


def test_every_part_is_known():
    parts = {_part(m) for m in _graph()} - {""}
    assert parts <= set(ALLOWED), f"parts without a place in the layering: {sorted(parts - set(ALLOWED))}"
