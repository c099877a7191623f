#!/usr/bin/env bash
# A Docker engine for the image tests and the cluster rehearsal on one Debian machine:
#
#   bash scripts/docker-engine.sh start   # install docker.io + debootstrap if missing, start dockerd
#   bash scripts/docker-engine.sh stop    # stop the dockerd this script started
#
# dockerd runs as the machines here allow it: the overlay2 storage driver where an overlay mount
# works on the engine's data folder, else vfs (which copies every layer and every container's
# file system whole: several times slower), no bridge and no iptables (containers use host
# networking or none, never a bridge), and gVisor's runsc registered as the runtime `runsc` with
# --platform=ptrace and --network=none (without the latter runsc refuses to start here). An
# engine that already answers is used as it is (and not stopped). CODEDPO_DOCKER_STORAGE_DRIVER
# forces a driver.
set -euo pipefail

state_dir="${CODEDPO_DOCKERD_STATE:-/tmp/codedpo-dockerd}"
pid_file="$state_dir/dockerd.pid"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# overlay2 if an overlay mount works where dockerd keeps its data (not on every file system, and
# not inside every container), else vfs.
storage_driver() {
  local probe
  as_root mkdir -p /var/lib/docker
  probe="$(as_root mktemp -d /var/lib/docker/.overlay-probe.XXXXXX)"
  as_root mkdir -p "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
  if as_root mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
      "$probe/merged" 2>/dev/null; then
    as_root umount "$probe/merged"
    as_root rm -rf "$probe"
    echo overlay2
  else
    as_root rm -rf "$probe"
    echo vfs
  fi
}

start() {
  if docker info >/dev/null 2>&1; then
    echo "docker engine: already running"
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing docker.io and debootstrap with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq docker.io debootstrap >/dev/null 2>&1 || {
      as_root apt-get update -qq
      as_root apt-get install -y -qq docker.io debootstrap
    }
  fi
  runsc="$(command -v runsc)" || { echo "runsc is not installed (bash scripts/install.sh)" >&2; exit 1; }
  as_root mkdir -p /etc/docker "$state_dir"
  printf '{\n  "runtimes": {"runsc": {"path": "%s", "runtimeArgs": ["--platform=ptrace", "--network=none"]}}\n}\n' \
    "$runsc" | as_root tee /etc/docker/daemon.json >/dev/null
  driver="${CODEDPO_DOCKER_STORAGE_DRIVER:-$(storage_driver)}"
  echo "docker engine: storage driver $driver"
  as_root sh -c "dockerd --storage-driver=$driver --bridge=none --iptables=false >'$state_dir/dockerd.log' 2>&1 & echo \$! >'$pid_file'"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { echo "docker engine: started (pid $(cat "$pid_file"))"; return; }
    sleep 1
  done
  echo "dockerd did not answer within 60 s; its log:" >&2
  tail -20 "$state_dir/dockerd.log" >&2
  exit 1
}

stop() {
  [ -f "$pid_file" ] || { echo "docker engine: not started by this script"; return; }
  pid="$(cat "$pid_file")"
  as_root kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  rm -f "$pid_file"
  echo "docker engine: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: bash scripts/docker-engine.sh start|stop" >&2; exit 2 ;;
esac
