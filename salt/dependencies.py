"""The salt/ source files a stage's results depend on, found by following its imports.

Snakemake re-runs a job when one of its input files changes, but it does not look inside the
`salt <stage>` command a rule runs. So each rule lists the package files its stage executes as
inputs, and this module derives that list from the code itself instead of a hand-kept table
that drifts (a helper imported by a reader, the cost model imported by evaluation).

The walk reads the source with `ast`, never imports it, and follows every `import` of a
`salt.*` module, including imports inside functions (evaluation imports the cost model
lazily; it is still part of its result). A package's `__init__.py` counts only when the code
imports a name from the package itself (`from salt.models import build_model`), not when it
imports one of its submodules (`from salt.models.spec import ModelSpec`): re-exports that a
stage never touches are not part of its result.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "salt"
# Modules every stage runs that shape how a command is called and a result written and labelled,
# never its values: the package version, the command line, atomic writes, the provenance record.
# Following them would make an edit to one re-run the whole pipeline, downloads' preprocessing included.
NOT_IN_RESULT = ("salt", "salt.cli", "salt.atomic", "salt.provenance")


def source_files(modules: Iterable[str], root: str | Path = ".",
                 exclude: Iterable[str] = NOT_IN_RESULT) -> list[str]:
    """Paths (relative to `root`, '/'-separated, sorted) of `modules` and every salt module they
    import, directly or through each other, except the modules in `exclude` (not followed either).
    `root` is the directory that holds `salt/`."""
    base = Path(root)
    seen: set[str] = set(exclude)
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(set(_imports(base, module)) - seen)
    return sorted(_module_path(base, m).relative_to(base).as_posix() for m in seen - set(exclude))


def _module_path(base: Path, module: str) -> Path:
    parts = module.split(".")
    file = base.joinpath(*parts).with_suffix(".py")
    if file.is_file():
        return file
    package = base.joinpath(*parts, "__init__.py")
    if package.is_file():
        return package
    raise FileNotFoundError(f"{module}: no {file} or {package} under {base}")


def _is_module(base: Path, module: str) -> bool:
    parts = module.split(".")
    return base.joinpath(*parts).with_suffix(".py").is_file() or base.joinpath(*parts, "__init__.py").is_file()


@lru_cache(maxsize=None)
def _parsed(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(base: Path, module: str) -> Iterable[str]:
    """The salt modules that `module` imports anywhere in its body."""
    path = _module_path(base, module)
    tree = _parsed(path, path.stat().st_mtime_ns)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            submodules = [f"{target}.{a.name}" for a in node.names if _is_module(base, f"{target}.{a.name}")]
            yield from submodules
            if len(submodules) < len(node.names):   # a name defined by the module (or package) itself
                yield target
