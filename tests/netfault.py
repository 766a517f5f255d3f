"""A loopback TCP proxy whose connections can be frozen: bytes stop flowing both
ways and nothing is closed, as when a peer's network silently goes away."""

from __future__ import annotations

import socket
import threading


class FreezableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen: set[tuple[str, int]] = set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self, client_address: tuple[str, int]) -> None:
        """Stop the connection whose client end is at `client_address`."""
        with self._lock:
            self._frozen.add(client_address)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, address = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, address), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, address: tuple[str, int]) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            with self._lock:
                frozen = address in self._frozen
            if frozen:
                return  # swallow this and everything after; close nothing
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                sink.sendall(data)
            except OSError:
                return
