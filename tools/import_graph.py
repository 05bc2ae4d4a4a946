"""Print the package's import graph between its rooms as a Mermaid flowchart.

A room is a subpackage of ``loffdata`` (``loffdata/stream/``) or a module at its root
(``loffdata/errors.py``); an arrow ``a --> b`` says that some module of ``a`` imports one of
``b``. Read from the source with :mod:`ast` (nothing is imported), so it runs anywhere::

    python tools/import_graph.py            # Mermaid text for docs/architecture.md
    python tools/import_graph.py --counts   # rooms, arrows, floors (longest import chain)
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "loffdata"


def room_of(module: str) -> str | None:
    """``loffdata.stream.plan`` -> ``stream``; ``loffdata.errors`` -> ``errors``."""
    parts = module.split(".")
    if parts[0] != "loffdata" or len(parts) < 2:
        return None
    return parts[1]


def imports_of(path: Path) -> set[str]:
    """Every ``loffdata...`` module that the file at ``path`` imports (absolute imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("loffdata.")}


def graph() -> dict[str, set[str]]:
    """room -> the rooms it imports (itself and the package face left out)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.name in ("__init__.py", "__main__.py") and len(rel.parts) == 1:
            continue
        room = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        targets = edges.setdefault(room, set())
        for module in imports_of(path):
            other = room_of(module)
            if (
                other
                and other != room
                and ((ROOT / other).is_dir() or (ROOT / f"{other}.py").exists())
            ):
                targets.add(other)
    return edges


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """A room's floor: 1 + the highest floor it imports (1 for a room that imports none)."""

    @cache
    def floor(room: str) -> int:
        return 1 + max((floor(t) for t in edges.get(room, ())), default=0)

    return {room: floor(room) for room in edges}


def mermaid(edges: dict[str, set[str]]) -> str:
    lines = ["flowchart TD"]
    for room in sorted(edges, key=lambda r: -floors(edges)[r]):
        lines += [f"    {room} --> {target}" for target in sorted(edges[room])]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    edges = graph()
    if "--counts" in argv:
        arrows = sum(len(t) for t in edges.values())
        print(f"rooms {len(edges)}, arrows {arrows}, floors {max(floors(edges).values())}")
    else:
        print(mermaid(edges))


if __name__ == "__main__":
    main(sys.argv[1:])
