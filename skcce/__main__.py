"""``python -m skcce``: the same command line as the ``skcce`` console script."""

import sys

from skcce.cli import main

if __name__ == "__main__":
    sys.exit(main())
