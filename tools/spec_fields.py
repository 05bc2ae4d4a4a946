"""Writes AugmentSpec's field block in loffdata/augment/spec.py from the op registry.

The ops declare their spec fields (``augment/ops/*.py``); type checkers and editors need
them written in the class body. This script renders the block between the two marker lines
of ``spec.py`` (docstring and fields, in the registry's order) from those declarations, so
the ops stay the one source; ``tests/augment/test_spec.py`` fails when the block is stale.

    python tools/spec_fields.py           # exit 1 and say so if spec.py is stale
    python tools/spec_fields.py --write   # rewrite the block (after adding or changing an op)
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

SPEC = Path(__file__).resolve().parents[1] / "loffdata" / "augment" / "spec.py"
BEGIN = "    # fields: written by tools/spec_fields.py from the op registry; do not edit by hand\n"
END = "    # end of the written fields\n"
_SUMMARY = "What to do to each feature map; every probability is per sample (per view)."


def render() -> str:
    """The block between the markers, rendered from the registry's fields and the modes."""
    from loffdata.augment.spec import _FIELDS, TRIVIAL_OPS

    doc = [
        f'    """{_SUMMARY}',
        "",
        "    Fields are declared by the ops (:mod:`loffdata.augment.registry`).",
        "",
    ]
    doc.append("    Attributes:")
    for f in _FIELDS:
        doc += textwrap.wrap(
            f"{f.name}: {f.doc}",
            100,
            initial_indent=" " * 8,
            subsequent_indent=" " * 12,
            break_on_hyphens=False,
        )
    lines = doc + ['    """', ""]
    for f in _FIELDS:
        default = "TRIVIAL_OPS" if f.default is TRIVIAL_OPS else repr(f.default)
        lines.append(f"    {f.name}: {f.type} = {default}")
    return "\n".join(lines) + "\n"


def _bounds(text: str) -> tuple[int, int]:
    start = text.index(BEGIN) + len(BEGIN)
    return start, text.index(END, start)


def current(text: str) -> str:
    """The block between the markers of ``text`` (spec.py's source)."""
    start, end = _bounds(text)
    return text[start:end]


def main(argv: list[str] | None = None) -> int:
    """Checks (or with ``--write`` rewrites) the block; 0 when it is current."""
    argv = sys.argv[1:] if argv is None else argv
    text, block = SPEC.read_text(), render()
    if current(text) == block:
        return 0
    if "--write" in argv:
        start, end = _bounds(text)
        SPEC.write_text(text[:start] + block + text[end:])
        print(f"rewrote the fields of {SPEC}")
        return 0
    print(f"{SPEC}: AugmentSpec's fields are stale; run python tools/spec_fields.py --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
