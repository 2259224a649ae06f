"""The ingestion package's stages import one way: each module only from those before it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import advertisers.ingestion as package

PACKAGE = Path(package.__file__).parent


def stated_order() -> list[str]:
    """The module order the package docstring gives ("Modules import only from ...")."""
    doc = " ".join((package.__doc__ or "").split())
    listed = re.search(r"those listed before them: ([\w, ]+)\.", doc)
    assert listed, "the package docstring no longer states the import order"
    return [name.strip() for name in listed.group(1).split(",")]


def imported_stages(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    prefix = "advertisers.ingestion."
    return {
        node.module.removeprefix(prefix)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix)
    }


def test_it_lists_every_module_of_the_package_in_the_order():
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert sorted(stated_order()) == sorted(modules)


def test_it_imports_each_stage_only_from_earlier_ones():
    order = stated_order()
    backwards = {
        name: sorted(used)
        for name in order
        if (
            used := {
                s
                for s in imported_stages(PACKAGE / f"{name}.py")
                if order.index(s) >= order.index(name)
            }
        )
    }
    assert backwards == {}
