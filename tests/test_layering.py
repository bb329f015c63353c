"""The dependency direction of docs/architecture.md, checked on the source with an AST scan."""

import ast
import pathlib
import subprocess
import sys

import pytest

import evoflow

ROOT = pathlib.Path(evoflow.__file__).parent
# lower ranks may be imported by higher ones, never the reverse
RANK = {
    "arguments": -1, "schedules": 0, "paths": 1, "process": 1, "time_samplers": 1.2, "divergence": 1.5,
    "field": 2, "oracles": 2,
    "solvers": 3, "solve": 4,
    "kernels": 2, "estimators": 2, "likelihood": 5, "elbo": 5, "autoregressive": 5, "decoding": 5, "study": 6,
    "nn": 7, "train": 7.5, "verify": 8, "verify_report": 8.5, "demo": 8.7, "cli_train": 8.8, "cli_sample": 8.8,
    "integrations": 8.9, "cli": 9,
}
CORE_FORBIDDEN = {"sympy", "experiments", "proofs", "evoflow.nn", "evoflow.train"}


def _module_key(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


SOURCES = [p for p in sorted(ROOT.rglob("*.py")) if p.name != "__init__.py" or p.parent != ROOT]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    key = _module_key(path)
    assert key in RANK, f"{key} has no layer in the layering test: add it to RANK"
    for name in _imports(path):
        top = name.split(".")[0]
        if RANK[key] < RANK["nn"]:  # the core; nn, train and the application layer (verify, cli) may use nn
            assert not any(name == f or name.startswith(f + ".") for f in CORE_FORBIDDEN), (path, name)
            assert top != "sympy"
        if top == "evoflow" and name != "evoflow":
            target = name.split(".")[1]
            assert target == key or RANK[target] < RANK[key], f"{path.name} imports {name} (upward)"


def test_importing_evoflow_does_not_import_nn():
    code = "import sys, evoflow; sys.exit('evoflow.nn' in sys.modules or 'sympy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_package_root_imports_nothing_from_nn():
    assert not any(n.startswith("evoflow.nn") for n in _imports(ROOT / "__init__.py"))
