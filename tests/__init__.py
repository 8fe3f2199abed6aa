"""netpoll's test suite (a package, so that ``tests.helpers`` imports without path tricks)."""
