"""Wire format shared by the unit-manager and the llm unit: JSON lines and reply objects."""

from __future__ import annotations

import enum
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Iterator

# The IPC endpoints live in /tmp, the volume that unit-manager and llm share.
LLM_SOCKET = "/tmp/llm/llm.sock"
RPC_SOCKET = "/tmp/rpc.unit_manager"

UNIT_NAME = "llm"
STREAM_OBJECT = "llm.utf-8.stream"

# A line longer than this is dropped (the fixed upstream unit-manager caps its buffer too).
MAX_LINE_BYTES = 8 * 1024 * 1024
OVERSIZED_LINE = b"<oversized line dropped>"
RECV_BYTES = 65536
# The old unit-manager parsed what one recv() into a buffer of this size returned.
OLD_RECV_BYTES = 4096


class ErrorCode(enum.Enum):
    """Error codes of the unit-manager protocol, with their messages."""

    JSON_FORMAT = (-2, "json format error")
    ACTION_MATCH = (-3, "action match false")
    PUSH_FALSE = (-4, "inference data push false")
    MODEL_LOADING = (-5, "Model loading failed.")
    UNIT_NOT_EXIST = (-6, "Unit Does Not Exist")
    TASK_FULL = (-21, "task full")
    EMPTY_DATA = (-24, "inference data is empty")
    STREAM_INDEX = (-25, "Stream Index Error")

    @property
    def code(self) -> int:
        """The numeric code carried in `error.code`."""
        return self.value[0]

    @property
    def message(self) -> str:
        """The text carried in `error.message`."""
        return self.value[1]


class ProtocolError(Exception):
    """A request that is answered with a non-zero `error.code`."""

    def __init__(self, error: ErrorCode) -> None:
        """Keep the protocol error to report."""
        super().__init__(error.message)
        self.error = error


def encode(message: dict) -> bytes:
    """Serialize one message as a newline-terminated JSON line."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def reply(
    request_id: str,
    work_id: str,
    *,
    data: object = "None",
    obj: str = "None",
    error: ErrorCode | None = None,
) -> bytes:
    """Build one reply line in the unit-manager's reply format."""
    code, message = error.value if error else (0, "")
    return encode(
        {
            "created": int(time.time()),
            "data": data,
            "error": {"code": code, "message": message},
            "object": obj,
            "request_id": request_id,
            "work_id": work_id,
        }
    )


def parse_request(line: bytes) -> dict:
    """Decode one request line; anything but a JSON object is a json format error."""
    try:
        message = json.loads(line)
    except ValueError:
        raise ProtocolError(ErrorCode.JSON_FORMAT) from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.JSON_FORMAT)
    return message


def read_lines(sock: socket.socket) -> Iterator[bytes]:
    """Yield the non-empty lines received on a stream socket until the peer closes it.

    TCP delivers a byte stream: one recv() may hold part of a line or several lines, so
    lines are split on newlines here (the fix of the upstream unit-manager). A line that grows
    past MAX_LINE_BYTES is dropped and reported once as OVERSIZED_LINE.
    """
    pending = bytearray()
    dropping = False
    while chunk := sock.recv(RECV_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pending += chunk[start:end]
            line = bytes(pending).rstrip(b"\r")
            pending.clear()
            start = end + 1
            if dropping:
                dropping = False
            elif line.strip():
                yield line
        pending += chunk[start:]
        if len(pending) > MAX_LINE_BYTES:
            pending.clear()
            if not dropping:
                dropping = True
                yield OVERSIZED_LINE


def read_per_recv(sock: socket.socket, size: int = OLD_RECV_BYTES) -> Iterator[bytes]:
    """Yield what each recv() returns as if it were one request: the old unit-manager.

    The unit-manager before the upstream fix did not split its TCP input on newlines: it
    parsed each recv() result as one JSON request. A line longer than the read buffer
    arrives in pieces, and lines sent back to back arrive merged; either way the parse
    fails (json format error). Lines sent one at a time with a pause in between, each
    shorter than the buffer, still work: the chunk settings of the original guide
    (docs/original-guide.md) rely on that.
    """
    while chunk := sock.recv(size):
        message = chunk.rstrip(b"\r\n")
        if message.strip():
            yield message


def setup_process() -> None:
    """Log to stdout and make SIGTERM/SIGINT end the process at once (it runs as PID 1)."""
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: object) -> None:
    """Leave the serving loop through SystemExit so that cleanup code runs."""
    raise SystemExit(0)
