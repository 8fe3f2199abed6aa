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
    cdef public bint rhint
    cdef public bint short_read_drains
    cdef public object m
