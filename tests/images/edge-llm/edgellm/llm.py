"""Stand-in of the llm node: sessions served on a unix socket in the shared /tmp.

The unit-manager forwards `setup`, `inference` and `exit` requests here, one JSON line
each, and relays the reply lines back to its client. A session needs the model file
`<model>.onnx` under MODEL_DIR; at most MAX_SESSIONS are open at once. A session belongs
to the connection that opened it and is closed when that connection ends.
"""

from __future__ import annotations

import logging
import os
import re
import socketserver
import threading
import time
from dataclasses import dataclass, field

from edgellm import results
from edgellm.protocol import (
    LLM_SOCKET,
    STREAM_OBJECT,
    UNIT_NAME,
    ErrorCode,
    ProtocolError,
    encode,
    parse_request,
    read_lines,
    reply,
    setup_process,
)

MODEL_DIR = "/work/models"


def env_number(name: str, default: float) -> float:
    """Read a non-negative number from the environment (empty or unset: default)."""
    value = float(os.environ.get(name) or default)
    if value < 0:
        raise SystemExit(f"llm: {name} must not be negative, not {value}")
    return value


# Sessions open at once, as the real node (about 20): setup beyond gets -21.
MAX_SESSIONS = int(env_number("STANDIN_MAX_SESSIONS", 20))
# Seconds each inference takes, as the GPU would (default 0: answer at once).
INFERENCE_SECONDS = env_number("STANDIN_INFERENCE_SECONDS", 0)
# Results are streamed back in pieces of this many characters.
DELTA_PIECE = 48
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

log = logging.getLogger("llm")


@dataclass
class Session:
    """One inference session: the model and the input streamed so far."""

    work_id: str
    model: str
    owner: object
    next_index: int = 0
    parts: list[str] = field(default_factory=list)


class SessionTable:
    """The open sessions of this node, shared by all connections."""

    def __init__(self) -> None:
        """Start with no session; work ids count up from llm.1."""
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._last_id = 0

    def open(self, model: object, owner: object) -> Session:
        """Load `model` for a new session, or fail with -5 (no model) or -21 (full)."""
        if not isinstance(model, str) or not model_available(model):
            log.info("setup refused: model %r has no file %s/<model>.onnx", model, MODEL_DIR)
            raise ProtocolError(ErrorCode.MODEL_LOADING)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                raise ProtocolError(ErrorCode.TASK_FULL)
            self._last_id += 1
            session = Session(f"{UNIT_NAME}.{self._last_id}", model, owner)
            self._sessions[session.work_id] = session
        log.info("session %s opened with model %s", session.work_id, model)
        return session

    def push(self, work_id: str, data: object) -> tuple[Session, str | None]:
        """Add one chunk to a session's input; return the whole input once it is finished."""
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.EMPTY_DATA)
        delta, index = data.get("delta"), data.get("index")
        if not isinstance(delta, str) or not delta:
            raise ProtocolError(ErrorCode.EMPTY_DATA)
        with self._lock:
            session = self._sessions.get(work_id)
            if session is None:
                raise ProtocolError(ErrorCode.PUSH_FALSE)
            if type(index) is not int or index != session.next_index:
                raise ProtocolError(ErrorCode.STREAM_INDEX)
            session.parts.append(delta)
            session.next_index += 1
            if data.get("finish") is not True:
                return session, None
            payload = "".join(session.parts)
            session.parts.clear()
            session.next_index = 0
        return session, payload

    def close(self, work_id: str) -> None:
        """Close one session; an unknown work id is ignored."""
        with self._lock:
            closed = self._sessions.pop(work_id, None)
        if closed:
            log.info("session %s closed", work_id)

    def close_owned(self, owner: object) -> None:
        """Close every session opened on a connection that has ended."""
        with self._lock:
            owned = [s.work_id for s in self._sessions.values() if s.owner is owner]
        for work_id in owned:
            self.close(work_id)


