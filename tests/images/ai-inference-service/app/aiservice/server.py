"""HTTP/1.1 server: keep-alive, one buffered write per response, one log line per request."""

from __future__ import annotations

import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from aiservice import api

log = logging.getLogger("ai-inference-service")


class Server(ThreadingHTTPServer):
    """A thread per connection; the endpoints' shared state is `service`."""

    daemon_threads = True
    # Connections waiting to be accepted: a burst from the gateway must not
    # stall on the listen queue (Python's default is 5).
    request_queue_size = 256

    def __init__(self, service: api.Service) -> None:
        """Bind to server.host:server.port."""
        self.service = service
        address = (service.settings["server.host"], service.settings["server.port"])
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    """Serves the API. Responses are buffered and flushed once (no Nagle delay)."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1
    server: Server

    def setup(self) -> None:
        """Apply the read timeout (it also ends idle keep-alive connections)."""
        self.timeout = self.server.service.settings["server.read_timeout"]
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self) -> bool:
        """Send `100 Continue` at once; the buffered writer would otherwise hold it."""
        accepted = super().handle_expect_100()
        self.wfile.flush()
        return accepted

    def do_GET(self) -> None:
        """Serve a GET request."""
        self.serve("GET")

    def do_POST(self) -> None:
        """Serve a POST request."""
        self.serve("POST")

    def serve(self, method: str) -> None:
        """Read the body, run the endpoint, write the response, then log and count it."""
        started = time.monotonic()
        body = self.read_body()
        request = api.Request(
            method,
            urlsplit(self.path).path,
            body or b"",
            self.headers.get("X-Request-ID", ""),
        )
        if body is None:
            message = "Invalid request: a body needs Content-Length (no chunked encoding)"
            route, response = "unmatched", api.failure(400, message, request)
        else:
            route, response = self.respond(request)
        self.write(response, request.request_id)
        self.server.service.metrics.observe(method, route, response.status)
        log.info(
            "method=%s path=%s status=%d duration_ms=%.1f request_id=%s client=%s",
            method,
            request.path,
            response.status,
            (time.monotonic() - started) * 1000,
            request.request_id or "-",
            self.client_address[0],
        )

    def read_body(self) -> bytes | None:
        """Read the body by Content-Length; None (closing the connection) when unreadable."""
        length = self.headers.get("Content-Length", "0")
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    def respond(self, request: api.Request) -> tuple[str, api.Response]:
        """Run the endpoint; an unexpected error becomes a logged 500."""
        try:
            return api.handle(self.server.service, request)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return request.path, api.failure(500, "Internal server error", request)

    def write(self, response: api.Response, request_id: str) -> None:
        """Write status, headers and body into the buffer; the server flushes it once."""
        self.send_response_only(response.status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if request_id:
            self.send_header("X-Request-ID", request_id)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)
