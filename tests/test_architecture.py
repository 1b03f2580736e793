"""docs/architecture.md matches the tree (every path it names exists, every product package is named), and the
import rules it states hold for every product module."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.checkout import ROOT

DOC = ROOT / "docs" / "architecture.md"
# The product's top-level packages: what the wheel ships (pyproject.toml's package list).
PRODUCT = tuple(
    pattern.removesuffix("*")
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
)
SERVICES = ("generation_service", "batch_service")
# A backticked repository path: `pkg/module.py`, `pkg/sub/`, `docs/x.md`, `dev.py` (no spaces, no {placeholders}).
PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)*/?)`")
PATH_SUFFIXES = (".py", ".md", ".json", ".sql", ".proto")


def named_paths(text: str) -> set[str]:
    """The repository paths a document names: backticked tokens that are a directory (trailing /) or a file."""
    return {
        token
        for token in PATH.findall(text)
        if token.endswith("/") or (token.endswith(PATH_SUFFIXES) and ("/" in token or token.count(".") == 1))
    }


def product_packages() -> list[str]:
    """Every package directory of the product, as `dir/` relative to the checkout."""
    return sorted(
        f"{init.parent.relative_to(ROOT).as_posix()}/" for top in PRODUCT for init in (ROOT / top).rglob("__init__.py")
    )


def test_every_path_the_architecture_document_names_exists() -> None:
    paths = named_paths(DOC.read_text())
    assert len(paths) > 60, f"the document should name the modules; found only {sorted(paths)}"
    missing = sorted(p for p in paths if not (ROOT / p).exists() or (p.endswith("/") and not (ROOT / p).is_dir()))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_product_package_is_in_the_architecture_document() -> None:
    paths = named_paths(DOC.read_text())
    unnamed = [package for package in product_packages() if package not in paths]
    assert not unnamed, f"docs/architecture.md does not name these packages: {unnamed}"


def test_the_path_finder_sees_what_the_document_means() -> None:
    found = named_paths("`batch_service/engine.py`, `convgen/db/`, `dev.py`, `batch-logs/{job_id}/log.txt`, `GetX`")
    assert found == {"batch_service/engine.py", "convgen/db/", "dev.py"}


# --- import rules ------------------------------------------------------------------------------------------------


def product_modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every product module, generated code left out."""
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            if relative.parts[:2] == ("convgen", "v1"):
                continue
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield ".".join(parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """The dotted names a module imports (relative imports resolved; `from a import b` counts as a and a.b)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {name: imports_of(name, path) for name, path in product_modules()}


def within(name: str, package: str) -> bool:
    """True when the dotted name is the package or inside it."""
    return name == package or name.startswith(f"{package}.")


def offending(importer: Callable[[str], bool], imported: Callable[[str], bool]) -> list[str]:
    """'module -> name' for every import, by a module importer accepts, of a name imported accepts."""
    return sorted(f"{m} -> {n}" for m, names in IMPORTS.items() if importer(m) for n in names if imported(n))


def violations(importer: str, forbidden: str) -> list[str]:
    """The imports, by modules under importer, of anything under forbidden."""
    return offending(lambda module: within(module, importer), lambda name: within(name, forbidden))


def top_package(module: str) -> str:
    """The top-level package of a dotted name."""
    return module.partition(".")[0]


@pytest.mark.parametrize(("importer", "forbidden"), [(a, b) for a in SERVICES for b in SERVICES if a != b])
def test_the_services_never_import_each_other(importer: str, forbidden: str) -> None:
    assert not violations(importer, forbidden)


@pytest.mark.parametrize("forbidden", [top for top in PRODUCT if top != "convgen"])
def test_shared_code_imports_nothing_of_the_rest_of_the_product(forbidden: str) -> None:
    assert not violations("convgen", forbidden)


@pytest.mark.parametrize(("service", "forbidden"), [(s, f) for s in SERVICES for f in ("clients", "server_commands")])
def test_the_services_import_neither_the_clients_nor_the_server_commands(service: str, forbidden: str) -> None:
    assert not violations(service, forbidden)


def test_store_modules_import_no_edge_or_logic_module() -> None:
    """A store module may use its service's domain values (any domain module), other store modules and convgen/."""
    assert not offending(
        lambda module: ".store." in module,
        lambda name: (
            top_package(name) in SERVICES
            and name != top_package(name)
            and not within(name, f"{top_package(name)}.store")
            # A service's domain modules: its domain.py, and a feature package's own (batch_service.datasets.domain).
            and "domain" not in name.split(".")
        ),
    )


def test_only_the_composition_root_imports_the_grpc_edge() -> None:
    edges = {f"{service}.api" for service in SERVICES}
    assert not offending(lambda module: module not in {f"{s}.app" for s in SERVICES}, lambda name: name in edges)


@pytest.mark.parametrize("forbidden", [*SERVICES, "server_commands", "clients.cli"])
def test_the_client_library_imports_no_service_no_server_command_and_no_cli(forbidden: str) -> None:
    library = [name for name in IMPORTS if within(name, "clients") and not within(name, "clients.cli")]
    assert library
    assert not offending(lambda module: module in library, lambda name: within(name, forbidden))


def test_only_the_server_commands_and_the_demo_import_a_composition_root() -> None:
    roots = [f"{service}.app" for service in SERVICES]
    assert not offending(
        lambda module: not within(module, "server_commands") and module != "clients.cli.demo",
        lambda name: any(within(name, root) for root in roots),
    )


def test_the_import_reader_sees_imports() -> None:
    """The rules above are only as good as imports_of: it must find every form of import."""
    assert {"batch_service.domain", "batch_service.domain.JobRow"} <= IMPORTS["batch_service.store.jobs"]
    assert "convgen.v1" in IMPORTS["clients.client"]
    assert any(within(name, "generation_service") for name in IMPORTS["server_commands.serve_all"])
