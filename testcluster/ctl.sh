#!/bin/bash
# Stop/start single daemons of a running test cluster (for tests of controller/REST outages).
#
#   testcluster/ctl.sh <bookworm|trixie> <slurmctld|slurmrestd|slurmd|slurmdbd> <stop|start|restart|status>
#   testcluster/ctl.sh <bookworm|trixie> status
#
# "slurmrestd" means both instances (JWT on TCP, rest_auth/local on the unix socket).
# start waits until the daemon answers (slurmctld: scontrol ping; slurmd: node idle/mixed/allocated;
# slurmrestd: ping over TCP with the JWT and over the socket). Touches no other daemon and no config.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd /   # daemons inherit the cwd: never leave them in a directory a test may delete

usage() { echo "usage: $0 <bookworm|trixie> <slurmctld|slurmrestd|slurmd|slurmdbd> <stop|start|restart|status>" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "ctl.sh: must run as root" >&2; exit 1; }
[ $# -ge 2 ] || usage
tc_load "$1" || usage
[ -d "$D" ] || { echo "ctl.sh: cluster $NAME not set up (run start.sh $NAME)" >&2; exit 1; }
exec 9> "$TC_TOP/.lock"; flock 9

status_line() { local d; for d in "$@"; do if d_alive "$d"; then printf '%s=%s ' "$d" "$(d_pid "$d")"; else printf '%s=down ' "$d"; fi; done; echo; }

if [ "$2" = status ]; then
  if [ "$WITH_DBD" = 1 ]; then status_line munged mariadb slurmdbd slurmctld slurmd slurmrestd-jwt slurmrestd-local
  else status_line munged slurmctld slurmd slurmrestd-jwt slurmrestd-local; fi
  exit 0
fi
[ $# = 3 ] || usage
daemon=$2; action=$3

do_stop() {
  case $daemon in
    slurmrestd) d_stop_many slurmrestd-jwt slurmrestd-local ;;
    slurmctld|slurmd|slurmdbd) d_stop "$daemon" ;;
    *) usage ;;
  esac
}
do_start() {
  case $daemon in
    slurmrestd) start_slurmrestd; rest_ready ;;
    slurmctld) start_slurmctld ;;
    slurmd) start_slurmd ;;
    slurmdbd) [ "$WITH_DBD" = 1 ] || { echo "ctl.sh: $NAME has no slurmdbd" >&2; exit 1; }; start_slurmdbd ;;
    *) usage ;;
  esac
}
case $action in
  stop) do_stop ;;
  start) do_start ;;
  restart) do_stop; do_start ;;
  status) case $daemon in slurmrestd) status_line slurmrestd-jwt slurmrestd-local ;; *) status_line "$daemon" ;; esac ;;
  *) usage ;;
esac
