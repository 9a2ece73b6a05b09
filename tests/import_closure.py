"""Which project files a module runs: its import closure over components/ and pipelines/, read with ast.

Every `import` and `from ... import` counts, wherever it is in the file (inside functions and
`if TYPE_CHECKING:` too): a stage may reach that code. Importing `components.io` also runs the package's
`components/__init__.py`, so a package's __init__.py is in the closure of everything inside it.
Third-party and standard-library imports are ignored; imports built from strings (importlib) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_PACKAGES = ("components", "pipelines")


def module_file(root: Path, module: str) -> Path | None:
    """The project file of a dotted module name (a package's __init__.py), or None if it is not the project's."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(module: str) -> list[str]:
    """'components.kinds.image' -> ['components', 'components.kinds', 'components.kinds.image']."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(root: Path, path: Path) -> set[str]:
    """Dotted names of every module a file imports, relative imports made absolute; `from pkg import x`
    names pkg.x when that is a module of the project, else pkg (x is an attribute of its __init__)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])  # the package this file is in
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..kinds import image
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(
                f"{base}.{alias.name}" for alias in node.names if module_file(root, f"{base}.{alias.name}") is not None
            )
    return names


def import_closure(root: Path, module: str) -> set[Path]:
    """The project files (relative to root) that `python -m module` runs: module, its packages' __init__.py,
    and everything they import, transitively. Raises FileNotFoundError if module is not a project file."""
    if module_file(root, module) is None:
        raise FileNotFoundError(f"{module}: no such module under {root}")
    seen: set[Path] = set()
    pending = with_parents(module)
    while pending:
        path = module_file(root, pending.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in imported_modules(root, path):
            pending.extend(with_parents(name))
    return {path.relative_to(root) for path in seen}
