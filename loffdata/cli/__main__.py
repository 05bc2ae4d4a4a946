"""``python -m loffdata.cli``: the same as the ``loffdata`` command."""

from loffdata.cli.main import main

if __name__ == "__main__":
    main()
