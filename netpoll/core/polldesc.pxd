# Augmenting declarations for the compiled build (see fdmutex.pxd): PollDesc's
# fields become C struct members; its methods stay Python-callable.
cdef class PollDesc:
    cdef object __weakref__
    cdef public object lock
    cdef public object fd
    cdef public object fdseq
    cdef public object token
    cdef public bint closing
    cdef public bint is_file
    cdef public object rg
    cdef public object wg
    cdef public double rd
    cdef public double wd
    cdef public double rtimer
    cdef public double wtimer
    cdef public int rhint
    cdef public bint short_read_drains
    cdef public object m

    # The methods FD (fd.pxd) and the other PollDesc methods call per
    # operation: cpdef makes those calls C calls; they stay Python-callable.
    cpdef _expired(self, mode)
    cpdef check(self, mode)
    cpdef raise_for(self, code)
    cpdef prepare(self, mode)
    cpdef wait(self, mode, first=*)
    cpdef _fail(self, old, mode)
