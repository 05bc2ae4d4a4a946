"""The command line: the ``loffdata`` command (:mod:`~loffdata.cli.main`), the flag parser
every CLI of the project shares (:mod:`~loffdata.cli.parse`, :mod:`~loffdata.cli.values`),
and the commands that only the command line uses (:mod:`~loffdata.cli.doctor`,
:mod:`~loffdata.cli.show`).

``main`` is imported on first use, so the parser modules can be imported alone.
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {"main": "loffdata.cli.main"}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
