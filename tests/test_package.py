"""The package as installed: light imports, public names, dependencies declared by use."""

import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import loffdata


def _python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow
def test_import_is_light_and_lazy():
    heavy = "[m for m in ('torch', 'nvidia.dali', 'timm', 'webdataset') if m in sys.modules]"
    assert _python(f"import sys, loffdata; print({heavy})") == "[]"


@pytest.mark.slow
def test_public_names_resolve_without_importing_dali():
    resolve = "[getattr(loffdata, n) for n in loffdata.__all__]"
    assert (
        _python(f"import sys, loffdata; {resolve}; print('nvidia.dali' in sys.modules)") == "False"
    )
    for name in loffdata.__all__:  # each public name is the loffdata object of that name
        obj = getattr(loffdata, name)
        if name == "__version__":
            assert isinstance(obj, str) and obj[:1].isdigit()
            continue
        assert obj.__module__.startswith("loffdata.") and obj.__name__ in (
            name,
            name.removesuffix("_features"),
        ), name
        assert getattr(importlib.import_module(obj.__module__), obj.__name__) is obj, name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loffdata.nope  # noqa: B018


# -- subpackages: lazy, explicit public names ------------------------------------------------

PACKAGES = ["format", "storage", "stream", "extract", "train", "augment"]


@pytest.mark.slow
def test_subpackages_import_light_and_export_their_names():
    code = (
        "import importlib, sys\n"
        f"pkgs = [importlib.import_module('loffdata.' + p) for p in {PACKAGES!r}]\n"
        "light = 'torch' not in sys.modules\n"
        "bad = [(p.__name__, n) for p in pkgs for n in p.__all__ if getattr(p, n, None) is None]\n"
        "print(light, bad, all(p.__all__ for p in pkgs))"
    )
    assert _python(code) == "True [] True"


# -- dependencies: every import declared, the core free of the extras -----------------------

ROOT = Path(__file__).resolve().parents[1]
#: What each part of the tree may import besides the core dependencies (extras by name).
_EXTRAS_OF = [
    ("loffdata/extract/", {"extract"}),
    ("loffdata/train/", {"train"}),
    ("loffdata/augment/dali_backend.py", {"dali", "dali-cuda12"}),
    ("loffdata/cli/doctor.py", {"dali", "dali-cuda12"}),  # reports the DALI version when installed
    ("loffdata/cli/show.py", {"show"}),
    ("loffdata/", set()),
    ("tools/", {"extract", "train", "dev"}),
    ("recipes/", {"extract", "train", "dev"}),
]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, set[str]]:
    """Extra name ("" for the core) -> distributions it installs, self-references expanded."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = {"": project["dependencies"], **project["optional-dependencies"]}

    def expand(extra: str) -> set[str]:
        out = set()
        for req in raw[extra]:
            name, _, rest = re.match(r"([A-Za-z0-9._-]+)(\[([^\]]*)\])?", req).groups()
            if _norm(name) == "loffdata":
                out |= set().union(*(expand(e.strip()) for e in rest.split(",")))
            else:
                out.add(_norm(name))
        return out

    return {extra: expand(extra) for extra in raw}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party(path: Path) -> set[str]:
    local = {p.stem for p in path.parent.glob("*.py")}
    return {
        m
        for m in _imports(path)
        if m not in sys.stdlib_module_names and m not in local and m not in ("loffdata", "tests")
    }


def undeclared_imports() -> list[str]:
    """``"file: module"`` for each import no allowed distribution provides."""
    declared, providers = _declared(), importlib.metadata.packages_distributions()
    problems = []
    for path in sorted(
        p for d in ("loffdata", "tools", "recipes") for p in (ROOT / d).rglob("*.py")
    ):
        rel = path.relative_to(ROOT).as_posix()
        extras = next(e for prefix, e in _EXTRAS_OF if rel.startswith(prefix))
        allowed = declared[""].union(*(declared[e] for e in extras))
        for module in sorted(_third_party(path)):
            if not {_norm(d) for d in providers.get(module, [])} & allowed:
                problems.append(f"{rel}: {module}")
    return problems


def test_every_third_party_import_is_declared_for_its_part():
    assert undeclared_imports() == []


def test_the_declaration_check_finds_an_undeclared_import(tmp_path, monkeypatch):
    (tmp_path / "loffdata").mkdir()
    (tmp_path / "loffdata" / "core.py").write_text(
        "import s3fs\nimport numpy\nfrom PIL import Image\n"
    )
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert undeclared_imports() == ["loffdata/core.py: PIL", "loffdata/core.py: s3fs"]


def test_dali_extras_are_one_cuda_major_each_and_dev_has_one():
    declared = _declared()
    assert declared["dali"] == {"nvidia-dali-cuda130"} and declared["dali-cuda12"] == {
        "nvidia-dali-cuda120"
    }
    assert len({d for d in declared["dev"] if d.startswith("nvidia-dali")}) == 1
    assert len({d for d in declared["all"] if d.startswith("nvidia-dali")}) == 1


@pytest.mark.slow
def test_core_code_paths_import_no_extra():
    core = [
        "loffdata.loader",
        "loffdata.stream.dataset",
        "loffdata.ops.verify",
        "loffdata.augment.torch_backend",
        "loffdata.storage.cache",
        "loffdata.format.writer",
    ]
    extras = "('timm', 'PIL', 'webdataset', 'fire', 'yaml', 's3fs', 'nvidia')"
    code = (
        f"import importlib, sys\nfor m in {core!r}: importlib.import_module(m)\n"
        f"print([m for m in {extras} if m in sys.modules])"
    )
    assert _python(code) == "[]"
