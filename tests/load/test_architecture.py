"""The engine's arrows: chaospika.loadengine knows nothing of Chaos Toolkit or of
its edge, the rest of chaospika uses only its public names, and no two engine
modules import each other (directly or around a loop)."""

import ast
import subprocess
import sys
from pathlib import Path

import chaospika.loadengine as engine

PACKAGE = Path(engine.__file__).parent
CHAOSPIKA = PACKAGE.parent
ENGINE = "chaospika.loadengine"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CHAOSPIKA.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in `path`, lazy ones too."""
    found = []
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [alias.name for alias in node.names]
            found.append((base, names, node.lineno))
    return found


def engine_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_engine_imports_no_chaos_toolkit_and_not_its_edge():
    wrong = []
    for path in engine_files():
        for module, _, line in imports(path):
            top = module.split(".")[0]
            outside = top == "chaospika" and not (
                module == ENGINE or module.startswith(ENGINE + ".")
            )
            if top in ("chaoslib", "chaostoolkit", "logzero") or outside:
                wrong.append(f"{path.relative_to(CHAOSPIKA)}:{line} imports {module}")
    assert wrong == []


def test_the_rest_of_chaospika_uses_only_the_public_api():
    public = set(engine.__all__)
    wrong = []
    for path in sorted(CHAOSPIKA.rglob("*.py")):
        if PACKAGE in path.parents:
            continue
        for module, names, line in imports(path):
            where = f"{path.relative_to(CHAOSPIKA)}:{line}"
            if module.startswith(ENGINE + "."):
                wrong.append(f"{where} imports the private module {module}")
            elif module == ENGINE and not set(names) <= public:
                wrong.append(f"{where} imports {sorted(set(names) - public)}")
    assert wrong == []


def test_the_public_names_exist():
    assert all(hasattr(engine, name) for name in engine.__all__)


def test_no_import_cycle_inside_the_engine():
    names = {module_name(path): path for path in engine_files()}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = set()
        for module, imported, _ in imports(path):
            candidates = [module] + [f"{module}.{item}" for item in imported]
            targets |= {c for c in candidates if c in names and c != name}
        targets.discard(ENGINE)  # the package's __init__ only re-exports
        graph[name] = targets
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for target in sorted(graph[node]):
            if target in trail:
                cycles.append(trail[trail.index(target) :] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name != ENGINE and name not in done:
            visit(name, [name])
    assert cycles == []


def test_importing_the_engine_loads_no_chaos_toolkit():
    """Beyond what `import chaospika` (its discovery) loads, nothing of it."""
    code = (
        "import sys, chaospika; before = set(sys.modules); "
        "import chaospika.loadengine; "
        "print(sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] in ('chaoslib', 'chaostoolkit') "
        "or m == 'chaospika.load' or m.startswith('chaospika.load.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
