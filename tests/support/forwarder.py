"""A TCP forwarder the test controls, to put in front of PostgreSQL or Redis and take them away.

`stop()` closes the listening socket and every forwarded connection at once (as a database that went away
would look to the gateway); `start()` listens again on the same port. `hang()` keeps the port open but answers
nothing (a paused server, a network black hole: only a timeout ends a call); `answer()` ends that. The machine's
own services are never touched.
"""

from __future__ import annotations

import socket
import threading


class Forwarder:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._hanging = False

    def start(self) -> Forwarder:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """The service is gone: no new connections, and the open ones are cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        self._cut()

    def hang(self) -> None:
        """The service stops answering but still accepts: the open connections are cut, and new ones are read
        from and never answered."""
        self._hanging = True
        self._cut()

    def answer(self) -> None:
        """Forward new connections again (after `hang`)."""
        self._hanging = False
        self._cut()  # the connections that were never answered

    def _cut(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            if self._hanging:
                with self._lock:
                    self._connections.add(client)
                threading.Thread(target=_swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _swallow(client: socket.socket) -> None:
    """Read what the client sends and answer nothing, until the connection is cut."""
    try:
        while client.recv(65536):
            pass
    except OSError:
        pass


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for side in (source, sink):
            try:
                side.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
