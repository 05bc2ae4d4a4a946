"""An environment shaped like the lent GPU machine's, for the runbook's dry run here.

Links the given distributions, and what they require, from this interpreter's
site-packages into OUT (nothing else: not DALI, webdataset, braceexpand, fire, ml-dtypes),
and makes a venv (no pip of its own, no site-packages but OUT) whose Python sees only them.

Usage: python shape_env.py OUT VENV DIST [DIST ...]
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement


def closure(names: list[str]) -> dict[str, md.Distribution]:
    """The distributions ``names`` and, recursively, their requirements (markers evaluated,
    extras not followed)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional requirement this interpreter does not have
        seen[name] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def link(dists: dict[str, md.Distribution], out: Path) -> int:
    """Symlinks the top-level entries of every distribution's files into ``out``; inside a
    namespace folder shared by several distributions (``nvidia/``, no ``__init__.py``) one
    level deeper, so that one distribution does not bring its neighbours along."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        files = [Path(f) for f in dist.files or [] if not str(f).startswith("..")]
        for entry in {_entry(base, f) for f in files}:
            src, dst = base / entry, out / entry
            if src.exists() and not dst.exists() and not dst.is_symlink():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
                count += 1
    return count


def _entry(base: Path, f: Path) -> Path:
    top = base / f.parts[0]
    namespace = (
        len(f.parts) > 2
        and top.is_dir()
        and not (top / "__init__.py").exists()
        and "." not in f.parts[0]
    )
    return Path(*f.parts[:2]) if namespace else Path(f.parts[0])


def main(out: str, venv: str, *names: str) -> None:
    dists = closure(list(names))
    n = link(dists, Path(out))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": venv, "platbase": venv})
    Path(purelib, "device-shaped.pth").write_text(os.path.abspath(out) + "\n")
    print(f"{len(dists)} distributions ({n} entries) linked into {out}; venv {venv}")


if __name__ == "__main__":
    main(*sys.argv[1:])
