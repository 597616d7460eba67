"""Entry point: load the settings (or refuse to start), then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from aiservice import config
from aiservice.api import Service
from aiservice.server import Server, log

DEFAULT_CONFIG = "config/ai-inference-service.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: `-config PATH` (Go flag style) or `--config PATH`."""
    parser = argparse.ArgumentParser(prog="ai-inference-service")
    parser.add_argument(
        "-config",
        "--config",
        default=DEFAULT_CONFIG,
        help=f"configuration file (default: {DEFAULT_CONFIG}, relative to the working dir)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the service; return 1 with a message on stderr when the settings are refused."""
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        settings = config.load(args.config, os.environ)
    except config.ConfigError as err:
        print(f"ai-inference-service: refusing to start: {err}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    service = Service(settings)
    with Server(service) as server:
        log.info(
            "listening on %s:%d (node %s); unit-manager at %s:%d; max_single_delta_len=%d "
            "audio_stream_chunk_size=%d audio_stream_chunk_delay_ms=%d",
            settings["server.host"],
            settings["server.port"],
            service.node,
            settings["zmq.unit_manager_host"],
            settings["zmq.unit_manager_port"],
            settings["ai.request.max_single_delta_len"],
            settings["ai.request.audio_stream_chunk_size"],
            settings["ai.request.audio_stream_chunk_delay_ms"],
        )
        server.serve_forever()
    return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    """Leave serve_forever through SystemExit (the process runs as PID 1)."""
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
