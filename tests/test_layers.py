"""The package's shape, read statically: the layer contract (import-linter), no import cycles, imports at the top
of modules (a lazy one says why), and modules a reader can hold in mind."""

import ast
import subprocess
import sys
from pathlib import Path

import genre_tf

PACKAGE = Path(genre_tf.__file__).parent
REPO = PACKAGE.parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_layer_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_import_cycles():
    known = {module_name(path) for path in MODULES}
    graph = {module_name(path): imported_modules(path, known) - {module_name(path)} for path in MODULES}
    done, on_path = set(), []

    def visit(name: str) -> None:
        assert name not in on_path, "import cycle: " + " -> ".join([*on_path[on_path.index(name) :], name])
        if name in done:
            return
        on_path.append(name)
        for other in sorted(graph[name]):
            if not (name.startswith(other + ".") or other == "genre_tf"):  # a package's own __init__ is no cycle
                visit(other)
        on_path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def lazy_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, said) of each import inside a function: `said` when a `# Lazy:` comment says why, on the line of the
    first import of its block (the imports right after one another) or on the line above it."""
    lines = path.read_text().splitlines()
    found = []
    for function in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        imports = sorted(
            (node for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))),
            key=lambda node: node.lineno,
        )
        first = None
        for previous, node in zip([None, *imports], imports, strict=False):
            if previous is None or previous.end_lineno != node.lineno - 1:
                first = node.lineno
            said = any("Lazy:" in lines[i - 1] for i in (first - 1, first) if i >= 1)
            found.append((node.lineno, said))
    return found


def test_imports_inside_functions_are_few_and_each_says_why():
    lazy = {path: lazy_imports(path) for path in MODULES}
    unsaid = [f"{path.name}:{line}" for path, found in lazy.items() for line, said in found if not said]
    assert not unsaid, f"imports inside functions without a `# Lazy:` reason: {unsaid}"
    assert sum(map(len, lazy.values())) <= 25


def test_modules_stay_short_and_the_top_level_holds_the_commands():
    long = {module_name(path): n for path in MODULES if (n := len(path.read_text().splitlines())) > 450}
    assert not long, long
    assert len([path for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]) <= 14
