"""Several master processes on one port, one manager: the leader and its master workers.

``master.processes = N`` makes the ``scrapoxy-server`` process (the *leader*: manager,
commander, and a master of its own) start N - 1 worker processes that each run only a master,
all listening on the same address with ``SO_REUSEPORT`` so the kernel spreads new client
connections over them. The leader keeps the one instance view and the one stats sink; workers
mirror the view and report their traffic back (``channel``, ``leader``, ``worker``).
"""
