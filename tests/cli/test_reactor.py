"""The server processes run on the lean epoll reactor, which must behave as Twisted's for users."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import socket, sys
    from scrapoxy_server.reactor import install
    assert install(), "install() refused on a fresh process"
    assert not install(), "a second install() must be a no-op"
    from twisted.internet import protocol, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            if data.startswith(b"boom"):
                raise RuntimeError("protocol bug")
            self.transport.write(data.upper())

    factory = protocol.Factory.forProtocol(Echo)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)

    def client():
        broken = socket.create_connection(address, timeout=5)
        broken.sendall(b"boom")
        # The failing connection is closed, as Twisted's own reactor does.
        assert broken.recv(10) == b"", "the failing connection stayed open"
        good = socket.create_connection(address, timeout=5)
        good.sendall(b"hello")
        assert good.recv(10) == b"HELLO"
        good.close()
        return type(reactor).__name__

    def done(name):
        print(name)
        reactor.stop()

    def failed(failure):
        print("FAILED", failure.getErrorMessage())
        reactor.stop()

    from twisted.internet import threads
    reactor.callWhenRunning(lambda: threads.deferToThread(client).addCallbacks(done, failed))
    reactor.run()
    """
)


def test_lean_reactor_serves_and_survives_a_protocol_that_raises():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LeanEPollReactor", result.stdout + result.stderr
    # The protocol's exception is logged, not swallowed.
    assert "RuntimeError: protocol bug" in result.stderr
