"""``python -m netpoll.bench``: the same benchmark as ``netpoll bench``."""

from __future__ import annotations

import sys

from netpoll.bench import main

sys.exit(main())
