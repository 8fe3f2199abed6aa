"""Tests of the poller backends: conformance, the registry, the kqueue emulation."""
