#!/bin/sh
# Run inside a lab host (by create.yml, through `docker exec`): give it the SSH
# access a real server has. A user with a key and password-less sudo, sshd on
# the given port with root and password logins off. Idempotent: prints
# "changed" when it changed anything, then the host's ED25519 public key.
#   lab-ssh-access.sh USER PORT PUBLIC-KEY
set -eu
user=$1
port=$2
key=$3
changed=""

# Writes $2 to file $1 (mode $3) unless it already holds exactly that.
put() {
  if [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then
    printf '%s\n' "$2" >"$1"
    changed=1
  fi
  chmod "$3" "$1"
}

if ! id -u "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
  changed=1
fi
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
put "$home/.ssh/authorized_keys" "$key" 0600
chown "$user:$user" "$home/.ssh/authorized_keys"
put "/etc/sudoers.d/lab-$user" "$user ALL=(ALL:ALL) NOPASSWD: ALL" 0440
# Ansible's temporary folder of root (become), made as Ansible makes it, so
# that the first run does not warn that it had to create it.
install -d -m 0700 /root/.ansible /root/.ansible/tmp
put /etc/ssh/sshd_config.d/lab.conf "Port $port
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no" 0644

if [ -n "$changed" ] || ! systemctl is-active --quiet ssh; then
  systemctl restart ssh
  changed=1
fi
# sshd answers once it listens on the port (at most 10 s).
i=0
until ss -Hltn "sport = :$port" | grep -q .; do
  i=$((i + 1))
  if [ "$i" -gt 100 ]; then
    echo "sshd does not listen on port $port" >&2
    exit 1
  fi
  sleep 0.1
done
[ -z "$changed" ] || echo changed
cat /etc/ssh/ssh_host_ed25519_key.pub
