# Augmenting declarations for the compiled build (setup.py; gevent's
# src/gevent/_gevent_c_*.pxd pattern): FDMutex becomes an extension type whose
# fields are C struct members.  The .py stays the one source of logic; this
# file lists exactly its __slots__ (tests/test_build.py checks).  FD reads and
# writes the fields from another module, so they are public.
cdef class FDMutex:
    cdef public bint _destroyed
    cdef public bint closed
    cdef public Py_ssize_t refs
    cdef public object rl
    cdef public object rwait
    cdef public object state_lock
    cdef public object wl
    cdef public object wwait
