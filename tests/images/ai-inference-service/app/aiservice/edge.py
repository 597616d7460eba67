"""Client of the unit-manager protocol (TCP, one JSON object per line, both directions).

Each call opens its own connection and session: `setup` loads the model and names the
session (`llm.7`), `inference` lines carry the input, streamed in chunks when it is longer
than `max_single_delta_len`, and `exit` ends the session.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

UNIT_NAME = "llm"
STREAM_OBJECT = "llm.utf-8.stream"


class EdgeLLMError(Exception):
    """A failed exchange with the unit-manager; str() is what the API reports."""


@dataclass(frozen=True)
class StreamSettings:
    """How inputs are sent: the `ai.request.*` settings."""

    max_single_delta_len: int
    chunk_size: int
    chunk_delay_ms: int


def chunks(payload: str, stream: StreamSettings) -> Iterator[tuple[int, str, bool]]:
    """Yield (index, delta, finish) for an input; only the last chunk has finish=True."""
    if len(payload) <= stream.max_single_delta_len:
        yield 0, payload, True
        return
    size = stream.chunk_size
    count = -(-len(payload) // size)
    for index in range(count):
        yield index, payload[index * size : (index + 1) * size], index == count - 1


class UnitManagerClient:
    """Runs sessions on the unit-manager at host:port."""

    def __init__(self, host: str, port: int, timeout: float, stream: StreamSettings) -> None:
        """Remember where the unit-manager is, the I/O timeout and the stream settings."""
        self.address = (host, port)
        self.timeout = timeout
        self.stream = stream

    def check(self, model: str, request_id: str) -> str:
        """Set up a session for `model` and end it again; return the session's work id."""
        with Session(self.address, self.timeout, request_id) as session:
            return session.setup(model)

    def infer(self, model: str, payload: str, request_id: str) -> dict:
        """Run one input through `model` and return the result object."""
        with Session(self.address, self.timeout, request_id) as session:
            session.setup(model)
            for position, (index, delta, finish) in enumerate(chunks(payload, self.stream)):
                if position and self.stream.chunk_delay_ms:
                    time.sleep(self.stream.chunk_delay_ms / 1000)
                session.push(index, delta, finish)
            return session.result()


class Session:
    """One connection and session on the unit-manager; `exit` is sent on leaving."""

    def __init__(self, address: tuple[str, int], timeout: float, request_id: str) -> None:
        """Prepare a session; the connection opens on entering the context."""
        self.address = address
        self.timeout = timeout
        self.request_id = request_id
        self.work_id = ""

    def __enter__(self) -> Session:
        """Connect to the unit-manager."""
        try:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as err:
            raise EdgeLLMError(f"failed to connect to unit-manager: {err}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        return self

    def __exit__(self, *exc_info: object) -> None:
        """End the session (the protocol sends no reply to `exit`) and disconnect."""
        try:
            if self.work_id:
                self._write(
                    {"request_id": self.request_id, "work_id": self.work_id, "action": "exit"}
                )
        except EdgeLLMError:
            pass
        finally:
            self.reader.close()
            self.sock.close()

    def setup(self, model: str) -> str:
        """Load `model` in a new session and return its work id."""
        data = {
            "model": model,
            "response_format": STREAM_OBJECT,
            "input": STREAM_OBJECT,
            "enoutput": True,
        }
        self._write(
            {
                "request_id": self.request_id,
                "work_id": UNIT_NAME,
                "action": "setup",
                "object": "llm.setup",
                "data": data,
            }
        )
        work_id = self.receive().get("work_id")
        if not isinstance(work_id, str) or not work_id:
            raise EdgeLLMError("setup response missing work_id")
        self.work_id = work_id
        return work_id

    def push(self, index: int, delta: str, finish: bool) -> None:
        """Send one chunk of the session's input."""
        self._write(
            {
                "request_id": self.request_id,
                "work_id": self.work_id,
                "action": "inference",
                "object": STREAM_OBJECT,
                "data": {"delta": delta, "index": index, "finish": finish},
            }
        )

    def _write(self, message: dict) -> None:
        """Send one request line."""
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self.sock.sendall(line)
        except OSError as err:
            raise EdgeLLMError(f"failed to send request: {err}") from None

    def receive(self) -> dict:
        """Read one reply line; a non-zero error code becomes an EdgeLLMError."""
        try:
            line = self.reader.readline()
        except OSError as err:
            raise EdgeLLMError(f"failed to read response: {err}") from None
        if not line:
            raise EdgeLLMError("failed to read response: unit-manager closed the connection")
        try:
            reply = json.loads(line)
            error = reply.get("error") or {}
            code = error.get("code", 0)
        except (ValueError, AttributeError):
            raise EdgeLLMError(f"failed to unmarshal response: {line[:80]!r}") from None
        if code:
            raise EdgeLLMError(f"edge-llm error (code {code}): {error.get('message', '')}")
        return reply

    def result(self) -> dict:
        """Collect streamed reply lines until `finish`; their deltas form the JSON result."""
        deltas = []
        while True:
            data = self.receive().get("data")
            if not isinstance(data, dict) or not isinstance(data.get("delta"), str):
                raise EdgeLLMError(f"unexpected inference reply data: {data!r:.80}")
            deltas.append(data["delta"])
            if data.get("finish") is True:
                break
        try:
            result = json.loads("".join(deltas))
        except ValueError:
            raise EdgeLLMError("inference result is not JSON") from None
        if not isinstance(result, dict):
            raise EdgeLLMError("inference result is not a JSON object")
        return result
