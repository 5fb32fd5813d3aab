"""The default corpus of `deepmem demo`: the documentation strings of Python's standard library.

Docstrings are read from the library's source files with `ast`, never by importing the
modules: importing all of them would run their side effects (`antigravity` opens a browser,
`this` prints) and take long. The order is deterministic (modules sorted by name, then
source order), and nothing touches the network.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIN_WORDS = 20  # shorter docstrings ("Return self.") give nothing to ask about
CORPUS_FILE = "stdlib.jsonl"
# Tests, demos, tooling and the GUI toolkit: noisy or huge docstrings, not library docs.
_SKIPPED_PACKAGES = frozenset(
    {"test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data", "this"}
)


@dataclass(frozen=True)
class StdlibDoc:
    id: str  # e.g. "stdlib:json.dumps"
    title: str  # the qualified name
    module: str
    text: str


def _module_files() -> Iterator[tuple[str, Path]]:
    """(module name, source file) of every public pure-Python stdlib module, sorted."""
    found: dict[str, Path] = {}
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIPPED_PACKAGES:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue  # built into the interpreter or a C extension: no source to read
        found[name] = Path(spec.origin)
        for location in spec.submodule_search_locations or []:
            found.update(_submodule_files(name, Path(location)))
    for name in sorted(found):
        yield name, found[name]


def _submodule_files(package: str, folder: Path) -> Iterator[tuple[str, Path]]:
    """Submodules found by listing folders; `pkgutil.walk_packages` would import them."""
    for info in pkgutil.iter_modules([str(folder)]):
        if info.name.startswith("_") or info.name in _SKIPPED_PACKAGES or "test" in info.name:
            continue
        name = f"{package}.{info.name}"
        if info.ispkg:
            init = folder / info.name / "__init__.py"
            if init.is_file():
                yield name, init
            yield from _submodule_files(name, folder / info.name)
        elif (folder / f"{info.name}.py").is_file():
            yield name, folder / f"{info.name}.py"


def _docs_of(module: str, source: Path) -> Iterator[StdlibDoc]:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return
    yield from _doc(module, module, tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name.startswith("_"):
                continue
            qualified = f"{module}.{node.name}"
            yield from _doc(module, qualified, node)
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(
                        member, ast.FunctionDef | ast.AsyncFunctionDef
                    ) and not member.name.startswith("_"):
                        yield from _doc(module, f"{qualified}.{member.name}", member)


def _doc(
    module: str,
    qualified: str,
    node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef,
) -> Iterator[StdlibDoc]:
    docstring = ast.get_docstring(node, clean=True)
    if not docstring or len(docstring.split()) < MIN_WORDS:
        return
    yield StdlibDoc(
        id=f"stdlib:{qualified}", title=qualified, module=module, text=f"{qualified}\n\n{docstring}"
    )


def iter_stdlib_docs(limit: int | None = None) -> Iterator[StdlibDoc]:
    """Docstrings of the standard library, one document each, in a deterministic order."""
    produced = 0
    for module, source in _module_files():
        for doc in _docs_of(module, source):
            if limit is not None and produced >= limit:
                return
            yield doc
            produced += 1


def stdlib_corpus(target_dir: Path, limit: int | None = None) -> Path:
    """Write up to `limit` stdlib docstrings as `<target_dir>/stdlib.jsonl` (the format
    `build_dataset` reads) and return `target_dir`. Ids are the qualified names, so they are
    stable across rebuilds."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / CORPUS_FILE
    with target.open("w", encoding="utf-8") as out:
        for doc in iter_stdlib_docs(limit):
            record = {
                "id": doc.id,
                "text": doc.text,
                "metadata": {"title": doc.title, "module": doc.module},
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return target_dir
