"""Request counters, rendered in the Prometheus text format."""

from __future__ import annotations

import threading
import time
from collections import Counter


class Metrics:
    """Counts HTTP requests by method, route and status."""

    def __init__(self) -> None:
        """Start with no requests counted."""
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._started = time.time()

    def observe(self, method: str, route: str, status: int) -> None:
        """Count one served request."""
        with self._lock:
            self._requests[(method, route, status)] += 1

    def render(self) -> str:
        """Render the counters in the Prometheus text format."""
        with self._lock:
            counts = sorted(self._requests.items())
        lines = [
            "# HELP ai_inference_http_requests_total HTTP requests served.",
            "# TYPE ai_inference_http_requests_total counter",
            *(
                f'ai_inference_http_requests_total{{method="{method}",route="{route}",'
                f'status="{status}"}} {count}'
                for (method, route, status), count in counts
            ),
            "# HELP ai_inference_process_start_time_seconds Start time since the Unix epoch.",
            "# TYPE ai_inference_process_start_time_seconds gauge",
            f"ai_inference_process_start_time_seconds {self._started:.3f}",
        ]
        return "\n".join(lines) + "\n"
