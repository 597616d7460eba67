"""The HTTP API of docs/services.md: routes, request checks and response bodies.

`/api/v1/ai/*` answers in the envelope {code, message, data, timestamp, request_id};
`/health` is the cheap liveness check without envelope; `/metrics` is Prometheus text.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiservice.edge import EdgeLLMError, StreamSettings, UnitManagerClient
from aiservice.metrics import Metrics

SERVICE = "ai-inference-service"
VERSION = "1.0.0"
DESCRIPTION = "AI Inference Service integrated with Edge-LLM-Infra"
CAPABILITIES = ["speech_recognition", "emotion_detection", "synthesis_detection"]
JSON_TYPE = "application/json; charset=utf-8"


class BadRequest(Exception):
    """A request body the API rejects with 400."""


@dataclass(frozen=True)
class Request:
    """What the endpoints see of an HTTP request."""

    method: str
    path: str
    body: bytes
    request_id: str


@dataclass(frozen=True)
class Response:
    """A complete response: status, body and its content type."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE


@dataclass(frozen=True)
class Task:
    """One inference task: its input field, model setting and result fields."""

    label: str
    model_key: str
    input_field: str
    audio: bool
    fields: tuple[str, ...]
    # Request fields that, when set, replace the result's field of the same name.
    overrides: tuple[str, ...] = ()


TASKS = {
    "asr": Task(
        "Speech recognition",
        "ai.models.asr.model_name",
        "audio_data",
        audio=True,
        fields=("text", "confidence", "language"),
        overrides=("language",),
    ),
    "emotion": Task(
        "Emotion detection",
        "ai.models.emotion.model_name",
        "text",
        audio=False,
        fields=("emotion", "confidence", "emotions"),
    ),
    "synthesis": Task(
        "Synthesis detection",
        "ai.models.synthesis.model_name",
        "audio_data",
        audio=True,
        fields=("is_synthetic", "confidence", "score"),
    ),
}


class Service:
    """What the endpoints share: settings, the unit-manager client, metrics, node name."""

    def __init__(self, settings: dict) -> None:
        """Build the unit-manager client from the settings."""
        self.settings = settings
        self.client = UnitManagerClient(
            settings["zmq.unit_manager_host"],
            settings["zmq.unit_manager_port"],
            settings["zmq.timeout"],
            StreamSettings(
                settings["ai.request.max_single_delta_len"],
                settings["ai.request.audio_stream_chunk_size"],
                settings["ai.request.audio_stream_chunk_delay_ms"],
            ),
        )
        self.metrics = Metrics()
        self.node = socket.gethostname()

    def model(self, task: str) -> str:
        """Return the model name configured for a task."""
        return self.settings[TASKS[task].model_key]

    def run_task(self, name: str, body: dict, request_id: str) -> dict:
        """Check a task's input, run it on the unit-manager and shape the response data."""
        task = TASKS[name]
        payload = task_input(task, body)
        started = time.monotonic()
        result = self.client.infer(self.model(name), payload, request_id)
        missing = [key for key in task.fields if key not in result]
        if missing:
            raise EdgeLLMError(f"inference result lacks {', '.join(missing)}")
        data = {key: result[key] for key in task.fields}
        data.update({key: body[key] for key in task.overrides if body.get(key)})
        data["duration_ms"] = round((time.monotonic() - started) * 1000)
        return data


def handle(service: Service, request: Request) -> tuple[str, Response]:
    """Route a request; return the route (the metrics label) and the response."""
    endpoint = ROUTES.get((request.method, request.path))
    if endpoint is None:
        return "unmatched", failure(404, f"no route for {request.method} {request.path}", request)
    try:
        return request.path, endpoint(service, request)
    except BadRequest as err:
        return request.path, failure(400, f"Invalid request: {err}", request)


def liveness(service: Service, request: Request) -> Response:
    """GET /health: cheap liveness, no envelope."""
    return json_response(200, {"status": "ok", "service": SERVICE, "time": now_rfc3339()})


def metrics(service: Service, request: Request) -> Response:
    """GET /metrics: Prometheus text."""
    body = service.metrics.render().encode()
    return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")


def info(service: Service, request: Request) -> Response:
    """GET /api/v1/ai/info: what the service offers, and which node answered."""
    return success(
        {
            "service": SERVICE,
            "version": VERSION,
            "description": DESCRIPTION,
            "capabilities": CAPABILITIES,
            "models": {name: service.model(name) for name in TASKS},
            "timestamp": int(time.time()),
            "node": service.node,
        },
        request,
    )


def deep_health(service: Service, request: Request) -> Response:
    """GET /api/v1/ai/health: a real setup of the asr model on the unit-manager, then exit."""
    try:
        service.client.check(service.model("asr"), unit_request_id(request))
    except EdgeLLMError as err:
        return failure(503, f"Service unhealthy: {err}", request)
    data = {
        "status": "healthy",
        "service": SERVICE,
        "timestamp": int(time.time()),
        "node": service.node,
    }
    return success(data, request)


