#!/usr/bin/env bash
# The Docker engine for chaospika's container tests, with the host's network left alone.
#
#   bash .ci/docker.sh [start]   install docker.io if dockerd is missing, start dockerd
#                                (unless one answers already) and wait until it is ready
#   bash .ci/docker.sh stop      stop the dockerd this script started, by its pid
#   bash .ci/docker.sh status    exit 0 if the engine answers
#
# dockerd runs as `dockerd --iptables=false --ip-forward=false --ip-masq=false
# --bridge=none`: no iptables rules, no docker0 bridge; containers use --network host.
# Its socket is the default one (/var/run/docker.sock, what the tests and the Docker
# SDK use unless DOCKER_HOST says otherwise); its pid is in $CHAOSPIKA_DOCKERD_PIDFILE
# (default /var/run/chaospika-dockerd.pid), its log in $CHAOSPIKA_DOCKERD_LOG (default
# /tmp/chaospika-dockerd.log). A second engine beside it: CHAOSPIKA_DOCKERD_SOCKET,
# CHAOSPIKA_DOCKERD_DATA_ROOT and CHAOSPIKA_DOCKERD_EXEC_ROOT (all three) and a pidfile.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

pidfile=${CHAOSPIKA_DOCKERD_PIDFILE:-/var/run/chaospika-dockerd.pid}
log=${CHAOSPIKA_DOCKERD_LOG:-/tmp/chaospika-dockerd.log}
socket=${CHAOSPIKA_DOCKERD_SOCKET:-/var/run/docker.sock}
roots=()
[ -n "${CHAOSPIKA_DOCKERD_DATA_ROOT:-}" ] && roots+=(--data-root "$CHAOSPIKA_DOCKERD_DATA_ROOT")
[ -n "${CHAOSPIKA_DOCKERD_EXEC_ROOT:-}" ] && roots+=(--exec-root "$CHAOSPIKA_DOCKERD_EXEC_ROOT")
# The Debian client (/usr/bin/docker) matches the engine; another `docker` on PATH may not.
client=/usr/bin/docker

answers() {
  [ -S "$socket" ] && [ -x "$client" ] &&
    timeout 5 "$client" -H "unix://$socket" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start() {
  if ! command -v dockerd >/dev/null || [ ! -x "$client" ]; then
    echo "docker.sh: installing docker.io"
    apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
  fi
  if answers; then
    echo "docker.sh: an engine already answers on $socket"
    return 0
  fi
  echo "docker.sh: starting dockerd (log $log, pid in $pidfile)"
  setsid dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --pidfile "$pidfile" -H "unix://$socket" "${roots[@]}" </dev/null >>"$log" 2>&1 &
  for _ in $(seq 1 120); do
    if answers; then
      echo "docker.sh: dockerd $("$client" -H "unix://$socket" version --format '{{.Server.Version}}') ready"
      return 0
    fi
    sleep 0.5
  done
  echo "docker.sh: dockerd did not answer within 60 s; log tail:" >&2
  tail -n 30 "$log" >&2 || true
  return 1
}

stop() {
  if [ ! -s "$pidfile" ]; then
    echo "docker.sh: no pidfile $pidfile: nothing to stop"
    return 0
  fi
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "docker.sh: dockerd $pid is not running"
    rm -f "$pidfile"
    return 0
  fi
  echo "docker.sh: stopping dockerd $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { echo "docker.sh: dockerd stopped"; return 0; }
    sleep 0.5
  done
  echo "docker.sh: dockerd $pid ignored SIGTERM for 30 s: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
