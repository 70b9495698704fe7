"""``python -m vitreg``: the ``vitreg`` command (see :mod:`vitreg.cli`)."""

import sys

from vitreg.cli import main

if __name__ == "__main__":
    sys.exit(main())
