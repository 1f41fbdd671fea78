"""Functions longer than a limit (60 lines by default), longest first: the style's "no function over 60
lines outside synth/" checked with ``ast``.

    .venv/bin/python benchmarks/function_lengths.py [--limit 60] [PATH ...]

PATH defaults to src/pixelwise; synth/ (procedural drawing, exempt from the rule) is left out unless
named. A function's length counts its lines from ``def`` (decorators included) to its last line; a
nested function counts within its parent and on its own.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def long_functions(paths: list[Path], limit: int) -> list[tuple[int, str, str]]:
    """(lines, "file:line", qualified name) of every function over ``limit`` lines in ``paths``."""
    found = []
    for path in paths:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if path.is_dir() and "synth" in file.relative_to(path).parts:
                continue
            found += _in_file(file, limit)
    return sorted(found, reverse=True)


def _in_file(file: Path, limit: int) -> list[tuple[int, str, str]]:
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                lines = child.end_lineno - start + 1
                if not isinstance(child, ast.ClassDef) and lines > limit:
                    found.append((lines, f"{file}:{child.lineno}", name))
                name += "."
            visit(child, name)

    visit(ast.parse(file.read_text(encoding="utf-8"), str(file)), "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("src/pixelwise")])
    parser.add_argument("--limit", type=int, default=60, help="longest allowed function in lines (default 60)")
    args = parser.parse_args()
    rows = long_functions(args.paths, args.limit)
    for lines, where, name in rows:
        print(f"{lines:5d}  {where}  {name}")
    print(f"{len(rows)} function(s) over {args.limit} lines")


if __name__ == "__main__":
    main()
