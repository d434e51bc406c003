"""The layering docs/architecture.md draws: each dsw module imports only modules listed above it
(TYPE_CHECKING imports too), and the list names every module there is."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

LISTED = re.findall(
    r"^  ([a-z_/]+)\.py ",
    (ROOT / "docs" / "architecture.md").read_text().split("## Layout", 1)[1],
    flags=re.MULTILINE,
)
ORDER = {"dsw." + path.replace("/", "."): n for n, path in enumerate(LISTED)}


def imported_by(path: str) -> set[str]:
    """The dsw modules the file at `path` (under dsw/) imports."""
    tree = ast.parse((ROOT / "dsw" / path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name in ORDER}


def test_every_module_is_listed() -> None:
    present = {
        "dsw." + str(p.relative_to(ROOT / "dsw").with_suffix("")).replace("/", ".")
        for p in (ROOT / "dsw").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert present == set(ORDER)


def test_no_module_imports_one_listed_below_it() -> None:
    upward = {
        module: sorted(name for name in imported_by(path) if ORDER[name] > ORDER[module])
        for path, module in ((p + ".py", "dsw." + p.replace("/", ".")) for p in LISTED)
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_the_wire_format_imports_nothing_of_dsw_but_the_errors() -> None:
    assert imported_by("messages.py") <= {"dsw.errors"}
