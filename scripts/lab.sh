#!/usr/bin/env bash
# The local lab: containers standing in for GPU servers and a gateway, on this
# machine's Docker engine, converged with site.yml.
#   scripts/lab.sh up       set up everything, create the lab, converge it (again)
#   scripts/lab.sh down     remove the lab
#   scripts/lab.sh status   list the lab's hosts
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export LAB_NETWORK=ai-fleet-lab LAB_IMAGE_ARCHIVES="$root/.cache/images"
export LAB_GATEWAY_PORT="${LAB_GATEWAY_PORT:-8080}"
export LAB_PROMETHEUS_PORT="${LAB_PROMETHEUS_PORT:-9090}" LAB_ALERTMANAGER_PORT="${LAB_ALERTMANAGER_PORT:-9093}"
inventory="$root/.lab/inventory"
venv="$root/.venv"

log() { printf 'lab: %s\n' "$*" >&2; }

up() {
  scripts/bootstrap.sh
  scripts/docker-engine.sh
  scripts/lab-images.sh >/dev/null
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
  # The lab's inventory is written once; from then on it is edited like a real
  # one, and the hosts it lists are created here.
  if [ ! -f "$inventory/hosts.yml" ]; then
    mkdir -p "$inventory"
    cp molecule/shared/lab_hosts.yml "$inventory/hosts.yml"
  fi
  ansible-playbook -i "$inventory/hosts.yml" molecule/shared/create.yml -e "lab_inventory_dir=$inventory"
  ansible-playbook -i "$inventory" molecule/shared/prepare.yml
  ansible-playbook -i "$inventory" molecule/default/converge.yml
  # The first GPU host, as Ansible reaches it (lab-connection.yml, hosts.yml).
  local first address port
  first=$(ansible-inventory -i "$inventory" --graph gpu_nodes 2>/dev/null | awk -F'--' '/--/ {print $NF; exit}')
  address=$(docker inspect --format "{{(index .NetworkSettings.Networks \"$LAB_NETWORK\").IPAddress}}" "$first")
  port=$(ansible-inventory -i "$inventory" --host "$first" 2>/dev/null \
         | python3 -c 'import json, sys; print(json.load(sys.stdin).get("ansible_port", 22))')
  # Prometheus and Alertmanager, when the lab's inventory has a monitoring host.
  local monitoring=""
  if ansible-inventory -i "$inventory" --graph monitoring 2>/dev/null | grep -q -- '--'; then
    monitoring="
  prometheus:    http://127.0.0.1:$LAB_PROMETHEUS_PORT/alerts   (targets: /targets)
  alertmanager:  http://127.0.0.1:$LAB_ALERTMANAGER_PORT/"
  fi
  cat <<MSG

The lab is up: $(docker ps --filter "label=ai-fleet-lab=$LAB_NETWORK" --format '{{.Names}}' | sort | tr '\n' ' ')
  gateway:       http://127.0.0.1:$LAB_GATEWAY_PORT/api/v1/ai/info   (balanced over the GPU hosts)${monitoring}
  inventory:     $inventory/hosts.yml   (add a GPU node: a line under gpu_nodes, then make lab)
  over SSH:      ssh -i .cache/lab-ssh/id_ed25519 -o UserKnownHostsFile=.lab/known_hosts -p $port ops@$address
  a shell:       docker exec -it $first bash
  run a play:    . .venv/bin/activate && ansible-playbook -i .lab/inventory site.yml
  run the tests: . .venv/bin/activate && pytest tests/integration --ansible-inventory=.lab/inventory --connection=ansible
  remove it:     make lab-down
MSG
}

down() {
  if [ ! -x "$venv/bin/ansible-playbook" ]; then
    scripts/bootstrap.sh
  fi
  scripts/docker-engine.sh
  # The lab's hosts are found by label: the play runs on this machine only.
  "$venv/bin/ansible-playbook" -i localhost, molecule/shared/destroy.yml
  rm -rf "$root/.lab"
  log "the lab is removed"
}

status() {
  docker ps -a --filter "label=ai-fleet-lab=$LAB_NETWORK" \
    --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
