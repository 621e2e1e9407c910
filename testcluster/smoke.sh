#!/bin/bash
# Quick end-to-end check of the running test clusters (about 30-60 s per cluster).
#
#   testcluster/smoke.sh [bookworm|trixie|all] [--cycle]
#
# Per cluster: sbatch a job that completes and one that exits 3, a 4-rank MPI hello through
# `srun --mpi=pmix` (compiled with $TESTCLUSTER_MPICC), a too-long job on partition short
# (rejected), REST ping + job query with the JWT over TCP, REST ping over the unix socket, sacct
# (where slurmdbd runs), node down/resume, ctl.sh slurmctld stop/start and slurmrestd stop/start.
# --cycle also runs stop.sh, checks that no daemon and no mount is left, and start.sh again.
# NOTE: node down/resume and the controller restart disturb other jobs on the cluster.
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd -P)
WHICH=all; CYCLE=0
for a in "$@"; do case $a in all|bookworm|trixie) WHICH=$a ;; --cycle) CYCLE=1 ;; *) echo "usage: $0 [bookworm|trixie|all] [--cycle]" >&2; exit 2 ;; esac; done
[ "$WHICH" = all ] && CLUSTERS="bookworm trixie" || CLUSTERS=$WHICH

PASS=0; FAIL=0
now() { date +%s.%N; }
ok() { PASS=$((PASS + 1)); printf '  ok    %-44s %s\n' "$1" "${2:-}"; }
bad() { FAIL=$((FAIL + 1)); printf '  FAIL  %-44s %s\n' "$1" "${2:-}"; }
check() { local n=$1; shift; local o; if o=$("$@" 2>&1); then ok "$n" "$(tail -1 <<<"$o" | cut -c1-60)"; else bad "$n" "$(tail -2 <<<"$o" | tr '\n' ' ' | cut -c1-160)"; fi; }
retry() { local n=$1; shift; local i; for ((i = 0; i < n * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }

jfield() { "$B/scontrol" show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
wait_end() { # wait_end JOBID [SECONDS]: waits for a final state, prints "STATE EXITCODE"
  local i st
  for ((i = 0; i < ${2:-90} * 4; i++)); do
    st=$(jfield "$1" JobState)
    case $st in COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|BOOT_FAIL|DEADLINE|PREEMPTED) break ;; esac
    sleep 0.25
  done
  echo "$st $(jfield "$1" ExitCode)"
}
expect_job() { # expect_job JOBID "STATE EXIT"
  local got; got=$(wait_end "$1"); [ "$got" = "$2" ] && echo "job $1: $got" || { echo "job $1: got '$got', want '$2'"; return 1; }
}
rest() { # rest PATH [curl args]: GET over TCP with the root JWT
  local p=$1; shift
  curl -sf -m 10 -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: $(cat "$TESTCLUSTER_JWT_FILE")" "$@" "$TESTCLUSTER_REST_URL$p"
}
rest_ping_tcp() {
  local b; b=$(rest "/slurm/$TESTCLUSTER_REST_API_VERSION/ping") || return 1
  jq -e '.pings[0] | (.ping == "UP") or (.responding == true)' <<<"$b" >/dev/null && jq -c '.pings[0]|{hostname,ping,responding}' <<<"$b"
}
rest_ping_jwt_sock() {
  local b; b=$(curl -sf -m 10 --unix-socket "$TESTCLUSTER_REST_JWT_SOCKET" -H "X-SLURM-USER-NAME: root" \
    -H "X-SLURM-USER-TOKEN: $(cat "$TESTCLUSTER_JWT_FILE")" "http://localhost/slurm/$TESTCLUSTER_REST_API_VERSION/ping") || return 1
  jq -e '.pings[0] | (.ping == "UP") or (.responding == true)' <<<"$b" >/dev/null && jq -c '.pings[0]|{hostname,ping,responding}' <<<"$b"
}
rest_ping_sock() {
  local b; b=$(curl -sf -m 10 --unix-socket "$TESTCLUSTER_REST_SOCKET" "http://localhost/slurm/$TESTCLUSTER_REST_API_VERSION/ping") || return 1
  jq -e '.pings[0] | (.ping == "UP") or (.responding == true)' <<<"$b" >/dev/null && jq -c '.pings[0]|{hostname,ping,responding}' <<<"$b"
}
rest_job_state() { # rest_job_state JOBID WANT
  local b s; b=$(rest "/slurm/$TESTCLUSTER_REST_API_VERSION/job/$1") || return 1
  s=$(jq -r '.jobs[0].job_state | if type == "array" then .[0] else . end' <<<"$b")
  [ "$s" = "$2" ] && echo "REST job $1: $s" || { echo "REST job $1: $s, want $2"; return 1; }
}
mpi_ranks() { # 4 distinct ranks of 4
  local f=$1 n
  n=$(grep -o '^rank [0-9]* of 4 ' "$f" | sort -u | wc -l)
  [ "$n" = 4 ] && echo "$(grep -c '^rank' "$f") lines, 4 distinct ranks" || { echo "distinct ranks: $n"; cat "$f"; return 1; }
}
node_is() { local s; s=$("$B/sinfo" -h -N -n "$TESTCLUSTER_NODE" -o %T | head -1); [[ $s == $1* ]] && echo "$s" || { echo "node state $s, want $1"; return 1; }; }
ping_down() { ! "$B/scontrol" ping 2>/dev/null | grep -q 'is UP' && echo "controller down"; }
ping_up() { "$B/scontrol" ping 2>/dev/null | grep -q 'is UP' && echo "controller UP"; }
daemon_pids() { # pids recorded in the cluster's pid files (arg: state dir)
  local f; for f in "$1"/run/*.pid "$1"/munge/*.pid "$1"/run/mysqld/*.pid; do [ -s "$f" ] && cat "$f"; done; return 0
}
nothing_left() { # nothing_left PID...: none alive, nothing mounted under the chroot
  local p left=""
  for p in "$@"; do kill -0 "$p" 2>/dev/null && left="$left $p($(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-40))"; done
  [ -z "$left" ] || { echo "still running:$left"; return 1; }
  if [ -n "$TESTCLUSTER_CHROOT" ] && awk -v r="$TESTCLUSTER_CHROOT" '$2==r || index($2, r"/")==1' /proc/self/mounts | grep -q .; then
    echo "still mounted under $TESTCLUSTER_CHROOT"; return 1
  fi
  echo "$# daemons gone, no mount"
}

smoke() {
  local name=$1 t0; t0=$(now)
  local envf=/tmp/tether-testcluster/$name/env.sh
  echo "== $name"
  [ -f "$envf" ] || { bad "$name env file" "$envf missing: run start.sh $name"; return; }
  # shellcheck disable=SC1090
  . "$envf"
  B=$TESTCLUSTER_BIN_DIR
  W=$TESTCLUSTER_SHARED_DIR/smoke/$name.$$
  mkdir -p "$W"; chmod 1777 "$TESTCLUSTER_SHARED_DIR/smoke"; cd "$W" || return
  cp "$HERE/mpi_hello.c" .

  check "mpicc hello (${TESTCLUSTER_MPICC##*/testcluster/})" "$TESTCLUSTER_MPICC" -O1 -o hello mpi_hello.c
  local j_ok j_3 j_mpi
  j_ok=$("$B/sbatch" --parsable -J smoke-ok -o ok.out --wrap 'echo ok-$SLURM_JOB_ID')
  j_3=$("$B/sbatch" --parsable -J smoke-exit3 -o exit3.out --wrap 'echo failing; exit 3')
  j_mpi=$("$B/sbatch" --parsable -J smoke-mpi -n 4 -o mpi.out --wrap 'srun --mpi=pmix ./hello')
  check "sbatch -p short -t 5 rejected" bash -c "o=\$('$B/sbatch' -p short -t 5 -o /dev/null --wrap true 2>&1) && { echo \"accepted: \$o\"; exit 1; }; echo \"\$o\" | grep -i 'time limit'"
  check "REST ping over TCP + JWT" rest_ping_tcp
  check "REST ping over unix socket (local auth)" rest_ping_sock
  check "REST ping over unix socket + JWT" rest_ping_jwt_sock
  check "job exits 0 -> COMPLETED 0:0" expect_job "$j_ok" "COMPLETED 0:0"
  check "job output" grep -q "^ok-$j_ok" ok.out
  check "job exits 3 -> FAILED 3:0" expect_job "$j_3" "FAILED 3:0"
  check "REST GET job (exit 3) -> FAILED" rest_job_state "$j_3" FAILED
  check "4-rank srun --mpi=pmix hello COMPLETED" expect_job "$j_mpi" "COMPLETED 0:0"
  check "4-rank MPI hello: 4 distinct ranks" mpi_ranks mpi.out
  if [ "${TESTCLUSTER_SACCT:-0}" = 1 ]; then
    check "sacct shows FAILED 3:0" retry 10 bash -c "'$B/sacct' -n -X -P -j $j_3 -o State,ExitCode | grep -qx 'FAILED|3:0' && echo 'FAILED|3:0'"
    check "sacct shows the MPI job's srun step" retry 10 bash -c "'$B/sacct' -n -P -j $j_mpi -o JobID,NTasks | grep -qx '$j_mpi.0|4' && echo '$j_mpi.0|4'"
  else
    check "sacct -c (jobcomp file) shows the job" retry 10 bash -c "'$B/sacct' -c -n -X -P -j $j_3 -o JobID,State | grep -q '^$j_3|FAILED' && echo 'FAILED (sacct -c)'"
  fi
  check "node down" bash -c "'$B/scontrol' update nodename=$TESTCLUSTER_NODE state=down reason=smoke-test"
  check "node is down" retry 10 node_is down
  check "node resume" "$B/scontrol" update nodename="$TESTCLUSTER_NODE" state=resume
  check "node is idle again" retry 10 node_is idle
  check "ctl.sh slurmctld stop" "$HERE/ctl.sh" "$name" slurmctld stop
  check "controller is down" ping_down
  check "ctl.sh slurmctld start" "$HERE/ctl.sh" "$name" slurmctld start
  check "controller is up, job state kept" bash -c "$(declare -f jfield); B='$B'; [ \"\$(jfield $j_3 JobState)\" = FAILED ] && echo kept"
  check "REST works after controller restart" retry 10 rest_ping_tcp
  check "ctl.sh slurmrestd stop" "$HERE/ctl.sh" "$name" slurmrestd stop
  check "REST is down" bash -c "! curl -sf -m 2 '$TESTCLUSTER_REST_URL/slurm/$TESTCLUSTER_REST_API_VERSION/ping' >/dev/null && echo down"
  check "ctl.sh slurmrestd start" "$HERE/ctl.sh" "$name" slurmrestd start
  check "REST ping over TCP after restart" rest_ping_tcp
  check "REST ping over socket after restart" rest_ping_sock
  if [ "$CYCLE" = 1 ]; then
    local t1; t1=$(now)
    local pids; pids=$(daemon_pids "$(dirname "$(dirname "$TESTCLUSTER_SLURMCTLD_PID_FILE")")")
    check "stop.sh $name" "$HERE/stop.sh" "$name"
    # shellcheck disable=SC2086
    check "nothing left running or mounted" nothing_left $pids
    check "start.sh $name" "$HERE/start.sh" "$name"
    check "REST ping after start" rest_ping_tcp
    check "sbatch after start" bash -c "j=\$('$B/sbatch' --parsable -o /dev/null --wrap true) && $(declare -f jfield wait_end expect_job); B='$B'; expect_job \$j 'COMPLETED 0:0'"
    awk -v a="$t1" -v b="$(now)" 'BEGIN{printf "  (stop+start cycle %.1fs)\n", b-a}'
  fi
  cd / && rm -rf "$W"
  awk -v a="$t0" -v b="$(now)" -v n="$name" 'BEGIN{printf "  %s: %.1fs\n", n, b-a}'
}

for c in $CLUSTERS; do smoke "$c"; done
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
