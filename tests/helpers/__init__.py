"""Helpers the test modules import: :mod:`tests.helpers.net` (conns, plugins, checks)
and :mod:`tests.helpers.backends` (pollers built through a registry)."""
