"""Go's internal/poll and runtime netpoller: FD, fdMutex, pollDesc, Gs and Ms, the plugin manager.

Knows no sockets API (see docs/design.md for the rooms of this package).
"""
