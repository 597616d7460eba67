#!/usr/bin/env python3
"""Build the stand-in node images, run them as a deployment would, and check docs/services.md.

    python3 tests/images/selftest.py [--prefix standin-dev-] [--base-image IMAGE]
                                     [--keep-images]

The three containers share a user network; unit-manager and llm share a named volume at
/tmp; the models folder is mounted read-only at /work/models; the service's config file is
mounted at /app/config/ai-inference-service.yaml. Everything created in Docker is named
with the prefix and removed at the end (images too, unless --keep-images). Exit status 0
when every check passed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import importlib.util
import json
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
IMAGES = ("ai-inference-service", "edge-llm")
MODELS = ("asr-model.onnx", "emotion-model.onnx", "synthesis-model.onnx")
CHUNK_SIZE = 512
CONFIG = f"""\
server:
  port: 8085
zmq:
  unit_manager_host: "set-by-env"
  unit_manager_port: 19001
  timeout: 30
ai:
  request:
    max_single_delta_len: 2048
    audio_stream_chunk_size: {CHUNK_SIZE}
    audio_stream_chunk_delay_ms: 10
"""


# Large audio (raw bytes; base64 makes it a third larger) and the two ways of sending it:
# the original guide's workaround for an old unit-manager (docs/original-guide.md), and
# settings that need the fixed one.
LARGE_AUDIO_BYTES = 200_000
WORKAROUND_STREAM = {
    "AI_REQUEST_MAX_SINGLE_DELTA_LEN": "2048",
    "AI_REQUEST_AUDIO_STREAM_CHUNK_SIZE": "512",
    "AI_REQUEST_AUDIO_STREAM_CHUNK_DELAY_MS": "10",
}
FAST_STREAM = {
    "AI_REQUEST_MAX_SINGLE_DELTA_LEN": "2048",
    "AI_REQUEST_AUDIO_STREAM_CHUNK_SIZE": "65536",
    "AI_REQUEST_AUDIO_STREAM_CHUNK_DELAY_MS": "0",
}


class CheckFailed(Exception):
    """A check whose expectation did not hold."""


def expect(condition: object, message: str) -> None:
    """Fail the running check with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the docker CLI and capture its output."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode:
        raise CheckFailed(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result


def load_results() -> ModuleType:
    """Import the llm stand-in's result functions, to predict results."""
    path = HERE / "edge-llm" / "edgellm" / "results.py"
    spec = importlib.util.spec_from_file_location("standin_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULTS = load_results()


class Stack:
    """The three containers of one node, and everything they need."""

    def __init__(self, prefix: str, workdir: Path) -> None:
        """Name the Docker objects and prepare the models folder and config file."""
        self.prefix = prefix
        self.images = {name: f"{prefix}{name}:selftest" for name in IMAGES}
        self.network = f"{prefix}net"
        self.volume = f"{prefix}ipc"
        self.unit_manager = f"{prefix}unit-manager"
        self.llm = f"{prefix}llm"
        self.ai = f"{prefix}ai"
        self.jwt_check = f"{prefix}jwt-check"
        self.jwt_secret = secrets.token_hex(20)
        self.models = workdir / "models"
        self.config = workdir / "ai-inference-service.yaml"
        self.models.mkdir(mode=0o755)
        for model in MODELS:
            (self.models / model).touch()
        self.config.write_text(CONFIG, encoding="utf-8")
        self.config.chmod(0o644)
        self.ai_port = self.unit_manager_port = 0
        self.created_containers: list[str] = []
        self.created_volumes: list[str] = []

    def build(self, base_image: str) -> None:
        """Build both images from the local base image, pulling nothing."""
        for name, tag in self.images.items():
            build_arg = f"BASE_IMAGE={base_image}"
            docker("build", "--pull=false", "--build-arg", build_arg, "-t", tag, str(HERE / name))

    def start(self) -> None:
        """Start the node as a deployment does, then wait until it is healthy."""
        docker("network", "create", self.network)
        self.start_edge(self.unit_manager, self.llm, self.volume, {})
        self.start_service(self.ai, self.unit_manager, {})
        self.ai_port = published_port(self.ai, "8085/tcp")
        self.unit_manager_port = published_port(self.unit_manager, "19001/tcp")
        self.wait_healthy()

    def start_edge(self, unit_manager: str, llm: str, volume: str, env: dict) -> None:
        """Start a unit-manager (with `env`) and its llm node sharing `volume` at /tmp."""
        docker("volume", "create", volume)
        self.created_volumes.append(volume)
        edge = self.images["edge-llm"]
        ipc = ["-v", f"{volume}:/tmp"]
        options = [*ipc, "-p", "127.0.0.1::19001", *env_options(env)]
        self.run(unit_manager, edge, options, "./unit_manager")
        self.run(llm, edge, [*ipc, "-v", f"{self.models}:/work/models:ro"], "./llm")

    def start_service(self, name: str, unit_manager: str, env: dict) -> int:
        """Start an ai-inference-service on `unit_manager`; return its published port."""
        env = {
            "ZMQ_UNIT_MANAGER_HOST": unit_manager,
            "ZMQ_UNIT_MANAGER_PORT": "19001",
            "ZMQ_TIMEOUT": "30",
            "JWT_SECRET": self.jwt_secret,
            **env,
        }
        options = [
            "-p",
            "127.0.0.1::8085",
            "-v",
            f"{self.config}:/app/config/ai-inference-service.yaml:ro",
            *env_options(env),
        ]
        self.run(name, self.images["ai-inference-service"], options)
        return published_port(name, "8085/tcp")

    def run(self, name: str, image: str, options: list[str], *command: str) -> None:
        """Start a detached container on the node's network."""
        self.created_containers.append(name)
        docker("run", "-d", "--name", name, "--network", self.network, *options, image, *command)

    def wait_healthy(self, timeout: float = 30, name: str = "", port: int = 0) -> None:
        """Wait until the deep health check of a service (default: the node's) passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.call("GET", "/api/v1/ai/health", port=port)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = self.logs(name or self.ai)
                raise CheckFailed(f"{name or self.ai} not healthy after {timeout} s:\n{logs}")
            time.sleep(0.3)

    def call(
        self, method: str, path: str, body: object = None, request_id: str = "", port: int = 0
    ) -> tuple[int, dict, http.client.HTTPResponse]:
        """Send one request to a service (default: the node's); return status, JSON, response."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.ai_port, timeout=120)
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-ID"] = request_id
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw), response

    def logs(self, container: str) -> str:
        """Stdout and stderr of a container."""
        result = docker("logs", container, check=False)
        return result.stdout + result.stderr

    def remove(self, images: bool) -> None:
        """Remove everything this run created (and the images when asked)."""
        names = [self.jwt_check, self.ai, self.llm, self.unit_manager, *self.created_containers]
        docker("rm", "-f", *dict.fromkeys(names), check=False)
        docker("network", "rm", self.network, check=False)
        docker("volume", "rm", *dict.fromkeys([self.volume, *self.created_volumes]), check=False)
        if images:
            docker("rmi", *self.images.values(), check=False)


def env_options(env: dict) -> list[str]:
    """`docker run` options that set the environment variables of `env`."""
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


def published_port(container: str, port: str) -> int:
    """Return the host port Docker published for a container port."""
    mapping = docker("port", container, port).stdout.split()[0]
    return int(mapping.rsplit(":", 1)[1])


class LineClient:
    """A raw client of the unit-manager protocol: JSON lines over TCP."""

    def __init__(self, port: int) -> None:
        """Connect to the unit-manager's published port."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (possibly part of a line, or several lines)."""
        self.sock.sendall(data)

    def send(self, **message: object) -> None:
        """Send one request line."""
        self.send_raw(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict:
        """Read one reply line."""
        line = self.reader.readline()
        expect(line, "unit-manager closed the connection")
        return json.loads(line)

    def code(self) -> int:
        """Read one reply line and return its error code."""
        return self.receive()["error"]["code"]

    def setup(self, model: str = "asr-model") -> dict:
        """Set up a session and return the reply."""
        self.send(
            request_id="selftest",
            work_id="llm",
            action="setup",
            object="llm.setup",
            data={"model": model, "response_format": "llm.utf-8.stream"},
        )
        return self.receive()

    def close(self) -> None:
        """Disconnect."""
        self.reader.close()
        self.sock.close()


@contextlib.contextmanager
def line_client(port: int) -> Iterator[LineClient]:
    """Connect a LineClient that is closed on leaving the block."""
    client = LineClient(port)
    try:
        yield client
    finally:
        client.close()


def inference(work_id: str, delta: str, index: int, finish: bool) -> bytes:
    """One inference request line."""
    message = {
        "request_id": "selftest",
        "work_id": work_id,
        "action": "inference",
        "object": "llm.utf-8.stream",
        "data": {"delta": delta, "index": index, "finish": finish},
    }
    return json.dumps(message).encode() + b"\n"


def audio(size: int, seed: int) -> str:
    """Base64 of `size` pseudo-random bytes."""
    return base64.b64encode(random.Random(seed).randbytes(size)).decode()


def expected(model: str, payload: str) -> dict:
    """Return the result the stand-in llm computes for an input."""
    return RESULTS.infer(model, payload)


def check_liveness(stack: Stack) -> None:
    """GET /health: no envelope, status ok, RFC 3339 time."""
    status, body, _ = stack.call("GET", "/health")
    expect(status == 200, f"status {status}")
    expect(set(body) == {"status", "service", "time"}, f"fields {sorted(body)}")
    expect(body["status"] == "ok" and body["service"] == "ai-inference-service", str(body))
    expect(time.strptime(body["time"], "%Y-%m-%dT%H:%M:%SZ"), "time is not RFC 3339")


def check_info(stack: Stack) -> None:
    """GET /api/v1/ai/info: envelope, capabilities, models, and the node's hostname."""
    status, body, _ = stack.call("GET", "/api/v1/ai/info")
    expect(status == 200 and body["code"] == 200 and body["message"] == "success", str(body))
    expect({"code", "message", "data", "timestamp", "request_id"} <= set(body), str(body))
    data = body["data"]
    expect(
        data["capabilities"] == ["speech_recognition", "emotion_detection", "synthesis_detection"],
        str(data["capabilities"]),
    )
    models = {"asr": "asr-model", "emotion": "emotion-model", "synthesis": "synthesis-model"}
    expect(data["models"] == models, str(data["models"]))
    expect({"service", "version", "description"} <= set(data), str(data))
    hostname = docker("inspect", "-f", "{{.Config.Hostname}}", stack.ai).stdout.strip()
    expect(data["node"] == hostname, f"node {data['node']!r} != container hostname {hostname!r}")


def check_deep_health(stack: Stack) -> None:
    """GET /api/v1/ai/health: a real setup across the three containers."""
    status, body, _ = stack.call("GET", "/api/v1/ai/health")
    expect(status == 200 and body["data"]["status"] == "healthy", str(body))


def check_chunked_asr(stack: Stack) -> None:
    """POST /api/v1/ai/asr over 2048 bytes: streamed in chunks, reassembled intact."""
    payload = audio(3000, seed=1)
    request_id = f"selftest-asr-{secrets.token_hex(4)}"
    body = {"audio_data": payload, "format": "wav", "sample_rate": 16000, "language": ""}
    status, reply, response = stack.call("POST", "/api/v1/ai/asr", body, request_id)
    expect(status == 200 and reply["code"] == 200, str(reply))
    expect(reply["request_id"] == request_id, f"request_id {reply['request_id']!r}")
    expect(response.getheader("X-Request-ID") == request_id, "X-Request-ID header not echoed")
    data = reply["data"]
    expect(set(data) == {"text", "confidence", "language", "duration_ms"}, str(data))
    want = expected("asr-model", payload)
    expect(data["text"] == want["text"], f"text {data['text']!r} != {want['text']!r}")
    chunks = [
        line
        for line in stack.logs(stack.unit_manager).splitlines()
        if f"request_id={request_id} action=inference" in line
    ]
    count = -(-len(payload) // CHUNK_SIZE)
    expect(len(chunks) == count, f"{len(chunks)} inference lines, expected {count}")
    expect(
        all("finish=False" in c for c in chunks[:-1]) and "finish=True" in chunks[-1],
        "only the last chunk may finish",
    )
    served = [
        line for line in stack.logs(stack.ai).splitlines() if f"request_id={request_id}" in line
    ]
    expect(
        len(served) == 1 and "path=/api/v1/ai/asr status=200" in served[0],
        f"access log: {served}",
    )


def check_other_endpoints(stack: Stack) -> None:
    """POST emotion, synthesis, setup and batch: response shapes and deterministic results."""
    status, reply, _ = stack.call("POST", "/api/v1/ai/emotion", {"text": "good morning"})
    data = reply["data"]
    expect(status == 200, str(reply))
    expect(set(data) == {"emotion", "confidence", "emotions", "duration_ms"}, str(data))
    expect(data["emotions"] == expected("emotion-model", "good morning")["emotions"], str(data))
    payload = audio(100, seed=2)
    status, reply, _ = stack.call("POST", "/api/v1/ai/synthesis", {"audio_data": payload})
    data = reply["data"]
    expect(status == 200, str(reply))
    expect(set(data) == {"is_synthetic", "confidence", "score", "duration_ms"}, str(data))
    expect(data["score"] == expected("synthesis-model", payload)["score"], str(data))
    status, reply, _ = stack.call("POST", "/api/v1/ai/setup", {"meeting_id": 7, "models": ["asr"]})
    expect(status == 200 and reply["data"]["meeting_id"] == 7, str(reply))
    expect(reply["data"]["models"][0]["status"] == "ready", str(reply))
    tasks = [
        {"task_id": "a", "type": "asr", "data": {"audio_data": payload}},
        {"task_id": "b", "type": "emotion", "data": {"text": "hi"}},
        {"task_id": "c", "type": "ocr", "data": {}},
    ]
    status, reply, _ = stack.call("POST", "/api/v1/ai/batch", {"tasks": tasks})
    results = reply["data"]["results"]
    expect(status == 200 and reply["data"]["total"] == len(tasks), str(reply))
    expect("result" in results[0] and "result" in results[1], str(results))
    expect(results[2]["error"] == "unknown task type: ocr", str(results[2]))


def check_bad_requests(stack: Stack) -> None:
    """Bad bodies give 400 envelopes, unknown routes 404."""
    cases = [
        ("/api/v1/ai/asr", b"{not json"),
        ("/api/v1/ai/asr", {"format": "wav"}),
        ("/api/v1/ai/asr", {"audio_data": "%%% not base64"}),
        ("/api/v1/ai/emotion", {"text": ""}),
    ]
    for path, body in cases:
        status, reply, _ = stack.call("POST", path, body, request_id="selftest-bad")
        expect(status == 400 and reply["code"] == 400, f"{path} {body!r}: {status} {reply}")
        expect(reply["message"].startswith("Invalid request: "), reply["message"])
        expect(reply["request_id"] == "selftest-bad" and reply["data"] is None, str(reply))
    status, reply, _ = stack.call("GET", "/api/v1/ai/nothing")
    expect(status == 404 and reply["code"] == 404, f"{status} {reply}")


def check_keepalive_latency(stack: Stack) -> None:
    """HTTP/1.1 keep-alive on one connection, without the ~40 ms Nagle delay."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.ai_port, timeout=10)
    timings = []
    try:
        for _ in range(30):
            started = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            timings.append(time.perf_counter() - started)
            expect(response.status == 200 and not response.will_close, "connection not kept")
    finally:
        conn.close()
    median = statistics.median(timings) * 1000
    expect(median < 20, f"median latency {median:.1f} ms")


def check_metrics(stack: Stack) -> None:
    """GET /metrics: request counters in Prometheus text."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.ai_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    expect(response.status == 200 and "text/plain" in response.getheader("Content-Type"), "type")
    series = 'ai_inference_http_requests_total{method="POST",route="/api/v1/ai/asr",status="200"}'
    expect(series in text, f"no {series} in:\n{text}")


def check_protocol(stack: Stack) -> None:
    """Check the unit-manager protocol: framing, streaming and error codes."""
    with line_client(stack.unit_manager_port) as client:
        client.send_raw(b"{not json}\n")
        expect(client.code() == -2, "bad JSON is not -2")
        client.send(request_id="x", work_id="llm", action="dance")
        expect(client.code() == -3, "unknown action is not -3")
        client.send(request_id="x", work_id="asr", action="setup", data={"model": "asr-model"})
        expect(client.code() == -6, "unknown unit is not -6")
        client.send(request_id="x", work_id="llm", action="setup", data={"model": "nope"})
        expect(client.code() == -5, "missing model is not -5")
        request = {"request_id": "s", "work_id": "llm", "action": "setup"}
        line = json.dumps({**request, "data": {"model": "asr-model"}}).encode() + b"\n"
        for start, end in ((0, 9), (9, 30), (30, len(line))):
            client.send_raw(line[start:end])
            time.sleep(0.05)
        setup = client.receive()
        work_id = setup["work_id"]
        expect(setup["error"]["code"] == 0 and work_id.startswith("llm."), str(setup))
        client.send_raw(inference(work_id, "abc", 1, True))
        expect(client.code() == -25, "index out of order is not -25")
        client.send_raw(inference(work_id, "", 0, True))
        expect(client.code() == -24, "empty delta is not -24")
        client.send_raw(inference("llm.999999", "abc", 0, True))
        expect(client.code() == -4, "unknown session is not -4")
        client.send_raw(inference(work_id, "abc", 0, False) + inference(work_id, "def", 1, True))
        deltas = []
        while True:
            reply = client.receive()
            expect(reply["object"] == "llm.utf-8.stream", str(reply))
            deltas.append(reply["data"]["delta"])
            if reply["data"]["finish"]:
                break
        result = json.loads("".join(deltas))
        expect(result == expected("asr-model", "abcdef"), f"streamed result {result}")
        client.send(request_id="x", work_id=work_id, action="exit")
    time.sleep(0.5)
    with line_client(stack.unit_manager_port) as client:
        opened = 0
        while (code := client.setup()["error"]["code"]) == 0:
            opened += 1
        expect(code == -21 and opened == 20, f"task full after {opened} sessions (code {code})")
    time.sleep(0.5)
    with line_client(stack.unit_manager_port) as client:
        code = client.setup()["error"]["code"]
        expect(code == 0, f"sessions not freed on disconnect (code {code})")


def check_large_audio(stack: Stack) -> None:
    """The guide's large-audio fault: an old unit-manager breaks fast settings, not the slow.

    An old unit-manager (STANDIN_UNIT_MANAGER_INPUT=recv) fails a few hundred KB of audio
    sent with fast chunk settings with code -2, and passes it with the guide's workaround
    settings; the fixed unit-manager passes it with the fast settings.
    """
    old_unit_manager = f"{stack.prefix}unit-manager-old"
    old_llm, old_ipc = f"{stack.prefix}llm-old", f"{stack.prefix}ipc-old"
    stack.start_edge(old_unit_manager, old_llm, old_ipc, {"STANDIN_UNIT_MANAGER_INPUT": "recv"})
    payload = audio(LARGE_AUDIO_BYTES, seed=2)
    body = {"audio_data": payload, "format": "wav", "sample_rate": 16000, "language": ""}
    want = expected("asr-model", payload)["text"]
    cases = (
        ("old-fast", old_unit_manager, FAST_STREAM, False),
        ("old-workaround", old_unit_manager, WORKAROUND_STREAM, True),
        ("new-fast", stack.unit_manager, FAST_STREAM, True),
    )
    ports = {
        label: stack.start_service(f"{stack.prefix}ai-{label}", unit_manager, settings)
        for label, unit_manager, settings, _ in cases
    }
    for label, _, _, works in cases:
        stack.wait_healthy(name=f"{stack.prefix}ai-{label}", port=ports[label])
        status, reply, _ = stack.call("POST", "/api/v1/ai/asr", body, port=ports[label])
        if works:
            expect(status == 200 and reply["data"]["text"] == want, f"{label}: {status} {reply}")
        else:
            fault = "Speech recognition failed: edge-llm error (code -2): json format error"
            expect(status == 500 and reply["message"] == fault, f"{label}: {status} {reply}")


def check_missing_model(stack: Stack) -> None:
    """Check that a missing model fails the deep check with code -5 until it is back."""
    model = stack.models / "asr-model.onnx"
    model.rename(model.with_suffix(".away"))
    try:
        status, reply, _ = stack.call("GET", "/api/v1/ai/health")
    finally:
        model.with_suffix(".away").rename(model)
    expect(status == 503 and reply["code"] == 503, f"{status} {reply}")
    expect(reply["message"].startswith("Service unhealthy: "), reply["message"])
    expect("code -5" in reply["message"], reply["message"])
    expect(stack.call("GET", "/api/v1/ai/health")[0] == 200, "not healthy with the model back")


def check_llm_absent(stack: Stack) -> None:
    """Without the llm node the deep check fails with code -6; it recovers on restart."""
    started = time.monotonic()
    docker("stop", stack.llm)
    stopped_in = time.monotonic() - started
    try:
        status, reply, _ = stack.call("GET", "/api/v1/ai/health")
    finally:
        docker("start", stack.llm)
    expect(stopped_in < 5, f"llm took {stopped_in:.1f} s to stop on SIGTERM")
    expect(status == 503 and "code -6" in reply["message"], f"{status} {reply}")
    stack.wait_healthy()


def check_weak_jwt(stack: Stack) -> None:
    """Check that an empty, short or published-example secret stops the service."""
    image = stack.images["ai-inference-service"]
    mount = ["-v", f"{stack.config}:/app/config/ai-inference-service.yaml:ro"]
    cases = [
        ([], "published example value"),
        ([*mount], "jwt.secret is empty"),
        ([*mount, "-e", "JWT_SECRET=too-short-secret"], "shorter than 32 characters"),
    ]
    for options, message in cases:
        result = docker("run", "--rm", "--name", stack.jwt_check, *options, image, check=False)
        expect(result.returncode != 0, f"started with {options}: rc {result.returncode}")
        expect(message in result.stderr, f"stderr lacks {message!r}: {result.stderr.strip()}")


def check_secret_not_logged(stack: Stack) -> None:
    """Check that the JWT secret appears in no container log."""
    for container in (stack.ai, stack.unit_manager, stack.llm):
        expect(stack.jwt_secret not in stack.logs(container), f"secret in {container} logs")


def check_stop(stack: Stack) -> None:
    """Each container stops promptly on SIGTERM with exit status 0."""
    for container in (stack.ai, stack.unit_manager, stack.llm):
        started = time.monotonic()
        docker("stop", container)
        took = time.monotonic() - started
        code = docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip()
        expect(took < 5 and code == "0", f"{container}: stopped in {took:.1f} s, exit {code}")


CHECKS: tuple[Callable[[Stack], None], ...] = (
    check_liveness,
    check_info,
    check_deep_health,
    check_chunked_asr,
    check_other_endpoints,
    check_bad_requests,
    check_keepalive_latency,
    check_metrics,
    check_protocol,
    check_large_audio,
    check_missing_model,
    check_llm_absent,
    check_weak_jwt,
    check_secret_not_logged,
    check_stop,
)


def run_checks(stack: Stack) -> int:
    """Run every check, print one line each; return the number of failures."""
    failures = 0
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        started = time.monotonic()
        try:
            check(stack)
        except (CheckFailed, OSError, KeyError, TypeError, ValueError) as err:
            failures += 1
            print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
            continue
        print(f"ok   {name} ({time.monotonic() - started:.2f} s)", flush=True)
    return failures


def main() -> int:
    """Build, start, check, clean up; print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="standin-dev-", help="name prefix of Docker objects")
    parser.add_argument("--base-image", default="ai-fleet-lab/base:latest")
    parser.add_argument("--keep-images", action="store_true", help="keep the built images")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="standin-selftest-"))
    stack = Stack(args.prefix, workdir)
    stack.remove(images=False)
    try:
        stack.build(args.base_image)
        stack.start()
        failures = run_checks(stack)
    except CheckFailed as err:
        print(f"FAIL setup: {err}", flush=True)
        failures = len(CHECKS)
    finally:
        stack.remove(images=not args.keep_images)
        shutil.rmtree(workdir)
    passed = len(CHECKS) - failures
    print(f"selftest: {passed} of {len(CHECKS)} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
