"""``loffdata-shard`` from a checkout: the code is :mod:`loffdata.extract.command` (see its
docs)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.extract.command import console, main  # noqa: E402, F401 (main: for in-process tests)

if __name__ == "__main__":
    console()
