"""``python -m vitreg``: the ``vitreg`` command (see :mod:`vitreg.cli.main`)."""

import sys

from vitreg.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