def task_endpoint(name: str) -> Callable[[Service, Request], Response]:
    """POST /api/v1/ai/<task>: one inference."""

    def endpoint(service: Service, request: Request) -> Response:
        """Run the task on the request body."""
        body = json_object(request.body)
        try:
            data = service.run_task(name, body, unit_request_id(request))
        except EdgeLLMError as err:
            return failure(500, f"{TASKS[name].label} failed: {err}", request)
        return success(data, request)

    return endpoint


def warm_up(service: Service, request: Request) -> Response:
    """POST /api/v1/ai/setup: set up (and end) a session for each requested model."""
    body = json_object(request.body) if request.body.strip() else {}
    meeting_id = body.get("meeting_id", 0)
    models = body.get("models") or list(TASKS)
    if isinstance(meeting_id, bool) or not isinstance(meeting_id, int) or meeting_id < 0:
        raise BadRequest("meeting_id must be a non-negative integer")
    if not isinstance(models, list) or any(m not in TASKS for m in models):
        raise BadRequest(f"models must be a list of {', '.join(TASKS)}")
    statuses = []
    try:
        for name in models:
            work_id = service.client.check(service.model(name), unit_request_id(request))
            statuses.append(
                {
                    "model": name,
                    "model_name": service.model(name),
                    "work_id": work_id,
                    "status": "ready",
                }
            )
    except EdgeLLMError as err:
        return failure(500, f"AI meeting warmup failed: {err}", request)
    data = {"meeting_id": meeting_id, "models": statuses, "timestamp": int(time.time())}
    return success(data, request)


def batch(service: Service, request: Request) -> Response:
    """POST /api/v1/ai/batch: run tasks one after another; each reports its own error."""
    tasks = json_object(request.body).get("tasks") or []
    if not isinstance(tasks, list):
        raise BadRequest("tasks must be a list")
    results = [batch_item(service, item, unit_request_id(request)) for item in tasks]
    return success({"results": results, "total": len(results)}, request)


def batch_item(service: Service, item: object, request_id: str) -> dict:
    """Run one batch task and return {task_id, type, result} or {task_id, type, error}."""
    if not isinstance(item, dict):
        return {"task_id": "", "type": "", "error": "a task must be an object"}
    entry = {"task_id": str(item.get("task_id", "")), "type": str(item.get("type", ""))}
    data = item.get("data")
    if entry["type"] not in TASKS:
        return {**entry, "error": f"unknown task type: {entry['type']}"}
    if not isinstance(data, dict):
        return {**entry, "error": "task data must be an object"}
    try:
        return {**entry, "result": service.run_task(entry["type"], data, request_id)}
    except (BadRequest, EdgeLLMError) as err:
        return {**entry, "error": str(err)}


def task_input(task: Task, body: dict) -> str:
    """Return the task's input from the body: required, and valid base64 for audio."""
    value = body.get(task.input_field)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{task.input_field} is required")
    if task.audio:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{task.input_field} is not valid base64") from None
    return value


def json_object(body: bytes) -> dict:
    """Decode a request body that must be a JSON object."""
    try:
        value = json.loads(body)
    except ValueError as err:
        raise BadRequest(f"body is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def unit_request_id(request: Request) -> str:
    """Return the request id for the unit-manager: X-Request-ID, so logs can be joined."""
    return request.request_id or f"req_{time.time_ns() // 1000}"


def success(data: object, request: Request) -> Response:
    """Build a 200 envelope."""
    return envelope(200, "success", data, request)


def failure(status: int, message: str, request: Request) -> Response:
    """Build an error envelope; `code` is the HTTP status."""
    return envelope(status, message, None, request)


def envelope(status: int, message: str, data: object, request: Request) -> Response:
    """Build the response envelope of /api/v1/ai/*."""
    body = {
        "code": status,
        "message": message,
        "data": data,
        "timestamp": now_rfc3339(),
        "request_id": request.request_id,
    }
    return json_response(status, body)


def json_response(status: int, body: object) -> Response:
    """Build a JSON response."""
    return Response(status, json.dumps(body, ensure_ascii=False).encode())


def now_rfc3339() -> str:
    """Return the current time in RFC 3339 (UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ROUTES: dict[tuple[str, str], Callable[[Service, Request], Response]] = {
    ("GET", "/health"): liveness,
    ("GET", "/metrics"): metrics,
    ("GET", "/api/v1/ai/info"): info,
    ("GET", "/api/v1/ai/health"): deep_health,
    ("POST", "/api/v1/ai/asr"): task_endpoint("asr"),
    ("POST", "/api/v1/ai/emotion"): task_endpoint("emotion"),
    ("POST", "/api/v1/ai/synthesis"): task_endpoint("synthesis"),
    ("POST", "/api/v1/ai/setup"): warm_up,
    ("POST", "/api/v1/ai/batch"): batch,
}
