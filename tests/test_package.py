import subprocess
import sys

import loffdata


def test_import_is_light_and_lazy():
    code = (
        "import sys, loffdata; "
        "heavy = [m for m in ('torch', 'nvidia.dali', 'timm', 'webdataset') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_resolve_without_importing_dali():
    code = (
        "import sys, loffdata; "
        "[getattr(loffdata, n) for n in loffdata.__all__]; "
        "print('nvidia.dali' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert all(getattr(loffdata, n) is not None for n in loffdata.__all__)


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loffdata.nope  # noqa: B018
