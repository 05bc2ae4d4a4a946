import subprocess
import sys

import loffdata


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_is_light_and_lazy():
    heavy = "[m for m in ('torch', 'nvidia.dali', 'timm', 'webdataset') if m in sys.modules]"
    assert _python(f"import sys, loffdata; print({heavy})") == "[]"


def test_public_names_resolve_without_importing_dali():
    resolve = "[getattr(loffdata, n) for n in loffdata.__all__]"
    assert _python(f"import sys, loffdata; {resolve}; print('nvidia.dali' in sys.modules)") == "False"
    assert all(getattr(loffdata, n) is not None for n in loffdata.__all__)


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loffdata.nope  # noqa: B018
