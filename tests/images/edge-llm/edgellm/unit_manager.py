"""Stand-in of Edge-LLM-Infra's unit_manager: the TCP front of the node's units.

Clients send one JSON request per line to TCP port `config_tcp_server` of
../master_config.json (relative to the working directory, as upstream). `setup`,
`inference` and `exit` for the llm unit are forwarded over the llm unit's socket in the
shared /tmp, one connection per client, and the unit's reply lines are relayed back.
A client that connects to /tmp/rpc.unit_manager gets one status line.

STANDIN_UNIT_MANAGER_INPUT chooses how TCP input becomes requests: `lines` (default, the
fixed upstream unit-manager: split on newlines whatever the segmentation) or `recv` (the
old one: each recv() is parsed as one request, so large or back-to-back lines break with
json format error, the original guide's large-audio fault: docs/original-guide.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable

from edgellm.protocol import (
    LLM_SOCKET,
    RPC_SOCKET,
    UNIT_NAME,
    ErrorCode,
    ProtocolError,
    encode,
    parse_request,
    read_lines,
    read_per_recv,
    reply,
    setup_process,
)

MASTER_CONFIG = "../master_config.json"
# The error returned when a request cannot be forwarded to the llm unit (None: no reply).
FORWARD_FAILURE = {
    "setup": ErrorCode.UNIT_NOT_EXIST,
    "inference": ErrorCode.PUSH_FALSE,
    "exit": None,
}

# How TCP input is split into requests, by STANDIN_UNIT_MANAGER_INPUT.
INPUT_MODES = {"lines": read_lines, "recv": read_per_recv}
INPUT_MODE_VARIABLE = "STANDIN_UNIT_MANAGER_INPUT"

log = logging.getLogger("unit_manager")


class LlmLink:
    """A connection to the llm unit whose reply lines are relayed to one client."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        """Connect to the unit socket (OSError when the llm unit is not there)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(LLM_SOCKET)
        except OSError:
            self.sock.close()
            raise
        self.alive = True
        threading.Thread(target=self._relay, args=(deliver,), daemon=True).start()

    def send(self, data: bytes) -> None:
        """Forward request bytes to the llm unit."""
        self.sock.sendall(data)

    def close(self) -> None:
        """End the connection; the llm unit then closes the sessions opened on it."""
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _relay(self, deliver: Callable[[bytes], None]) -> None:
        """Pass every reply line of the llm unit on until the connection ends."""
        try:
            for line in read_lines(self.sock):
                deliver(line)
        except OSError:
            pass
        finally:
            self.alive = False


class ClientConnection(socketserver.BaseRequestHandler):
    """One TCP client; requests are split on newlines and handled in arrival order."""

    def setup(self) -> None:
        """Prepare the lock that keeps reply lines of two threads from interleaving."""
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.write_lock = threading.Lock()
        self.link: LlmLink | None = None

    def handle(self) -> None:
        """Dispatch each request line until the client disconnects."""
        try:
            for line in self.server.read_requests(self.request):
                self.dispatch(line)
        except OSError as err:
            log.info("client %s: connection lost: %s", self.client_address[0], err)

    def finish(self) -> None:
        """Close the link to the llm unit, which frees this client's sessions."""
        if self.link:
            self.link.close()

    def dispatch(self, line: bytes) -> None:
        """Route one request line, or answer it with its protocol error."""
        request_id, work_id = "0", "sys"
        try:
            message = parse_request(line)
            request_id = str(message.get("request_id", ""))
            work_id = str(message.get("work_id", ""))
            log.info("%s", describe(message))
            self.route(message.get("action"), work_id, message)
        except ProtocolError as err:
            log.info("request_id=%s work_id=%s error=%d", request_id, work_id, err.error.code)
            self.send(reply(request_id, work_id, error=err.error))

    def route(self, action: object, work_id: str, message: dict) -> None:
        """Forward a request for the llm unit; other units and actions do not exist here."""
        if action not in FORWARD_FAILURE:
            raise ProtocolError(ErrorCode.ACTION_MATCH)
        failure = FORWARD_FAILURE[action]
        if work_id.split(".", 1)[0] != UNIT_NAME:
            if failure:
                raise ProtocolError(ErrorCode.UNIT_NOT_EXIST)
            return
        try:
            self.llm().send(encode(message))
        except OSError as err:
            log.info("llm unit unreachable at %s: %s", LLM_SOCKET, err)
            if self.link:
                self.link.close()
            if failure:
                raise ProtocolError(failure) from None

    def llm(self) -> LlmLink:
        """Return the client's link to the llm unit, (re)connecting when needed."""
        if self.link is None or not self.link.alive:
            if self.link:
                self.link.close()
            self.link = LlmLink(self.deliver)
        return self.link

    def deliver(self, line: bytes) -> None:
        """Relay one reply line of the llm unit to the client."""
        log_reply(line)
        self.send(line + b"\n")

    def send(self, data: bytes) -> None:
        """Write reply bytes; a client that has gone is noticed by the reading side."""
        with self.write_lock, contextlib.suppress(OSError):
            self.request.sendall(data)


