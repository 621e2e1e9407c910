#!/bin/bash
# End-to-end check of the multinode test cluster (testcluster/multinode.sh), each step timed.
#
#   testcluster/multinode-test.sh [--cycle]
#
#   nodes idle (3 x CPUs=4); srun -N3 hostname = node1..node3; 4-rank OpenMPI hello over 2 nodes
#   (srun --mpi=pmix -N2 -n4, from the host and inside sbatch); SLURM_CONF inside a job; REST ping
#   with the JWT; the site files; NODE_FAIL of a 2-node --no-requeue job when node2's link is cut,
#   and when node2's slurmd is killed, and node2 back in service afterwards.
#   --cycle first runs "multinode.sh stop", checks that nothing of it is left, and starts it again.
# Needs a running cluster (it runs "multinode.sh start", which is a no-op then). Disturbs only the
# multinode cluster: do not run it while other tests use that cluster. Exit code: failures.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd -P)
MNSH=$HERE/multinode.sh
CYCLE=0
for a in "$@"; do case $a in --cycle) CYCLE=1 ;; *) echo "usage: $0 [--cycle]" >&2; exit 2 ;; esac; done

PASS=0; FAIL=0
ms() { date +%s%N; }
secs() { awk -v a="$1" -v b="$(ms)" 'BEGIN{printf "%.1f", (b-a)/1e9}'; }
ok() { PASS=$((PASS + 1)); printf '  ok    %-46s %s\n' "$1" "${2:-}"; }
bad() { FAIL=$((FAIL + 1)); printf '  FAIL  %-46s %s\n' "$1" "${2:-}"; }

