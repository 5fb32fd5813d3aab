"""Fail when a module or a function grows too long to read in one sitting.

Rules:
- every ``.py`` file under ``layers/common/deepmem`` has at most ``MAX_FILE_LINES`` lines
  (physical lines, as ``wc -l`` counts them);
- every function or method under ``layers/common/deepmem``, ``functions/``, ``bench/`` and
  ``scripts/`` has at most ``MAX_FUNCTION_LINES`` code lines: the lines of its body (the
  signature and decorators left out) that hold code, so blank lines, comment-only lines and
  the docstring do not count. A nested function counts towards the function around it and is
  checked on its own as well.

Run from anywhere: ``uv run python scripts/check_sizes.py``. Exit status 0 when clean, 1 with
one line per offender otherwise. Standard library only.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "layers" / "common" / "deepmem"
FUNCTION_ROOTS = (PACKAGE, ROOT / "functions", ROOT / "bench", ROOT / "scripts")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

# Functions allowed past MAX_FUNCTION_LINES because they are tables (one entry a line, read
# down, nothing to split), keyed "path/relative/to/repo.py::Qualified.name", each with the
# reason. Empty: nothing needs it so far.
EXCEPTIONS: dict[str, str] = {}

_NOT_CODE = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    }
)

type _Function = ast.FunctionDef | ast.AsyncFunctionDef


def code_lines(source: str) -> set[int]:
    """Line numbers (1-based) that hold at least part of a code token."""
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def _docstring_lines(node: _Function) -> set[int]:
    first = node.body[0]
    is_docstring = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    if not is_docstring:
        return set()
    return set(range(first.lineno, (first.end_lineno or first.lineno) + 1))


def function_length(node: _Function, code: set[int]) -> int:
    """Code lines of a function's body, its docstring left out."""
    start = node.body[0].lineno
    end = node.end_lineno or start
    body = set(range(start, end + 1)) - _docstring_lines(node)
    return len(body & code)


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, _Function]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, f"{name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _python_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def check_file_sizes() -> list[str]:
    offenders = []
    for path in _python_files(PACKAGE):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_FILE_LINES:
            offenders.append(f"{_relative(path)}: {count} lines (max {MAX_FILE_LINES})")
    return offenders


def check_function_sizes() -> list[str]:
    offenders = []
    for root in FUNCTION_ROOTS:
        for path in _python_files(root):
            source = path.read_text(encoding="utf-8")
            code = code_lines(source)
            for name, node in _functions(ast.parse(source, filename=str(path))):
                key = f"{_relative(path)}::{name}"
                length = function_length(node, code)
                if length > MAX_FUNCTION_LINES and key not in EXCEPTIONS:
                    offenders.append(
                        f"{key} (line {node.lineno}): {length} code lines"
                        f" (max {MAX_FUNCTION_LINES})"
                    )
    return offenders


def main() -> int:
    offenders = check_file_sizes() + check_function_sizes()
    for offender in offenders:
        print(offender)
    if offenders:
        print(f"check_sizes: {len(offenders)} offender(s)", file=sys.stderr)
        return 1
    print("check_sizes: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
