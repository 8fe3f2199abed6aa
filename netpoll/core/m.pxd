# Augmenting declarations for the compiled build (see fdmutex.pxd): M's fields
# become C struct members, so the scheduler loop's self.runq, self.ticks,
# self.running... are struct accesses.  The methods schedule calls on every
# round are cpdef, so those calls are C calls; they stay Python-callable.
# Fields other modules assign (procs, sched, forking, interrupt) are public.
cdef class M:
    cdef object __weakref__
    cdef public object _backend_generation
    cdef public object _poll_failures
    cdef public object _timer_ids
    cdef public bint edge_triggered
    cdef public bint exited
    cdef public object go_procs
    cdef public object gs
    cdef public object hub
    cdef public object ident
    cdef public object inject
    cdef public object main_g
    cdef public object name
    cdef public object pds
    cdef public object poller
    cdef public object polls
    cdef public object running
    cdef public object runq
    cdef public bint sleeping
    cdef public bint stopping
    cdef public object switches
    cdef public object thread
    cdef public object ticks
    cdef public object timers

    cpdef wake(self)
    cpdef _take_injected(self)
    cpdef _run_timers(self)
    cpdef _poll(self, timeout)
    cpdef _poll_failed(self, exc)
