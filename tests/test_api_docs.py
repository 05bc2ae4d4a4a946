"""docs/api.md documents every public name of every package, in one place."""

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"
PACKAGES = [
    "loffdata",
    "loffdata.errors",
    "loffdata.format",
    "loffdata.storage",
    "loffdata.stream",
    "loffdata.augment",
    "loffdata.loader.loaderconfig",
    "loffdata.loader",
    "loffdata.ops",
    "loffdata.ops.verify",
    "loffdata.cli",
    "loffdata.cli.main",
    "loffdata.extract",
    "loffdata.train",
    "loffdata.util",
    "loffdata.compat",
    "loffdata.defaults",
    "loffdata.redact",
    "loffdata.protocols",
    "loffdata.safeio",
]


def _sections() -> dict[str, set[str]]:
    sections, current = {}, None
    for line in API.read_text().splitlines():
        heading = re.fullmatch(r"## `([\w.]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), set())
        elif current is not None and (row := re.match(r"\| `(\w+)` \|", line)):
            current.add(row.group(1))
    return sections


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented_under_its_package(package):
    documented = _sections().get(package)
    assert documented is not None, f"docs/api.md has no section for {package}"
    assert set(importlib.import_module(package).__all__) == documented


def test_every_subpackage_is_on_the_page():
    import pkgutil

    import loffdata

    subpackages = {f"loffdata.{m.name}" for m in pkgutil.iter_modules(loffdata.__path__) if m.ispkg}
    assert subpackages <= set(PACKAGES)
