"""``python -m netpoll``: the ``netpoll`` command (see :mod:`netpoll.cli`)."""

from __future__ import annotations

import sys

from netpoll.cli import main

if __name__ == "__main__":
    sys.exit(main())
