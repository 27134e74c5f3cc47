"""The import rules of CONTRIBUTING.md, read from the source of `api/`.

- `api.core` imports no resource package.
- No package imports another package's `routes`: only the app (`api.main`) assembles routers.
- The modules import each other without a cycle, and so do the packages, but for users and auth:
  auth reads users' models, and users' routes use auth's dependencies, as every package's do.
"""

import ast
from collections.abc import Iterable, Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

API = Path(__file__).resolve().parent.parent / "api"
# The edges between packages allowed to close a cycle (the module graph stays acyclic).
AUTH_BETWEEN = {("users", "auth")}
# The app's own top-level modules, which assemble the packages.
ASSEMBLY = {"api", "api.main", "api.models", "api.__main__"}

Edges = set[tuple[str, str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(API.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module) -> Iterator[str]:
    """Every module `tree` imports anywhere (function bodies and TYPE_CHECKING blocks too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # `from api.users import service` imports the module api.users.service.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def module_edges() -> Edges:
    modules = {module_name(path): path for path in API.rglob("*.py")}
    return {
        (name, target)
        for name, path in modules.items()
        for target in imported(ast.parse(path.read_text(), str(path)))
        if target in modules and target != name
    }


MODULES = module_edges()


def package(module: str) -> str | None:
    """`users` for `api.users.routes`; None for the app's own top-level modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (API / parts[-1]).is_dir() else None


def package_edges(modules: Edges) -> Edges:
    """Package to package, less the users -> auth edge."""
    edges = {(package(source), package(target)) for source, target in modules}
    return {
        (here, there)
        for here, there in edges
        if here and there and here != there and (here, there) not in AUTH_BETWEEN
    }


def cycle(edges: Iterable[tuple[str, str]]) -> list[str]:
    """A cycle of the graph, or [] when it has none."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(error.args[1])
    return []


def test_the_graph_sees_the_packages() -> None:
    packages = {package(module) for edge in MODULES for module in edge} - {None}
    assert {"auth", "categories", "core", "orders", "posts", "products", "users"} <= packages
    assert ("api.orders.service", "api.products.models") in MODULES


def test_core_imports_no_resource() -> None:
    assert [(s, t) for s, t in MODULES if package(s) == "core" and package(t) != "core"] == []


def test_no_package_imports_another_packages_routes() -> None:
    offending = [
        (source, target)
        for source, target in MODULES
        if target.endswith(".routes") and package(source) not in {None, package(target)}
    ]
    assert offending == []


def test_no_package_imports_the_app() -> None:
    assert [(s, t) for s, t in MODULES if t in ASSEMBLY and package(s) is not None] == []


def test_modules_import_each_other_without_a_cycle() -> None:
    assert cycle(MODULES) == []


def test_packages_import_each_other_without_a_cycle() -> None:
    assert cycle(package_edges(MODULES)) == []


@pytest.mark.parametrize(
    "breach",
    [
        ("api.users.service", "api.orders.models"),
        ("api.categories.service", "api.products.models"),
        ("api.tags.models", "api.posts.models"),
    ],
)
def test_a_breach_would_be_seen(breach: tuple[str, str]) -> None:
    assert cycle(package_edges(MODULES | {breach})) != []
