"""What the project's own source files import, read with `ast` (for the layering tests).

An import inside a function or behind TYPE_CHECKING counts as any other: a
type-only import still ties two files together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sluice

SRC = Path(sluice.__file__).resolve().parent  # .../src/sluice


def imported_names(path: Path, src: Path = SRC) -> set[str]:
    """Absolute names `path` (a file of package `src`) imports: each module, and for
    `from X import y` also `X.y`, which is a module when `y` is one."""
    package = ".".join(path.relative_to(src.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def module_path(name: str, src: Path = SRC) -> Path | None:
    """The source file of a sluice module (None for other packages or non-modules)."""
    parts = name.split(".")
    if parts[0] != "sluice":
        return None
    base = src.parent.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None
