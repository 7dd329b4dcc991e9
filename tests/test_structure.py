"""The package's shape: imports follow the layer order written in cnmc_core/__init__.py, modules stay readable,
pages read only the dashboard's read model, and Keras is imported only where it is used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cnmc_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnmc_core"
LAZY = {"tensorflow", "keras", "tf_keras_vis", "cnmc_core.training"}  # may (and must) be imported inside functions
MAX_LINES = 360  # "about 350": a few lines over is fine where splitting would hurt


def _modules() -> dict[str, Path]:
    """'store' -> cnmc_core/store.py, 'dashboard.base' -> cnmc_core/dashboard/base.py, ..."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if parts:
            out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom | ast.Import, alias: ast.alias) -> str | None:
    """The absolute module an import names ('cnmc_core.store'), or None for a non-package import."""
    if isinstance(node, ast.Import):
        return alias.name
    if node.level == 0:
        base = node.module or ""
    else:  # relative: level 1 is the module's own package, level 2 its parent, ...
        parts = ["cnmc_core", *module.split(".")]
        package = parts if (PACKAGE / Path(*module.split("."))).is_dir() else parts[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    # `from . import training` names a module, `from .store import x` names a module's attribute
    candidate = f"{base}.{alias.name}" if base else alias.name
    if candidate.startswith("cnmc_core.") and candidate[len("cnmc_core.") :] in _modules():
        return candidate
    return base


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module imported, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = set()
    for node in tree.body:  # module level, including `if TYPE_CHECKING:` and try/except blocks
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            top.add(id(sub))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = _resolve(module, node, alias)
                if name:
                    found.append((name, node.lineno, id(node) in top))
    return found


def _layer(module: str) -> int:
    head = module.split(".")[0]
    assert head in cnmc_core.LAYERS, f"cnmc_core.{module} is not in the layer order of cnmc_core/__init__.py: add it"
    return cnmc_core.LAYERS.index(head)


def _is_lazy(name: str) -> bool:
    return any(name == lazy or name.startswith(lazy + ".") for lazy in LAZY)


MODULES = _modules()


def test_every_module_has_a_place_in_the_layer_order():
    for module in MODULES:
        _layer(module)
    for name in cnmc_core.LAYERS:
        assert f"    {name}" in cnmc_core.__doc__, f"{name} is in LAYERS but not described in the package docstring"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layer_order(module):
    mine = _layer(module)
    for name, line, at_top in _imports(module, MODULES[module]):
        where = f"cnmc_core/{MODULES[module].relative_to(PACKAGE)}:{line}"
        if _is_lazy(name):
            if name.startswith("cnmc_core."):
                assert not at_top or module in ("__main__",), f"{where} imports {name} at module level: keep it lazy"
            elif module != "training":
                assert not at_top, f"{where} imports {name} at module level: import Keras inside the function"
            continue
        assert at_top, f"{where}: function-local import of {name}; move it to the top of the module"
        if not name.startswith("cnmc_core"):
            continue
        target = name[len("cnmc_core.") :] if name != "cnmc_core" else ""
        if not target:  # `from cnmc_core import __version__` / `from . import x` resolved above
            continue
        theirs = _layer(target)
        if target.split(".")[0] == module.split(".")[0] == "dashboard":
            # inside the read model: base first; page-family modules import base (and lower layers) only
            # dashboard.report (the study report) is the one aggregator: it puts every page family on paper
            assert target == "dashboard.base" or module in ("dashboard", "dashboard.report"), (
                f"{where} imports {target}: dashboard modules import only dashboard.base and lower layers"
            )
            assert module != "dashboard.base", f"{where}: dashboard.base must not import other dashboard modules"
            continue
        assert theirs < mine, (
            f"{where} imports cnmc_core.{target}, which comes after {module} in the layer order "
            f"({' < '.join(cnmc_core.LAYERS)})"
        )


def test_no_import_circles():
    graph = {
        m: {n[len("cnmc_core.") :] for n, _, _ in _imports(m, p) if n.startswith("cnmc_core.")}
        for m, p in MODULES.items()
    }

    def visit(node, path):
        for nxt in graph.get(node, ()):
            assert nxt not in path, f"import circle: {' -> '.join([*path, nxt])}"
            visit(nxt, [*path, nxt])

    for m in graph:
        visit(m, [m])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small_enough_to_read(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"cnmc_core/{MODULES[module].relative_to(PACKAGE)} has {lines} lines (limit {MAX_LINES}): split it"
    )


@pytest.mark.parametrize("page", sorted((ROOT / "views").glob("*.py")), ids=lambda p: p.name)
def test_pages_import_only_the_read_model(page):
    if page.name == "_ui.py":
        allowed = ("cnmc_core.dashboard",)
    else:
        allowed = ("cnmc_core.dashboard", "views")
    tree = ast.parse(page.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.module != "cnmc_core" else [f"cnmc_core.{a.name}" for a in node.names]
        for name in names:
            if name.startswith(("cnmc_core", "views", "keras", "tensorflow", "PIL")):
                assert name.startswith(allowed), (
                    f"views/{page.name}:{node.lineno} imports {name}; pages use cnmc_core.dashboard"
                )


def test_the_package_and_its_command_line_start_without_keras():
    code = (
        "import sys, cnmc_core.cli, cnmc_core.dashboard.base; "
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing the CLI and the read model imported {out.stdout.strip()}"
