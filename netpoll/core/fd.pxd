# Augmenting declarations for the compiled build (see fdmutex.pxd): FD's fields
# become C struct members.  The two it reads on every operation are typed, so
# Cython infers the type of the locals read from them (mu = self._mu,
# pd = self.pd) and mu.rl, mu.closed, pd.rd, pd.rg... are struct accesses, not
# attribute lookups; pd.wait(...) is a C call (PollDesc.wait is cpdef).
# readinto, read, write and set_deadline_in stay def: their callers are
# Python code, which a cpdef would not speed up, and a cpdef's Python wrapper
# adds a frame to tracebacks (tests/test_build.py compares them with pure).
# _write_rest is called only from write, so cpdef makes that a C call.
from netpoll.core.fdmutex cimport FDMutex
from netpoll.core.polldesc cimport PollDesc

cdef class FD:
    cdef public object _close_error
    cdef public object _csema
    cdef public FDMutex _mu
    cdef public object _seq
    cdef public object is_file
    cdef public PollDesc pd
    cdef public object sock
    cdef public object sysfd

    cpdef _write_rest(self, data, nn, PollDesc pd)
