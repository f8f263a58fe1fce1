"""The package's shape (issue 26): every module imports, flashi2v-internal imports form no cycle, the model
never imports the foreign-weights package, and library modules import no private names of one another.

``python tests/test_structure.py`` prints the internal import graph (module -> what it imports).
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "flashi2v"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def internal_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """flashi2v modules that ``path`` imports anywhere (at module level or inside a function): for
    ``from X import y`` the module X.y when it is one, else X."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: internal_imports(path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_model_does_not_import_the_weights_package():
    graph = import_graph()
    offenders = {m: sorted(i for i in deps if i.startswith("flashi2v.weights"))
                 for m, deps in graph.items() if m.startswith("flashi2v.model")}
    assert not any(offenders.values()), offenders


def test_library_layers():
    """What may not depend on what: eval and data never on each other's insides, train never on test code."""
    graph = import_graph()
    assert not any(d.startswith("flashi2v.data") for m, deps in graph.items() if m.startswith("flashi2v.eval") for d in deps)
    assert "flashi2v.tiny" not in graph  # random components are a feature module (flashi2v.random_components)


def test_no_private_names_imported_across_modules():
    """``from flashi2v.x import _name`` in library code and scripts: make the name public instead (benchmarks
    may reach into the Triton kernels they tune)."""
    roots = [PACKAGE, SRC.parent / "scripts"]
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("flashi2v")):
                    offenders += [f"{path.name}: {a.name}" for a in node.names
                                  if a.name.startswith("_") and a.name != "__version__"]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_every_module_imports(name):
    if name.startswith("flashi2v.kernels.") and importlib.util.find_spec("triton") is None:
        pytest.skip("triton kernels need triton")
    importlib.import_module(name)


if __name__ == "__main__":
    graph = import_graph()
    for module in sorted(graph):
        print(module, "->", ", ".join(sorted(graph[module])) or "-")
    found = cycles(graph)
    print("cycles:", found or "none")
    sys.exit(1 if found else 0)


def test_the_transformer_constructor_is_its_config(tmp_path):
    """One home for each of the transformer's hyperparameters: the constructor takes a TransformerConfig."""
    import dataclasses
    import inspect

    from flashi2v import FlashI2VError, FlashI2VTransformer, TransformerConfig, preset

    assert list(inspect.signature(FlashI2VTransformer.__init__).parameters) == ["self", "config"]
    model = FlashI2VTransformer.from_config("tiny", proj_kernel="3x3x3")
    assert model.config == dataclasses.replace(preset("tiny"), proj_kernel="3x3x3")
    assert model.learnable_proj.proj[0].kernel_size == (3, 3, 3)
    assert len(model.blocks) == model.config.num_layers
    assert FlashI2VTransformer(model.config).state_dict().keys() == model.state_dict().keys()
    with pytest.raises(TypeError, match="dim"):  # fields go through the config, not the constructor
        FlashI2VTransformer(dim=64)  # type: ignore[call-arg]
    with pytest.raises(FlashI2VError, match="TransformerConfig"):
        FlashI2VTransformer("tiny")  # type: ignore[arg-type]
    model.save_pretrained(tmp_path / "t")
    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert saved["_class_name"] == "FlashI2VTransformer" and TransformerConfig.from_dict(saved) == model.config
    assert FlashI2VTransformer.from_pretrained(tmp_path / "t").config == model.config
