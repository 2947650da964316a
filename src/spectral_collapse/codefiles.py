"""The source files of a code path: a script and every spectral_collapse module it imports, transitively.

Used where code identity matters: the redraw's staleness warnings (spectral_collapse.staleness) and the training
checkpoint's fingerprint (spectral_collapse.training.training_code_hash).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Iterable


def package_files(scripts: Iterable[Path], package: str = "spectral_collapse") -> set[Path]:
    """The scripts and every module of `package` they import, transitively (static, by `ast`)."""
    spec = importlib.util.find_spec(package)
    pkg_dir = Path(spec.origin).parent if spec and spec.origin else None
    seen: set[Path] = set()
    todo = [Path(s).resolve() for s in scripts]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        if pkg_dir is None:
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for name in _imported_names(tree, path, pkg_dir, package):
            parts = name.split(".")[1:]
            todo.append(pkg_dir / "__init__.py")
            for i in range(1, len(parts) + 1):
                base = pkg_dir.joinpath(*parts[:i])
                todo += [base.with_suffix(".py"), base / "__init__.py"]
    return seen


def _imported_names(tree: ast.AST, path: Path, pkg_dir: Path, package: str) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import inside the package
                try:
                    here = list(path.parent.relative_to(pkg_dir.parent).parts)
                except ValueError:
                    continue
                here = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                module = ".".join([*here, *([module] if module else [])])
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
    return [n for n in names if n == package or n.startswith(package + ".")]
