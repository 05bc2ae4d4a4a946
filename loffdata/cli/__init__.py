"""The command line: the ``loffdata`` command (:mod:`~loffdata.cli.main`), the flag parser
every CLI of the project shares (:mod:`~loffdata.cli.parse`, :mod:`~loffdata.cli.values`),
and the commands that only the command line uses (:mod:`~loffdata.cli.doctor`,
:mod:`~loffdata.cli.show`).

``main`` is bound when the package is imported (the module is light: commands import their
heavy parts when they run), so ``loffdata.cli.main`` stays the function even after the
submodule of that name has been imported (``from loffdata.cli.main import COMMANDS``).
"""

from __future__ import annotations

from loffdata.cli.main import main

__all__ = ["main"]
