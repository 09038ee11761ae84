"""The shape of the package, checked: no import cycles (function-level imports included), no module reaching
for another module's private names, small modules, one registry of targets that keep one contract, and an
ARCHITECTURE.md that names every module."""

import ast
import inspect
from pathlib import Path

import pytest

import novagen
from novagen import backends
from novagen.backends.base import Backend

ROOT = Path(novagen.__file__).resolve().parent
REPO = ROOT.parent
MAX_LINES = 520


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of a novagen module, at any depth."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "novagen"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "novagen":
                continue
            names = [a.name for a in node.names]
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            found += [(s, [], node.lineno) for s in subs]
            rest = [n for n in names if f"{base}.{n}" not in MODULES]
            if rest:
                found.append((base, rest, node.lineno))
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_is_small():
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: c for n, c in big.items() if c > MAX_LINES} == {}


def test_no_import_cycles_including_lazy_imports():
    edges = {n: sorted({m for m, _, _ in deps if m in MODULES and m != n}) for n, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in edges[n]:
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in edges:
        if n not in state:
            visit(n)
    assert cycles == []


def test_no_module_imports_another_modules_private_names():
    bad = [(n, m, names, line) for n, deps in GRAPH.items() for m, names, line in deps
           if any(x.startswith("_") and not x.startswith("__") for x in names)]
    assert bad == []


def test_targets_keep_one_contract():
    reg = backends.registry()
    assert set(reg) == {"c", "cuda", "hls", "verilog", "tvm-llvm", "tvm-cuda"}
    for name, b in reg.items():
        assert isinstance(b, Backend) and b.name == name and b.summary
        params = list(inspect.signature(b.generate).parameters)
        assert params[:4] == ["alg", "out_dir", "layer", "padding"] and "overwrite" in params, (name, params)
        if b.compile is not None:
            assert list(inspect.signature(b.compile).parameters)[:3] == ["alg", "layer", "padding"], name
    # every module that declares BACKENDS is found by the registry, and nothing else is
    declaring = {n for n, p in MODULES.items() if n.startswith("novagen.backends.")
                 and n.count(".") == 2 and "BACKENDS =" in p.read_text()}
    assert declaring == {"novagen.backends." + m for m in ("c", "cuda", "hls", "verilog", "tvm")}


def test_an_unknown_option_is_refused_by_the_target(tmp_path):
    from novagen.errors import InputError

    with pytest.raises(InputError, match="target verilog takes no option --arch.*--arch is an option of cuda"):
        novagen.generate("F(4,3)/classic", tmp_path, target="verilog", arch="sm_90")
    with pytest.raises(InputError, match="target 'vhdl' is not known: use one of c, cuda"):
        novagen.generate("F(4,3)/classic", tmp_path, target="vhdl")
    assert list(tmp_path.iterdir()) == []


def test_architecture_document_names_every_module():
    doc = (REPO / "ARCHITECTURE.md").read_text()
    missing = [n for n in MODULES if n != "novagen" and n.removeprefix("novagen.").split(".")[-1] not in doc]
    assert missing == []
    readme = (REPO / "README.md").read_text()
    assert "ARCHITECTURE.md" in readme and "../shared" not in readme
