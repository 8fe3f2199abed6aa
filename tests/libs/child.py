"""The child process of :func:`tests.libs.harness.run_child`.

``python -m tests.libs.child MODULE PATCH SERVER_JSON``: with ``PATCH`` =
``all`` it calls :func:`netpoll.patch.all` before importing anything else
(the harness, the test module, the library), as a gevent program calls
``patch_all()`` first; then it runs the module's scenarios.
``python -m tests.libs.child --controls JSON`` runs every listed module's
unpatched controls in one process (see :func:`tests.libs.harness.run_controls`).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1] == "--controls":
        from tests.libs.harness import controls_main

        sys.exit(controls_main(sys.argv[2]))
    if sys.argv[2] == "all":
        import netpoll.patch

        netpoll.patch.all()
    from tests.libs.harness import child_main

    sys.exit(child_main(sys.argv[1:]))
