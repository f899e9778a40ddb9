"""The sandbox stands alone: it imports nothing of the product, and no provider's emulator imports another's.

An emulator that shared the client's models would share its misunderstandings; read from the source
with `ast`, so an import inside a function counts as much as one at the top."""

import ast
from pathlib import Path

import nthlayer_pipelines.sandbox as sandbox_package

SANDBOX = Path(sandbox_package.__file__).parent
PACKAGE = "nthlayer_pipelines.sandbox"
PROVIDERS = ("pagerduty", "cortex", "slack")


def module_name(path: Path) -> str:
    parts = path.relative_to(SANDBOX).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` imports anywhere in it, relative imports resolved against `package`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module or "")
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            if node.module:
                found.add(f"{base}.{node.module}")
            else:  # `from .. import x`: x may be a module
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(encoding="utf-8"), package_of(path))


def sandbox_sources() -> list[Path]:
    return sorted(SANDBOX.rglob("*.py"))


def test_the_sandbox_has_one_folder_per_provider() -> None:
    for provider in PROVIDERS:
        assert (SANDBOX / provider / "__init__.py").is_file()
        assert (SANDBOX / provider / "api.py").is_file()
        assert (SANDBOX / provider / "org.py").is_file()


def test_the_sandbox_imports_nothing_of_the_product() -> None:
    outside = {
        (path.relative_to(SANDBOX).as_posix(), module)
        for path in sandbox_sources()
        for module in imports_of(path)
        if module.split(".")[0] == "nthlayer_pipelines" and not (module + ".").startswith(PACKAGE + ".")
    }
    assert outside == set()


def test_no_provider_imports_another_providers_emulator() -> None:
    crossings = set()
    for provider in PROVIDERS:
        for path in sorted((SANDBOX / provider).rglob("*.py")):
            for module in imports_of(path):
                for other in PROVIDERS:
                    if other != provider and (module + ".").startswith(f"{PACKAGE}.{other}."):
                        crossings.add((path.relative_to(SANDBOX).as_posix(), module))
    assert crossings == set()


def test_the_import_walk_sees_relative_and_nested_imports() -> None:
    # A walk that saw nothing would pass the tests above for the wrong reason.
    source = """
import httpx
from .org import PagerDutyOrg
from .. import core


def late() -> None:
    from nthlayer_pipelines.resources import pagerduty
"""
    assert imported_modules(source, f"{PACKAGE}.pagerduty") == {
        "httpx",
        f"{PACKAGE}.pagerduty.org",
        f"{PACKAGE}.core",
        "nthlayer_pipelines.resources",
    }
    assert f"{PACKAGE}.core" in imports_of(SANDBOX / "pagerduty" / "api.py")
