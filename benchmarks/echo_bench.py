#!/usr/bin/env python3
"""Run the echo benchmark from a source checkout: ``python benchmarks/echo_bench.py``.

A thin wrapper over :mod:`netpoll.bench` (the engine behind ``netpoll bench``),
taking the same flags, e.g.::

    python benchmarks/echo_bench.py                 # quick set, ~30 s
    python benchmarks/echo_bench.py --full          # the full set, several minutes
    python benchmarks/echo_bench.py --backend all --scenarios pingpong --conns 100
    python benchmarks/echo_bench.py --full --json > results.json

It puts the checkout's root on ``sys.path`` first, so it measures the code in
this tree even when another netpoll is installed.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netpoll.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