def describe(message: dict) -> str:
    """Describe a request for the log: ids, action and data sizes, never the data."""
    fields = [
        f"request_id={message.get('request_id', '')}",
        f"action={message.get('action')}",
        f"work_id={message.get('work_id', '')}",
    ]
    data = message.get("data")
    if isinstance(data, dict):
        if "model" in data:
            fields.append(f"model={data['model']}")
        if "index" in data:
            delta = data.get("delta")
            fields += [
                f"index={data['index']}",
                f"finish={data.get('finish')}",
                f"delta_len={len(delta) if isinstance(delta, str) else 0}",
            ]
    return " ".join(fields)


def log_reply(line: bytes) -> None:
    """Log relayed replies, except the intermediate pieces of a streamed result."""
    try:
        message = json.loads(line)
        data, error = message.get("data"), message.get("error") or {}
        if isinstance(data, dict) and data.get("finish") is False:
            return
        log.info(
            "reply request_id=%s work_id=%s error=%s",
            message.get("request_id"),
            message.get("work_id"),
            error.get("code"),
        )
    except (ValueError, AttributeError):
        log.info("reply that is not a JSON object: %.80r", line)


class ClientServer(socketserver.ThreadingTCPServer):
    """The TCP server of the unit-manager; one thread per client."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], read_requests: Callable) -> None:
        """Serve `address`, splitting each client's input with `read_requests`."""
        self.read_requests = read_requests
        super().__init__(address, ClientConnection)


class StatusServer(socketserver.ThreadingUnixStreamServer):
    """The status socket in the shared /tmp."""

    daemon_threads = True

    def __init__(self, path: str, tcp_port: int) -> None:
        """Listen on `path`, replacing a stale socket left by an earlier run."""
        if os.path.exists(path):
            os.unlink(path)
        self.tcp_port = tcp_port
        super().__init__(path, StatusConnection)


class StatusConnection(socketserver.StreamRequestHandler):
    """Answers one status line and closes."""

    def handle(self) -> None:
        """Report the TCP port and whether the llm unit's socket accepts connections."""
        status = {
            "unit": "unit_manager",
            "status": "ok",
            "tcp_port": self.server.tcp_port,
            "llm_socket": LLM_SOCKET,
            "llm_reachable": llm_reachable(),
        }
        self.wfile.write(encode(status))


def llm_reachable() -> bool:
    """Whether the llm unit accepts a connection on its socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(LLM_SOCKET)
        except OSError:
            return False
    return True


def tcp_port(path: str = MASTER_CONFIG) -> int:
    """Read the TCP port from the master config; exit with a message when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            port = json.load(handle).get("config_tcp_server")
    except (OSError, ValueError, AttributeError) as err:
        raise SystemExit(f"unit_manager: cannot read {os.path.abspath(path)}: {err}") from None
    if type(port) is not int or not 0 < port < 65536:
        raise SystemExit(f"unit_manager: config_tcp_server in {path} is not a port: {port!r}")
    return port


def input_mode() -> str:
    """Read STANDIN_UNIT_MANAGER_INPUT; exit with a message when it is not a known mode."""
    mode = os.environ.get(INPUT_MODE_VARIABLE, "") or "lines"
    if mode not in INPUT_MODES:
        known = ", ".join(INPUT_MODES)
        raise SystemExit(f"unit_manager: {INPUT_MODE_VARIABLE}={mode!r} is not one of: {known}")
    return mode


def main() -> None:
    """Serve the TCP port and the status socket until a signal arrives."""
    setup_process()
    port = tcp_port()
    mode = input_mode()
    status_server = StatusServer(RPC_SOCKET, port)
    threading.Thread(target=status_server.serve_forever, daemon=True).start()
    with ClientServer(("0.0.0.0", port), INPUT_MODES[mode]) as server:
        log.info(
            "unit_manager on tcp port %d; input split by %s; llm unit at %s; status at %s",
            port,
            "newlines" if mode == "lines" else "recv() (old unit-manager)",
            LLM_SOCKET,
            RPC_SOCKET,
        )
        try:
            server.serve_forever()
        finally:
            status_server.server_close()
            os.unlink(RPC_SOCKET)


if __name__ == "__main__":
    main()
