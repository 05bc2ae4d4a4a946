"""``python -m loffdata``: the same as the ``loffdata`` console command (see
:mod:`loffdata.cli`)."""

from loffdata.cli.main import main

if __name__ == "__main__":
    main()
