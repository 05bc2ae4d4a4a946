"""Print each module over 400 lines and each function over 40; exit 1 if there is any.

A function's size runs from its ``def`` line (decorators not counted) to its last line, as
:mod:`ast` reports them; nested functions count for themselves and inside their parent.
Read from the source (nothing is imported), so it runs anywhere::

    python tools/check_sizes.py loffdata benchmarks recipes tools
    python tools/check_sizes.py --module-lines 400 --function-lines 40 loffdata
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["oversized", "main"]

MODULE_LINES = 400
FUNCTION_LINES = 40


def _python_files(paths: list[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Every function of ``tree`` with its dotted name (``Class.method``, ``outer.inner``)."""
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            name = getattr(child, "name", None)
            inner = f"{prefix}{name}." if name else prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{name}", child
            stack.append((inner, child))


def oversized(path: Path, module_lines: int, function_lines: int) -> list[str]:
    """One line per excess of the file at ``path``: ``path: N lines`` or ``path:L name N``."""
    text = path.read_text()
    found = []
    lines = len(text.splitlines())
    if lines > module_lines:
        found.append(f"{path}: module of {lines} lines (> {module_lines})")
    for name, node in _functions(ast.parse(text, str(path))):
        size = node.end_lineno - node.lineno + 1
        if size > function_lines:
            found.append(f"{path}:{node.lineno}: {name} has {size} lines (> {function_lines})")
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    """Checks every ``.py`` file under the given paths; returns 1 if any is too large."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="files or folders to check")
    parser.add_argument("--module-lines", type=int, default=MODULE_LINES)
    parser.add_argument("--function-lines", type=int, default=FUNCTION_LINES)
    args = parser.parse_args(argv)
    found = [
        line
        for path in _python_files(args.paths)
        for line in oversized(path, args.module_lines, args.function_lines)
    ]
    print("\n".join(found) if found else "sizes ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
