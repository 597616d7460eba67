"""A steady mix of requests through the gateway, every answer recorded.

    python tests/integration/loadgen.py http://127.0.0.1:8080 --seconds 30

GET /api/v1/ai/info at a fixed rate, and POST /api/v1/ai/asr with about 300 KB
of audio from a few workers back to back; each request on its own connection,
so that a failure is the fleet's, not a kept-alive connection's. A request
fails when it gets no HTTP answer or an answer other than 200.

Bounded: it stops after ``seconds`` or ``max_requests``, whichever comes first,
and it refuses any target but loopback and private (lab) addresses.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ipaddress
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

AUDIO_BYTES = 300 * 1024
TIMEOUT = 120.0


@dataclass
class Result:
    """One request: when it started and ended (monotonic seconds), and what came back."""

    kind: str
    started: float
    ended: float
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the request succeeded."""
        return self.status == 200


@dataclass
class Load:
    """A running load; ``stop()`` ends it and returns the results."""

    url: str
    get_rate: float = 10.0
    asr_workers: int = 2
    seconds: float = 600.0
    max_requests: int = 20000
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the target and prepare the request bodies."""
        parts = urlsplit(self.url)
        check_target(parts.hostname or "")
        self.host, self.port = parts.hostname, parts.port or 80
        audio = base64.b64encode(os.urandom(AUDIO_BYTES)).decode()
        self.asr_body = json.dumps(
            {"audio_data": audio, "format": "wav", "sample_rate": 16000, "language": ""}
        ).encode()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.began = time.monotonic()

    def start(self) -> Load:
        """Start the GET pacer and the ASR workers."""
        self._threads = [threading.Thread(target=self._gets, daemon=True)]
        self._threads += [
            threading.Thread(target=self._asrs, daemon=True) for _ in range(self.asr_workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Result]:
        """Stop sending, wait for the requests in flight, return every result."""
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT + 10)
        with self._lock:
            return list(self.results)

    def running(self) -> bool:
        """Whether the load is still sending (not stopped, within its bounds)."""
        with self._lock:
            sent = len(self.results)
        elapsed = time.monotonic() - self.began
        return not self._stop.is_set() and elapsed < self.seconds and sent < self.max_requests

    def _record(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def _gets(self) -> None:
        pending: list[threading.Thread] = []
        next_at = time.monotonic()
        while self.running():
            thread = threading.Thread(target=self._one, args=("GET", "/api/v1/ai/info", None))
            thread.start()
            pending.append(thread)
            next_at += 1.0 / self.get_rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        for thread in pending:
            thread.join(TIMEOUT + 5)

    def _asrs(self) -> None:
        while self.running():
            self._one("POST", "/api/v1/ai/asr", self.asr_body)

    def _one(self, method: str, path: str, body: bytes | None) -> None:
        started = time.monotonic()
        status, error = None, ""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            headers = {"Connection": "close"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            status = answer.status
        except (OSError, http.client.HTTPException) as err:
            error = f"{type(err).__name__}: {err}"
        finally:
            connection.close()
        kind = "get" if method == "GET" else "asr"
        self._record(Result(kind, started, time.monotonic(), status, error))


def check_target(hostname: str) -> None:
    """Refuse any target but loopback and private addresses (the lab's own)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    except OSError as err:
        raise ValueError(f"cannot resolve {hostname!r}: {err}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_private):
            raise ValueError(
                f"refusing to load {hostname} ({address}): only loopback and private "
                "(lab) addresses are targets"
            )


def summary(results: list[Result]) -> dict:
    """Count the requests sent and failed, per kind, and the statuses of the failures."""
    counts: dict = {"sent": len(results), "failed": sum(not r.ok for r in results)}
    for kind in ("get", "asr"):
        mine = [r for r in results if r.kind == kind]
        counts[kind] = {"sent": len(mine), "failed": sum(not r.ok for r in mine)}
    failures: dict[str, int] = {}
    for result in results:
        if not result.ok:
            key = str(result.status) if result.status else result.error.split(":")[0]
            failures[key] = failures.get(key, 0) + 1
    counts["failures"] = failures
    return counts


def main() -> None:
    """Run a load for a while and print its summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the gateway, for example http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--get-rate", type=float, default=10.0, help="GETs per second")
    parser.add_argument("--asr-workers", type=int, default=2)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--results", help="write every result to this JSON file")
    args = parser.parse_args()
    load = Load(args.url, args.get_rate, args.asr_workers, args.seconds, args.max_requests)
    load.start()
    try:
        while load.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    results = load.stop()
    print(json.dumps(summary(results), indent=2))
    if args.results:
        with open(args.results, "w", encoding="utf-8") as handle:
            json.dump([asdict(r) for r in results], handle)


if __name__ == "__main__":
    main()
