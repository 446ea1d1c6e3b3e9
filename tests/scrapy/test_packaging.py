"""``pip install '.[scrapy]'`` brings every module that ``scrapoxy_scrapy`` and the example
project import: a user who follows the README must not meet a ``ModuleNotFoundError``.

Read from the sources (``ast``), not from the installed metadata, so the test judges this
checkout's ``setup.py`` even where an older copy of the project is installed.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _string_list(node: ast.AST) -> list[str]:
    if isinstance(node, ast.List):
        return [element.value for element in node.elts
                if isinstance(element, ast.Constant) and isinstance(element.value, str)]
    return []


def scrapy_extra_requirements() -> set[str]:
    """Distribution names of ``install_requires`` plus the ``scrapy`` extra, from setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    constants = {target.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
    names: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.keyword):
            continue
        if node.arg == "install_requires":
            names += _string_list(node.value)
        elif node.arg == "extras_require" and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and key.value == "scrapy":
                    if isinstance(value, ast.Name):
                        value = constants[value.id]
                    names += _string_list(value)
    return {re.split(r"[<>=!~\[; ]", name, maxsplit=1)[0].lower().replace("_", "-")
            for name in names}


def runtime_imports(folder: Path) -> set[str]:
    """Top-level modules imported by the files of ``folder``, except under TYPE_CHECKING."""
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_scrapy_extra_covers_every_import_of_the_middlewares_and_the_example_project():
    ours = {"scrapoxy_scrapy", "scrapoxy_server", "example_project", "__future__"}
    imported = (runtime_imports(ROOT / "scrapoxy_scrapy")
                | runtime_imports(ROOT / "example_project")) - ours - set(sys.stdlib_module_names)
    distributions = importlib.metadata.packages_distributions()
    declared = scrapy_extra_requirements()
    missing = {module: distributions.get(module) for module in imported
               if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
               & declared}
    assert not missing, f"imported but not in install_requires or the scrapy extra: {missing}"

