# Augmenting declarations for the compiled build (setup.py; gevent's
# src/gevent/_gevent_c_*.pxd pattern): FDMutex becomes an extension type whose
# fields are C struct members and whose lock methods are called without a
# Python-level attribute lookup from other compiled modules.  The .py stays
# the one source of logic; this file must list its fields and methods.
cdef class FDMutex:
    cdef object _lock
    cdef list _rwait
    cdef list _wwait
    cdef public bint closed
    cdef public Py_ssize_t refs
    cdef public bint _rlocked
    cdef public bint _wlocked

    cpdef bint incref(self)
    cpdef bint decref(self) except? -1
    cpdef bint incref_and_close(self)
    cpdef bint rwlock(self, bint read)
    cdef bint _rwlock_slow(self, bint read)
    cpdef bint rwunlock(self, bint read)
