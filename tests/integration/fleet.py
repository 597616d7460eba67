"""What the suites that run operations on a whole fleet under load share.

- reaching a lab host by name (testinfra over the inventory's connection) and
  the address of a lab host on this machine's Docker network;
- `with UnderLoad(target, 'event') as run:` runs loadgen.py's steady load
  through `target.url` around the block and counts every request;
- `record(event, counts)` keeps the counts in
  .cache/test-results/operations-under-load.json;
- the original guide's Compose stack on a node (containers under its names,
  its labels, ports and IPC volume), as deploy_gpu_ai_nodes.sh leaves it
  (docs/original-guide.md).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import testinfra
from conftest import ROOT, run_ok, wait_for
from loadgen import Load, summary

REPORT = ROOT / ".cache" / "test-results" / "operations-under-load.json"
SETTLE_SECONDS = 4
#: The node stack's containers, as the ai_node role names them.
STACK_CONTAINERS = ("ai-inference-service", "edge-unit-manager", "edge-llm-node")


def host_of(inventory: str, name: str):
    """A testinfra host reached with the inventory's own connection settings."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


def container_address(name: str) -> str | None:
    """The address of a lab host (a container of this machine's engine), if it is one."""
    found = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.split()[0] if found.returncode == 0 and found.stdout.split() else None


def record(event: str, counts: dict, **facts) -> None:
    """Append one event's counts to the report file."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    events = json.loads(REPORT.read_text()) if REPORT.exists() else []
    events = [e for e in events if e["event"] != event]
    events.append({"event": event, **counts, **facts})
    REPORT.write_text(json.dumps(events, indent=2) + "\n")


class UnderLoad:
    """`with UnderLoad(target, 'event') as run:` runs the load at `target.url` around the block."""

    def __init__(self, target, event: str):
        """Remember the target (anything with a `url`) and the event's name."""
        self.target, self.event = target, event

    def __enter__(self):
        """Start the load and let it settle."""
        self.load = Load(self.target.url).start()
        time.sleep(SETTLE_SECONDS)
        return self

    def __exit__(self, *exc):
        """Let the fleet settle, stop the load and count."""
        time.sleep(SETTLE_SECONDS)
        self.results = self.load.stop()
        self.counts = summary(self.results)
        return False


# The original guide's Compose stack on one node, as deploy_gpu_ai_nodes.sh left it.
GUIDE_PROJECT = "gpu-ai"
GUIDE_NETWORK = f"{GUIDE_PROJECT}_default"
GUIDE_VOLUME = f"{GUIDE_PROJECT}_edge_ipc"
# The service's configuration folder in the guide's checkout, mounted at /app/config.
GUIDE_CONFIG_DIR = "/root/VideoCall-System/meeting-system/backend/ai-inference-service/config"
# Settings the guide's node ran with that the node role does not manage (and
# one it does: the chunk delay), to be kept on takeover.
GUIDE_CONFIG = """\
server:
  host: "0.0.0.0"
  port: 8085
  read_timeout: 90
zmq:
  unit_manager_host: "edge-unit-manager"
  unit_manager_port: 19001
  timeout: 30
jwt:
  secret: "guide-node-secret-0123456789abcdefghijklmnop"
  expire_hours: 12
log:
  level: "debug"
  file: "logs/ai-inference-service.log"
redis:
  host: "redis.guide.lab"
  port: 6380
  db: 2
  password: "guide-redis-password-0123"
monitoring:
  enabled: false
ai:
  models:
    asr:
      model_name: "asr-model"
    emotion:
      model_name: "emotion-model"
    synthesis:
      model_name: "synthesis-model"
  request:
    max_single_delta_len: 2048
    audio_stream_chunk_size: 512
    audio_stream_chunk_delay_ms: 20
"""
GUIDE_CONTAINERS = (
    "meeting-ai-inference-service",
    "meeting-edge-unit-manager",
    "meeting-edge-llm-node",
)


def guide_stack(host) -> dict[str, str]:
    """`{container: id}` of the guide's containers on a node (absent ones left out)."""
    found = {}
    for container in GUIDE_CONTAINERS:
        result = host.run(f"docker inspect -f '{{{{.Id}}}}' {container}")
        if result.rc == 0:
            found[container] = result.stdout.strip()
    return found


def run_guide_stack(host, settings: dict, name: str) -> None:
    """Replace a node's stack with the guide's: its names, labels, ports, IPC volume.

    ``settings`` are the node's ai_node settings (inventory over the role's defaults).
    """
    remove_guide_stack(host)
    host.run(f"docker rm -f {' '.join(STACK_CONTAINERS)}")
    run_ok(host, "rm", "-f", "/var/lib/ai-fleet/node.fingerprint")
    labels = ["--label", f"com.docker.compose.project={GUIDE_PROJECT}"]
    run_ok(host, "docker", "network", "create", *labels, GUIDE_NETWORK)
    run_ok(host, "docker", "volume", "create", *labels, GUIDE_VOLUME)
    run_ok(host, "mkdir", "-p", GUIDE_CONFIG_DIR)
    run_ok(
        host,
        "sh",
        "-c",
        f"cat > {GUIDE_CONFIG_DIR}/ai-inference-service.yaml <<'EOF'\n{GUIDE_CONFIG}EOF",
    )
    common = ["-d", "--restart", "unless-stopped", "--network", GUIDE_NETWORK, *labels]
    edge = settings["ai_node_edge_llm_image"]
    ipc = ["-v", f"{GUIDE_VOLUME}:/tmp"]
    containers = {
        "meeting-edge-unit-manager": [
            *(*ipc, "-p", "0.0.0.0:8801:19001"),
            *("-w", settings["ai_node_unit_manager_workdir"], edge),
            *settings["ai_node_unit_manager_command"],
        ],
        "meeting-edge-llm-node": [
            *(*ipc, "-v", f"{settings['ai_node_model_dir']}:/work/models:ro"),
            *("-w", settings["ai_node_llm_workdir"], edge),
            *settings["ai_node_llm_command"],
        ],
        "meeting-ai-inference-service": [
            *("-p", f"0.0.0.0:{settings['ai_node_http_port']}:8085"),
            *("-v", f"{GUIDE_CONFIG_DIR}:/app/config:ro"),
            *("-e", "ZMQ_UNIT_MANAGER_HOST=meeting-edge-unit-manager"),
            *("-e", "ZMQ_UNIT_MANAGER_PORT=19001"),
            *("-e", f"JWT_SECRET={secrets.token_hex(20)}"),
            settings["ai_node_inference_image"],
        ],
    }
    for container, options in containers.items():
        run_ok(host, "docker", "run", *common, "--name", container, *options)
    deep = f"http://127.0.0.1:{settings['ai_node_http_port']}/api/v1/ai/health"
    healthy = wait_for(lambda: host.run(f"curl -fsS {deep}").rc == 0, timeout=60)
    assert healthy, f"the guide's stack on {name} is not healthy"


def remove_guide_stack(host) -> None:
    """Remove what run_guide_stack made on a host, whatever of it is there."""
    host.run(f"docker rm -f {' '.join(GUIDE_CONTAINERS)}")
    host.run(f"docker network rm {GUIDE_NETWORK}")
    host.run(f"docker volume rm {GUIDE_VOLUME}")
    host.run("rm -rf /root/VideoCall-System")
