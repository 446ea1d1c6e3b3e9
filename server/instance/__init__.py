"""``scrapoxy-instance``: a small forward proxy (CONNECT + absolute-form HTTP).

The ``local`` provider runs it as child processes on loopback, each egressing from its own
``127.0.0.N`` source address; users can also run it on a VM. See ``cli`` for the process
protocol (the ``listening on HOST:PORT`` line) and ``proxy`` for the wire behaviour.
"""