leftovers() { # what of the multinode cluster exists (prints it)
  ip -br link show 2>/dev/null | awk '$1 ~ /^(tbr0|tmn-node[0-9]+)(@|$)/ {print "link " $1}'
  ip netns list 2>/dev/null | awk '$1 ~ /^tmn-/ {print "netns " $1}'
  grep -F "# tether-testcluster-multinode" /etc/hosts | sed 's/^/hosts /'
  local p; for p in /tmp/tether-testcluster/multinode/run/*.pid /tmp/tether-testcluster/multinode/munge/munged.pid; do
    [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && echo "daemon $(basename "$p") $(cat "$p")"; done
  ss -ltn 2>/dev/null | awk '$4 ~ /:(6917|6920)$/ {print "listener " $4}'
}

if [ "$CYCLE" = 1 ]; then
  T=$(ms); "$MNSH" stop >/dev/null; t=$(secs "$T")
  L=$(leftovers); [ -z "$L" ] && ok "stop leaves nothing" "${t}s" || bad "stop leaves nothing" "$(echo $L)"
fi
T=$(ms); O=$("$MNSH" start 2>&1); RC=$?
[ $RC = 0 ] && ok "multinode.sh start" "$(secs "$T")s" || { bad "multinode.sh start" "$O"; echo "$PASS passed, $FAIL failed"; exit 1; }
# shellcheck disable=SC1091
. /tmp/tether-testcluster/multinode/env.sh
B=$TESTCLUSTER_BIN_DIR
W=$TESTCLUSTER_SHARED_DIR/multinode-test; mkdir -p "$W"; chmod 1777 "$W"; cd "$W" || exit 1

jfield() { "$B/scontrol" show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
wait_state() { # wait_state JOBID SECONDS STATE...: until the job is in one of STATEs; prints it
  local j=$1 n=$2 i st; shift 2
  for ((i = 0; i < n * 10; i++)); do st=$(jfield "$j" JobState); case " $* " in *" $st "*) break ;; esac; sleep 0.1; done
  echo "$st"
}
FINAL="COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY BOOT_FAIL DEADLINE PREEMPTED"

# 1 nodes
O=$("$B/sinfo" -h -N -o '%N %T %c' | sort -u | tr '\n' ' ')
[ "$O" = "node1 idle 4 node2 idle 4 node3 idle 4 " ] && ok "3 idle nodes, 4 CPUs each" "$O" || bad "3 idle nodes, 4 CPUs each" "$O"

# 2 hostnames (UTS ns) and addresses (net ns)
T=$(ms); O=$("$B/srun" -N3 hostname 2>&1 | sort | tr '\n' ' ')
[ "$O" = "node1 node2 node3 " ] && ok "srun -N3 hostname" "$O($(secs "$T")s)" || bad "srun -N3 hostname" "$O"
O=$("$B/srun" -N3 -l sh -c 'ip -4 -o addr show eth0 | awk "{print \$4}"' 2>&1 | sort | tr '\n' ' ')
[ "$O" = "0: 10.77.0.11/24 1: 10.77.0.12/24 2: 10.77.0.13/24 " ] && ok "one address per node" "$O" || bad "one address per node" "$O"

# 3 MPI over two nodes
T=$(ms)
if cmp -s "$HERE/mpi_hello.c" mpi_hello.c && [ -x mpi_hello ]; then :; else
  cp "$HERE/mpi_hello.c" . && "$TESTCLUSTER_MPICC" -o mpi_hello mpi_hello.c; fi
[ -x mpi_hello ] && ok "mpicc mpi_hello" "$(secs "$T")s" || bad "mpicc mpi_hello"
mpi_check() { # mpi_check OUTPUT: 4 ranks, sum 6, 2 distinct hosts
  local r h; r=$(grep -cE '^rank [0-3] of 4 on node[1-3] pid [0-9]+ sum 6$' <<<"$1"); h=$(grep -oE ' on node[0-9]+' <<<"$1" | sort -u | wc -l)
  [ "$r" = 4 ] && [ "$h" = 2 ]
}
T=$(ms); O=$("$B/srun" --mpi=pmix -N2 -n4 ./mpi_hello 2>&1)
mpi_check "$O" && ok "srun --mpi=pmix -N2 -n4 (host)" "$(grep -oE ' on node[0-9]+' <<<"$O" | sort | uniq -c | tr -s ' \n' ' ')($(secs "$T")s)" \
  || bad "srun --mpi=pmix -N2 -n4 (host)" "$(tr '\n' ' ' <<<"$O" | cut -c1-300)"
T=$(ms); J=$("$B/sbatch" --parsable -N2 -n4 -o "$W/mpi-%j.out" --wrap 'srun --mpi=pmix -N2 -n4 ./mpi_hello')
ST=$(wait_state "$J" 60 $FINAL); O=$(cat "$W/mpi-$J.out" 2>/dev/null)
[ "$ST" = COMPLETED ] && mpi_check "$O" && ok "sbatch -N2 -n4 + srun --mpi=pmix" "job $J $ST ($(secs "$T")s)" \
  || bad "sbatch -N2 -n4 + srun --mpi=pmix" "job $J $ST: $(tr '\n' ' ' <<<"$O" | cut -c1-300)"

# 4 the job environment: slurmstepd sets SLURM_CONF to our config even with --export=NONE
# (so srun in a job submitted through REST, whose environment has no SLURM_CONF, still finds us)
J=$("$B/sbatch" --parsable --export=NONE -o "$W/env-%j.out" --wrap 'echo "conf=$SLURM_CONF"')
ST=$(wait_state "$J" 30 $FINAL); O=$(cat "$W/env-$J.out" 2>/dev/null)
[ "$O" = "conf=$TESTCLUSTER_SLURM_CONF" ] && ok "SLURM_CONF in a job (--export=NONE)" || bad "SLURM_CONF in a job (--export=NONE)" "$ST $O"

# 5 REST
O=$(curl -sf -m 5 -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: $(cat "$TESTCLUSTER_JWT_FILE")" \
  "$TESTCLUSTER_REST_URL/slurm/$TESTCLUSTER_REST_API_VERSION/ping")
jq -e '.pings[0].ping=="UP"' <<<"$O" >/dev/null 2>&1 && ok "REST ping (JWT)" "$(jq -c '.pings[0]|{hostname,ping}' <<<"$O")" || bad "REST ping (JWT)" "$O"
M=$(stat -c %a "$TESTCLUSTER_JWT_FILE"); [ "$M" = 600 ] && ok "JWT file mode 0600" || bad "JWT file mode 0600" "$M"
O=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: bad" \
  "$TESTCLUSTER_REST_URL/slurm/$TESTCLUSTER_REST_API_VERSION/ping")
[ "$O" != 200 ] && ok "REST rejects a bad token" "HTTP $O" || bad "REST rejects a bad token" "HTTP $O"
grep -q "bin_dir = \"$B\"" "$TESTCLUSTER_SITE_SBATCH" && grep -q 'url = "http://127.0.0.1:6920"' "$TESTCLUSTER_SITE_REST" \
  && ok "site files" || bad "site files"

# 6/7 NODE_FAIL
nodefail() { # nodefail cut|kill
  local how=$1 J T ST r
  J=$("$B/sbatch" --parsable -N2 -n2 -w node1,node2 --no-requeue -o "$W/nf-%j.out" --wrap 'srun -l sh -c "echo start \$(hostname); sleep 300"')
  ST=$(wait_state "$J" 30 RUNNING $FINAL); [ "$ST" = RUNNING ] || { bad "NODE_FAIL ($how): job running" "$ST"; return; }
  sleep 1
  T=$(ms)
  if [ "$how" = cut ]; then "$MNSH" cut node2; else "$MNSH" kill-slurmd node2 >/dev/null; fi
  ST=$(wait_state "$J" 60 $FINAL)
  r=$(secs "$T")
  [ "$ST" = NODE_FAIL ] && ok "NODE_FAIL after $how node2" "job $J after ${r}s, $(jfield "$J" Reason) $(jfield "$J" ExitCode), node2 $("$B/sinfo" -h -n node2 -o %T)" \
    || bad "NODE_FAIL after $how node2" "job $J $ST after ${r}s"
  T=$(ms)
  if [ "$how" = cut ]; then O=$("$MNSH" restore node2 2>&1); else O=$("$MNSH" start-slurmd node2 2>&1); fi
  [ $? = 0 ] && ok "node2 back ($([ "$how" = cut ] && echo restore || echo start-slurmd))" "$O" || bad "node2 back" "$O"
  # node2's orphaned step is killed when its slurmd re-registers
  local i p
  for ((i = 0; i < 50; i++)); do
    p=$(ip netns pids "$TESTCLUSTER_NETNS_node2" | grep -vx "$(cat "$TESTCLUSTER_SLURMD_PID_node2")" | tr '\n' ' ')
    [ -z "${p// }" ] && break; sleep 0.2
  done
  [ -z "${p// }" ] && ok "no job processes left on node2" "$(secs "$T")s" || bad "no job processes left on node2" "$p"
}
nodefail cut
nodefail kill
O=$("$B/sinfo" -h -N -o '%N %T' | sort -u | tr '\n' ' ')
[ "$O" = "node1 idle node2 idle node3 idle " ] && ok "all nodes idle at the end" || bad "all nodes idle at the end" "$O"

echo "$PASS passed, $FAIL failed"
exit "$FAIL"