def model_available(model: str) -> bool:
    """Whether the model's file exists under MODEL_DIR (checked on every setup)."""
    if not MODEL_NAME.fullmatch(model):
        return False
    return os.path.isfile(os.path.join(MODEL_DIR, f"{model}.onnx"))


def result_lines(request_id: str, session: Session, payload: str) -> bytes:
    """Build the reply lines of a result; their deltas concatenate to its JSON."""
    text = encode(results.infer(session.model, payload)).decode().rstrip("\n")
    pieces = [text[i : i + DELTA_PIECE] for i in range(0, len(text), DELTA_PIECE)]
    last = len(pieces) - 1
    return b"".join(
        reply(
            request_id,
            session.work_id,
            data={"index": i, "delta": piece, "finish": i == last},
            obj=STREAM_OBJECT,
        )
        for i, piece in enumerate(pieces)
    )


class UnitConnection(socketserver.BaseRequestHandler):
    """One connection from the unit-manager; requests are handled in arrival order."""

    sessions = SessionTable()

    def handle(self) -> None:
        """Answer each request line; close this connection's sessions when it ends."""
        try:
            for line in read_lines(self.request):
                if answer := self.answer(line):
                    self.request.sendall(answer)
        except OSError as err:
            log.info("connection lost: %s", err)
        finally:
            self.sessions.close_owned(self)

    def answer(self, line: bytes) -> bytes:
        """Return the reply bytes for one request line (empty when nothing is due yet)."""
        request_id, work_id = "0", UNIT_NAME
        try:
            message = parse_request(line)
            request_id = str(message.get("request_id", ""))
            work_id = str(message.get("work_id", ""))
            return self.perform(message.get("action"), request_id, work_id, message)
        except ProtocolError as err:
            return reply(request_id, work_id, error=err.error)

    def perform(self, action: object, request_id: str, work_id: str, message: dict) -> bytes:
        """Run one action and return its reply lines."""
        if action == "setup":
            data = message.get("data")
            model = data.get("model") if isinstance(data, dict) else None
            session = self.sessions.open(model, owner=self)
            return reply(request_id, session.work_id)
        if action == "inference":
            session, payload = self.sessions.push(work_id, message.get("data"))
            if payload is None:
                return b""
            if INFERENCE_SECONDS:
                time.sleep(INFERENCE_SECONDS)
            return result_lines(request_id, session, payload)
        if action == "exit":
            self.sessions.close(work_id)
            return b""
        raise ProtocolError(ErrorCode.ACTION_MATCH)


class UnitServer(socketserver.ThreadingUnixStreamServer):
    """The llm unit's socket server; one thread per connection."""

    daemon_threads = True


def load_models() -> None:
    """Take the time a real node takes to load its models onto the GPUs.

    ``STANDIN_MODEL_LOAD_SECONDS`` (default 0): until it has passed, the unit socket
    does not exist, so setups fail with -6 as they do while a real llm node loads.
    """
    seconds = float(os.environ.get("STANDIN_MODEL_LOAD_SECONDS") or 0)
    if seconds > 0:
        log.info("loading models (%.1f s)", seconds)
        time.sleep(seconds)


def serve(path: str = LLM_SOCKET) -> None:
    """Listen on the unit socket (replacing a stale one) until a signal arrives."""
    setup_process()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    load_models()
    with UnitServer(path, UnitConnection) as server:
        os.chmod(path, 0o666)
        models = sorted(os.listdir(MODEL_DIR)) if os.path.isdir(MODEL_DIR) else []
        log.info("llm unit listening on %s; models in %s: %s", path, MODEL_DIR, models)
        # Set by the NVIDIA runtime when the container got a GPU device request.
        log.info("NVIDIA_VISIBLE_DEVICES=%s", os.environ.get("NVIDIA_VISIBLE_DEVICES", "(unset)"))
        try:
            server.serve_forever()
        finally:
            os.unlink(path)


if __name__ == "__main__":
    serve()
