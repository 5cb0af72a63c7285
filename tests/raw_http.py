"""A tiny raw-socket HTTP/1.1 server on 127.0.0.1 for misbehaving-server tests (slow drip, huge bodies).

``RawServer(route)`` serves each connection on its own thread, keep-alive, one request after another.
``route(method, path)`` returns a `Reply`: status, headers, body and ``drip_s`` (when set, the headers go out
at once and the body one byte per ``drip_s`` seconds, as a trickling server or middlebox would send it).
``head_drip_s`` trickles the status line and headers the same way; the body then goes out at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import attrs

__all__ = ["Reply", "RawServer", "raw_server"]


@attrs.frozen(kw_only=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: Mapping[str, str] = attrs.field(factory=lambda: {"Content-Type": "application/json"})
    drip_s: float | None = None
    head_drip_s: float | None = None
    hang_up: bool = False  # close the connection once the reply is out (without saying so in a header)


Route = Callable[[str, str], Reply]


class RawServer:
    def __init__(self, route: Route) -> None:
        self.route = route
        self.stop = threading.Event()
        self.dripped = 0  # body bytes sent by dripping replies
        self.head_dripped = 0  # status-line and header bytes sent by head-dripping replies
        self.requests: list[tuple[str, str]] = []
        self.hung_up = threading.Semaphore(0)  # released once per connection closed by a `hang_up` reply
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read_request(self, conn: socket.socket, buffer: bytearray) -> tuple[str, str] | None:
        while b"\r\n\r\n" not in buffer:
            if self.stop.is_set():
                return None
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None  # the client hung up
            if not data:
                return None
            buffer.extend(data)
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(rest) < length:
            try:
                data = conn.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            rest += data
        buffer[:] = rest[length:]
        return method, path

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        return len(self._threads)

    def _connection(self, conn: socket.socket) -> None:
        if self._serve_connection(conn):
            self.hung_up.release()

    def _serve_connection(self, conn: socket.socket) -> bool:
        """Serve ``conn`` until it ends; True when a `hang_up` reply ended it (it is closed by then)."""
        conn.settimeout(0.2)
        buffer = bytearray()
        with conn:
            while not self.stop.is_set():
                request = self._read_request(conn, buffer)
                if request is None:
                    return False
                with self._lock:
                    self.requests.append(request)
                reply = self.route(*request)
                headers = {**reply.headers, "Content-Length": str(len(reply.body))}
                head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                try:
                    if reply.head_drip_s is not None:
                        if not self._drip_head((head + "\r\n").encode("latin-1"), conn, reply.head_drip_s):
                            return False
                        conn.sendall(reply.body)
                        continue
                    conn.sendall(head.encode("latin-1") + b"\r\n")
                    if reply.drip_s is None:
                        conn.sendall(reply.body)
                        if reply.hang_up:
                            break
                        continue
                    for i in range(len(reply.body)):
                        if self.stop.wait(reply.drip_s):
                            return False
                        conn.sendall(reply.body[i : i + 1])
                        with self._lock:
                            self.dripped += 1
                except OSError:
                    return False  # the client hung up
            else:
                return False
        return True

    def _drip_head(self, head: bytes, conn: socket.socket, drip_s: float) -> bool:
        for i in range(len(head)):
            if self.stop.wait(drip_s):
                return False
            conn.sendall(head[i : i + 1])
            with self._lock:
                self.head_dripped += 1
        return True

    def close(self) -> None:
        self.stop.set()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._sock.close()


@contextmanager
def raw_server(route: Route) -> Iterator[RawServer]:
    server = RawServer(route)
    try:
        yield server
    finally:
        server.close()
