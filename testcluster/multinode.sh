#!/bin/bash
# A real 3-node Slurm 22.05 cluster on this one machine ("multinode"), next to the single-node
# bookworm/trixie clusters of start.sh. Each node is one network namespace with its own veth,
# address and hostname (UTS namespace); files, uids and the process table are shared.
#
#   testcluster/multinode.sh start              install what is missing, set up the network, start, wait (idempotent)
#   testcluster/multinode.sh stop [--purge]     stop the daemons we recorded, remove netns/veths/bridge/hosts lines
#   testcluster/multinode.sh status             daemons, links and node states
#   testcluster/multinode.sh cut NODE           ip link set <veth of NODE> down (host side): NODE loses the network
#   testcluster/multinode.sh restore NODE       link up again; waits until NODE is back in service
#   testcluster/multinode.sh kill-slurmd NODE   kill -9 the slurmd of NODE
#   testcluster/multinode.sh start-slurmd NODE  start it again; waits until NODE is back in service
#
#   host (root netns): bridge tbr0 10.77.0.1/24, munged (own socket), slurmctld :6917 (own UTS ns,
#                      hostname mnctl), slurmrestd 127.0.0.1:6920 (JWT, user tetherrest)
#   netns tmn-nodeN:   eth0 10.77.0.1N/24 <-> veth tmn-nodeN on tbr0, slurmd -N nodeN :6918 (hostname nodeN)
#
# Runtime state: /tmp/tether-testcluster/multinode (env.sh, etc/slurm.conf, bin/ CLI wrappers, ...).
# Writes site-configs/testcluster/slurm-multinode-{sbatch,rest}.toml. See README.md ("multinode").
# Needs root. Touches nothing of the bookworm/trixie clusters.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd /   # daemons inherit the cwd: never leave them in a directory a test may delete

# ROOT is used by lib.sh (pid_alive, real_exe): "" = on the host
NAME=multinode
# shellcheck disable=SC2034
ROOT=""
MN=$TC_TOP/multinode
TC_LOG=$TC_TOP/multinode.log
CONF=$MN/etc/slurm.conf
BIN=$MN/bin
ENV_FILE=$MN/env.sh
JWT_KEY=$MN/jwt_hs256.key
JWT_FILE=$MN/jwt-root.token
MUNGE_DIR=$MN/munge
MUNGE_SOCK=$MUNGE_DIR/munge.socket
SITE_SBATCH=$TC_SITE_DIR/slurm-multinode-sbatch.toml
SITE_REST=$TC_SITE_DIR/slurm-multinode-rest.toml
NODES="node1 node2 node3"
NET=10.77.0                   # only on tbr0 and inside our own namespaces
BR=tbr0
CTL_HOST=mnctl                # slurmctld's hostname in its own UTS ns; must equal SlurmctldHost
P_CTLD=6917; P_SLURMD=6918; P_REST=6920
REST_VER=v0.0.38
# CPUs = the host's real cores: task/affinity binds ranks to them
NCPUS=$(nproc); REALMEM=4000
CLUSTER=tethermn
HOSTS_TAG="# tether-testcluster-multinode"
LOCK=$TC_TOP/.multinode.lock

node_idx() { echo "${1#node}"; }
node_ip() { echo "$NET.$((10 + $(node_idx "$1")))"; }
netns_of() { echo "tmn-$1"; }           # /run/netns/tmn-nodeN
veth_of() { echo "tmn-$1"; }            # host side of the node's veth (on tbr0); eth0 in the netns
slurmd_pidfile() { echo "$MN/run/slurmd-$1.pid"; }
check_node() { case " $NODES " in *" $1 "*) ;; *) echo "multinode.sh: unknown node '$1' ($NODES)" >&2; exit 2 ;; esac; }

# clean environment for daemons and clients: no SLURM_JWT, our SLURM_CONF; fd 9 (our lock) closed
ENV0=(env -i "PATH=$TC_PATH" HOME=/root LANG=C.UTF-8 "$TC_MARK=$NAME" "SLURM_CONF=$CONF")
SC() { "${ENV0[@]}" "$@" 9>&-; }
ms() { date +%s%N; }
secs() { awk -v a="$1" -v b="$(ms)" 'BEGIN{printf "%.1f", (b-a)/1e9}'; }

# ------------------------------------------------------------------ daemon bookkeeping
# label -> pid file, exe
mn_pf() {
  case $1 in
    munged) echo "$MUNGE_DIR/munged.pid /usr/sbin/munged" ;;
    slurmctld) echo "$MN/run/slurmctld.pid /usr/sbin/slurmctld" ;;
    slurmrestd) echo "$MN/run/slurmrestd.pid /usr/sbin/slurmrestd" ;;
    slurmd-node*) echo "$(slurmd_pidfile "${1#slurmd-}") /usr/sbin/slurmd" ;;
    *) echo "mn_pf: unknown daemon $1" >&2; return 1 ;;
  esac
}
mn_alive() { local f e; read -r f e < <(mn_pf "$1"); pid_alive "$f" "$e"; }
mn_pid() { local f e; read -r f e < <(mn_pf "$1"); cat "$f" 2>/dev/null; }
# mn_stop LABEL...: TERM all at once (pids read first: the daemons remove their pid files early),
# wait up to 10 s, then KILL what is left. Only the recorded pids.
mn_stop() {
  local l p i f e pids=() labels=()
  for l in "$@"; do
    if mn_alive "$l"; then p=$(mn_pid "$l"); kill "$p" 2>/dev/null; pids+=("$p"); labels+=("$l=$p"); fi
  done
  for ((i = 0; i < 100 && ${#pids[@]} > 0; i++)); do
    local left=(); for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    pids=("${left[@]+"${left[@]}"}"); [ ${#pids[@]} = 0 ] && break; sleep 0.1
  done
  if [ ${#pids[@]} -gt 0 ]; then log "still alive after 10 s, SIGKILL: ${pids[*]}"; kill -9 "${pids[@]}" 2>/dev/null; sleep 0.2; fi
  [ ${#labels[@]} = 0 ] || log "stopped ${labels[*]}"
  for l in "$@"; do read -r f e < <(mn_pf "$l"); rm -f "$f"; done
}

# ------------------------------------------------------------------ checks
ctld_up() { SC scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { SC sinfo -h -N -n "$1" -o %T 2>/dev/null | head -1; }
link_up() { ip link show "$(veth_of "$1")" 2>/dev/null | grep -q '[<,]UP[,>]'; }
# node_ready NODE: in service (idle/mixed/allocated/completing, not "*" = not responding).
# RESUME=1: a node left DOWN/DRAINED (not by a cut link or a dead slurmd) is resumed.
node_ready() {
  local st; st=$(node_state "$1")
  case $st in
    idle|mixed|allocated|completing|planned) return 0 ;;
    down|drained|draining|drain|fail|failing|inval)
      if [ "${RESUME:-0}" = 1 ]; then SC scontrol update nodename="$1" state=resume >/dev/null 2>&1; fi; return 1 ;;
    *) return 1 ;;
  esac
}
all_ready() { local n; for n in $NODES; do node_ready "$n" || return 1; done; }
rest_ping() {
  local tok body; tok=$(cat "$JWT_FILE" 2>/dev/null) || return 1
  body=$(curl -sf -m 5 -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: $tok" \
    "http://127.0.0.1:$P_REST/slurm/$REST_VER/ping") || return 1
  jq -e '.pings[0].ping=="UP"' <<<"$body" >/dev/null
}
# pids in our node netns (slurmd, slurmstepd, job tasks): nothing else can be in there
netns_pids() { [ -e "/run/netns/$(netns_of "$1")" ] && ip netns pids "$(netns_of "$1")" 2>/dev/null || true; }

# ------------------------------------------------------------------ start steps
step_packages() {
  local pkgs="curl jq munge slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin openmpi-bin libopenmpi-dev gcc libc6-dev iproute2 util-linux"
  local have miss="" p
  # shellcheck disable=SC2086
  have=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' $pkgs 2>/dev/null || true)
  for p in $pkgs; do grep -q "^$p ii" <<<"$have" || miss="$miss $p"; done
  [ -n "$miss" ] || return 0
  log "apt-get install$miss"
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' > $prc; chmod 755 $prc; created=1; fi   # no service starts
  # shellcheck disable=SC2086
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $miss; } >> "$TC_LOG" 2>&1 9>&- \
    || { [ $created = 0 ] || rm -f $prc; die "apt-get install$miss failed (see $TC_LOG)"; }
  [ $created = 0 ] || rm -f $prc
}

step_network() {
  local n ns veth
  if ! ip link show $BR >/dev/null 2>&1; then ip link add $BR type bridge; log "created bridge $BR"; fi
  ip -4 addr show dev $BR | grep -q "inet $NET.1/24" || ip addr add $NET.1/24 dev $BR
  ip link set $BR up
  for n in $NODES; do
    ns=$(netns_of "$n"); veth=$(veth_of "$n")
    [ -e "/run/netns/$ns" ] || { ip netns add "$ns"; log "created netns $ns"; }
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip -n "$ns" link del eth0 2>/dev/null || true
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip -n "$ns" -4 addr show dev eth0 | grep -q "inet $(node_ip "$n")/24" || ip -n "$ns" addr add "$(node_ip "$n")/24" dev eth0
    ip link set "$veth" master $BR
    ip link set "$veth" up         # also undoes a "cut" left behind by a test
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    # deliberately no default route in the node namespaces: they only reach 10.77.0.0/24
  done
  # /etc/hosts is shared by all nodes (one mount namespace); lines are tagged, rewritten in place
  local want have
  want=$(printf '%s %s %s\n' "$NET.1" "$CTL_HOST" "$HOSTS_TAG"; for n in $NODES; do printf '%s %s %s\n' "$(node_ip "$n")" "$n" "$HOSTS_TAG"; done)
  have=$(grep -F -- "$HOSTS_TAG" /etc/hosts || true)
  if [ "$want" != "$have" ]; then
    local t; t=$(mktemp); { grep -vF -- "$HOSTS_TAG" /etc/hosts || true; echo "$want"; } > "$t"; cat "$t" > /etc/hosts; rm -f "$t"
    log "updated /etc/hosts"
  fi
}

step_dirs() {
  mkdir -p "$TC_SHARED/state" "$MN/etc" "$MN/run" "$MN/log" "$MN/state/ctld" "$MUNGE_DIR" "$BIN"
  chmod 1777 "$TC_SHARED" "$TC_SHARED/state"
  chmod 0755 "$MN" "$MN/run" "$MN/log"
  local n; for n in $NODES; do mkdir -p "$MN/spool/$n" "$MN/tmp/$n"; chmod 1777 "$MN/tmp/$n"; done
  chown slurm:slurm "$MN/state/ctld" "$MN/run" "$MN/log"
  chown munge:munge "$MUNGE_DIR"; chmod 0755 "$MUNGE_DIR"
  [ -s "$MUNGE_DIR/munge.key" ] || dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 2>/dev/null
  chown munge:munge "$MUNGE_DIR/munge.key"; chmod 0400 "$MUNGE_DIR/munge.key"
  [ -s "$JWT_KEY" ] || dd if=/dev/urandom of="$JWT_KEY" bs=32 count=1 2>/dev/null
  chown slurm:slurm "$JWT_KEY"; chmod 0600 "$JWT_KEY"
  id "$TC_REST_USER" >/dev/null 2>&1 || useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$TC_REST_USER"
}

install_if_changed() { # install_if_changed SRC DST MODE: 0 if DST changed
  if cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi
  install -m "$3" "$1" "$2"; rm -f "$1"; return 0
}

step_config() {
  local new n; new=$(mktemp)
  {
    cat <<EOF
# generated by tether testcluster/multinode.sh -- do not edit, rerun multinode.sh start
ClusterName=$CLUSTER
SlurmctldHost=$CTL_HOST($NET.1)
SlurmUser=slurm
# not 6817/6818: the bookworm single-node cluster runs beside us (slurmctld binds 0.0.0.0)
SlurmctldPort=$P_CTLD
SlurmdPort=$P_SLURMD
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
StateSaveLocation=$MN/state/ctld
# %n = node name: each slurmd has its own spool dir, pid file and log
SlurmdSpoolDir=$MN/spool/%n
SlurmdPidFile=$MN/run/slurmd-%n.pid
SlurmdLogFile=$MN/log/slurmd-%n.log
# all nodes share /tmp: mpi/pmix creates <TmpFS>/spmix_appdir_<uid>_<job>.<step> on every node,
# and the second node fails with "File exists" unless TmpFS is per node (%n is expanded here)
TmpFS=$MN/tmp/%n
SlurmctldPidFile=$MN/run/slurmctld.pid
SlurmctldLogFile=$MN/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
# 1: a node DOWN because it stopped responding (cut link, dead slurmd) returns by itself when its
# slurmd registers again; a node set DOWN with scontrol stays DOWN until state=resume
ReturnToService=1
MinJobAge=60
OverTimeLimit=0
KillWait=2
InactiveLimit=0
# quick node loss: slurmctld pings every ~SlurmdTimeout/3 s; a silent node is DOWN after ~SlurmdTimeout
# plus the ping's MessageTimeout, and its jobs end NODE_FAIL (or are requeued, unless --no-requeue)
SlurmdTimeout=10
MessageTimeout=5
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/linux
# no slurmdbd: sacct says "accounting storage is disabled"; sacct -c reads the jobcomp file
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$MN/log/jobcomp.txt
EOF
    for n in $NODES; do echo "NodeName=$n NodeAddr=$(node_ip "$n") NodeHostname=$n CPUs=$NCPUS RealMemory=$REALMEM State=UNKNOWN"; done
    echo "PartitionName=debug Nodes=node[1-3] Default=YES MaxTime=1-00:00:00 DefaultTime=01:00:00 State=UP"
  } > "$new"
  local had=0; [ -f "$CONF" ] && had=1
  if install_if_changed "$new" "$CONF" 0644; then
    log "wrote $CONF"
    if [ $had = 1 ]; then
      log "configuration changed: restarting the Slurm daemons"
      # shellcheck disable=SC2046
      mn_stop slurmrestd $(for n in $NODES; do echo "slurmd-$n"; done) slurmctld
    fi
  fi
  # CLI wrappers for tether's [sbatch] bin_dir: our SLURM_CONF, no SLURM_JWT
  local c
  for c in sbatch squeue sacct scontrol scancel sdiag srun sinfo salloc sstat sattach strigger; do
    new=$(mktemp)
    printf '#!/bin/sh\n# generated by tether testcluster/multinode.sh: %s of the multinode test cluster\nunset SLURM_JWT\nSLURM_CONF=%s\nexport SLURM_CONF\nexec /usr/bin/%s "$@"\n' "$c" "$CONF" "$c" > "$new"
    install_if_changed "$new" "$BIN/$c" 0755 || true
  done
}

start_munged() {
  mn_alive munged && return 0
  # (the socket's .lock file is left alone: munged uses it to refuse a second daemon on the socket)
  rm -f "$MUNGE_DIR/munged.pid"
  "${ENV0[@]}" setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --socket="$MUNGE_SOCK" \
    --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" >> "$TC_LOG" 2>&1 9>&- || die "munged failed to start (see $TC_LOG)"
  wait_for 50 munge -S "$MUNGE_SOCK" -n || die "munged not answering"
  wait_for 25 mn_alive munged || die "munged wrote no pid file"
  log "munged pid $(mn_pid munged)"
}

start_slurmctld() {
  if ! mn_alive slurmctld; then
    # own UTS namespace: slurmctld only runs if its hostname is the one in SlurmctldHost
    "${ENV0[@]}" unshare --uts sh -c "echo $CTL_HOST > /proc/sys/kernel/hostname && exec /usr/sbin/slurmctld -f $CONF" \
      >> "$TC_LOG" 2>&1 9>&- || die "slurmctld failed: $(tail -5 "$MN/log/slurmctld.log")"
  fi
  wait_for 150 ctld_up || die "slurmctld not answering: $(tail -5 "$MN/log/slurmctld.log")"
  wait_for 25 mn_alive slurmctld || die "slurmctld wrote no pid file"
  log "slurmctld pid $(mn_pid slurmctld)"
}

start_slurmd() { # start_slurmd NODE (no wait)
  local n=$1
  mn_alive "slurmd-$n" && return 0
  rm -f "$(slurmd_pidfile "$n")"
  # NOT "ip netns exec": it also unshares the mount ns and remounts /sys, which hides
  # /sys/fs/cgroup, and slurmd 22.05 then fails. nsenter --net only switches the network.
  "${ENV0[@]}" nsenter --net="/run/netns/$(netns_of "$n")" unshare --uts \
    sh -c "echo $n > /proc/sys/kernel/hostname && cd $MN/log && exec /usr/sbin/slurmd -N $n -f $CONF" \
    >> "$TC_LOG" 2>&1 9>&- || die "slurmd $n failed: $(tail -5 "$MN/log/slurmd-$n.log")"
  wait_for 50 mn_alive "slurmd-$n" || die "slurmd $n wrote no pid file: $(tail -5 "$MN/log/slurmd-$n.log")"
  log "slurmd $n pid $(mn_pid "slurmd-$n")"
}

start_slurmrestd() {
  if ! mn_alive slurmrestd; then
    # slurmrestd refuses root and SlurmUser; SLURM_JWT=daemon: it talks to slurmctld with each request's JWT
    env -i "PATH=$TC_PATH" HOME=/tmp LANG=C.UTF-8 "$TC_MARK=$NAME" "SLURM_CONF=$CONF" SLURM_JWT=daemon \
      setpriv --reuid="$TC_REST_USER" --regid="$TC_REST_USER" --init-groups setsid \
      /usr/sbin/slurmrestd -a rest_auth/jwt -s openapi/$REST_VER "127.0.0.1:$P_REST" \
      < /dev/null >> "$MN/log/slurmrestd.log" 2>&1 9>&- &
    echo $! > "$MN/run/slurmrestd.pid"
    sleep 0.1
    wait_for 25 mn_alive slurmrestd || die "slurmrestd did not start: $(tail -5 "$MN/log/slurmrestd.log")"
    log "slurmrestd pid $(mn_pid slurmrestd)"
  fi
}

ensure_token() {
  if [ -s "$JWT_FILE" ] && wait_for 10 rest_ping; then return 0; fi
  local t; t=$(SC scontrol token username=root lifespan=$TC_JWT_LIFESPAN 2>>"$TC_LOG" | sed -n 's/^SLURM_JWT=//p')
  [ -n "$t" ] || die "scontrol token failed"
  ( umask 077; printf '%s\n' "$t" > "$JWT_FILE.tmp" ); mv -f "$JWT_FILE.tmp" "$JWT_FILE"; chmod 0600 "$JWT_FILE"
  log "new JWT in $JWT_FILE"
  wait_for 75 rest_ping || die "slurmrestd not answering on 127.0.0.1:$P_REST: $(tail -5 "$MN/log/slurmrestd.log")"
}

step_outputs() {
  local new n rel; rel=$(SC scontrol --version | awk '{print $2}')
  new=$(mktemp)
  {
    cat <<EOF
# generated by tether testcluster/multinode.sh -- 3-node Slurm 22.05 test cluster. Source me.
export TESTCLUSTER_NAME=$NAME
export TESTCLUSTER_SLURM_VERSION=22.05
export TESTCLUSTER_SLURM_RELEASE=$rel
export TESTCLUSTER_CLUSTER_NAME=$CLUSTER
export TESTCLUSTER_BIN_DIR=$BIN
export TESTCLUSTER_MPICC=/usr/bin/mpicc
export TESTCLUSTER_CHROOT=
export TESTCLUSTER_REST_URL=http://127.0.0.1:$P_REST
export TESTCLUSTER_REST_API_VERSION=$REST_VER
export TESTCLUSTER_JWT_FILE=$JWT_FILE
export TESTCLUSTER_USER=root
export TESTCLUSTER_SHARED_DIR=$TC_SHARED
export TESTCLUSTER_NODES=$(echo $NODES | tr ' ' ,)
export TESTCLUSTER_NODE_CPUS=$NCPUS
export TESTCLUSTER_PARTITIONS=debug
export TESTCLUSTER_SACCT=0
export TESTCLUSTER_SLURM_CONF=$CONF
export TESTCLUSTER_LOG_DIR=$MN/log
export TESTCLUSTER_SLURMCTLD_PID_FILE=$MN/run/slurmctld.pid
export TESTCLUSTER_MULTINODE="$TC_HERE/multinode.sh"   # \$TESTCLUSTER_MULTINODE cut node2
export TESTCLUSTER_SITE_SBATCH=$SITE_SBATCH
export TESTCLUSTER_SITE_REST=$SITE_REST
EOF
    for n in $NODES; do
      echo "export TESTCLUSTER_VETH_$n=$(veth_of "$n")"
      echo "export TESTCLUSTER_NETNS_$n=$(netns_of "$n")"
      echo "export TESTCLUSTER_ADDR_$n=$(node_ip "$n")"
      echo "export TESTCLUSTER_SLURMD_PID_$n=$(slurmd_pidfile "$n")"
    done
  } > "$new"
  install_if_changed "$new" "$ENV_FILE" 0644 || true

  mkdir -p "$TC_SITE_DIR"
  new=$(mktemp)
  { slurm_site slurm-multinode-sbatch sbatch "testcluster/multinode.sh start"
    printf '[sbatch]\nbin_dir = "%s"\naccounting = false\n' "$BIN"
  } > "$new"
  install_if_changed "$new" "$SITE_SBATCH" 0644 || true
  new=$(mktemp)
  { slurm_site slurm-multinode-rest slurmrest "testcluster/multinode.sh start"
    slurm_site_rest "http://127.0.0.1:$P_REST" "$JWT_FILE"
  } > "$new"
  install_if_changed "$new" "$SITE_REST" 0644 || true
  REL=$rel
}

do_start() {
  local t0 n; t0=$(ms)
  log "---- start"
  step_packages
  step_dirs
  step_network
  step_config
  start_munged
  start_slurmctld
  for n in $NODES; do start_slurmd "$n"; done
  start_slurmrestd
  RESUME=1 wait_for 150 all_ready || die "nodes not ready: $(SC sinfo -N -h -o '%N=%T' | tr '\n' ' ') $(SC sinfo -h -R 2>&1 | tr '\n' ' ')"
  ensure_token
  step_outputs
  log "up in $(secs "$t0")s"
  echo "multinode: Slurm $REL, $(echo $NODES | tr ' ' ,) up ($(secs "$t0")s): source $ENV_FILE"
}

do_stop() {
  local t0 n ns p; t0=$(ms)
  log "---- stop"
  if [ -f "$CONF" ] && mn_alive slurmctld; then
    local jobs; jobs=$(SC squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      SC scancel $jobs 2>/dev/null || true
      wait_for 25 test -z "$(SC squeue -h -t running,completing -o %i 2>/dev/null)" || true
    fi
  fi
  # all at once, munged too (it takes ~2 s to exit, and nothing needs it during the shutdown)
  # shellcheck disable=SC2046
  mn_stop slurmrestd $(for n in $NODES; do echo "slurmd-$n"; done) slurmctld munged
  # what is still in one of OUR node netns was started by our slurmd (slurmstepd, job tasks)
  for n in $NODES; do
    p=$(netns_pids "$n" | tr '\n' ' ')
    if [ -n "${p// }" ]; then
      log "killing leftover processes in netns $(netns_of "$n"): $p"
      # shellcheck disable=SC2086
      kill -9 $p 2>/dev/null || true
    fi
  done
  for n in $NODES; do
    ns=$(netns_of "$n")
    ! ip link show "$(veth_of "$n")" >/dev/null 2>&1 || ip link del "$(veth_of "$n")"   # also deletes eth0 in the netns
    [ ! -e "/run/netns/$ns" ] || ip netns del "$ns"
  done
  ! ip link show $BR >/dev/null 2>&1 || ip link del $BR
  if grep -qF -- "$HOSTS_TAG" /etc/hosts; then
    local t; t=$(mktemp); grep -vF -- "$HOSTS_TAG" /etc/hosts > "$t" || true; cat "$t" > /etc/hosts; rm -f "$t"
    log "removed our /etc/hosts lines"
  fi
  if [ "${PURGE:-0}" = 1 ]; then log "purging $MN"; rm -rf "$MN"; rm -f "$SITE_SBATCH" "$SITE_REST"; fi
  log "stopped in $(secs "$t0")s"
  echo "multinode: stopped ($(secs "$t0")s)"
}

do_status() {
  local l n
  for l in munged slurmctld slurmrestd $(for n in $NODES; do echo "slurmd-$n"; done); do
    if mn_alive "$l"; then printf '%s=%s ' "$l" "$(mn_pid "$l")"; else printf '%s=down ' "$l"; fi
  done
  echo
  for n in $NODES; do
    if ip link show "$(veth_of "$n")" >/dev/null 2>&1; then
      printf '%s: %s %s link=%s state=%s\n' "$n" "$(netns_of "$n")" "$(node_ip "$n")" \
        "$(link_up "$n" && echo up || echo down)" "$( [ -f "$CONF" ] && mn_alive slurmctld && node_state "$n" || echo '?')"
    else printf '%s: no network\n' "$n"; fi
  done
}

# wait_node NODE SECONDS: until NODE is in service again; resumes it if it stays DOWN while
# its link is up and its slurmd runs
wait_node() {
  local n=$1 t0; t0=$(ms)
  if wait_for $(($2 * 5)) node_ready "$n"; then echo "$n: $(node_state "$n") after $(secs "$t0")s"; return 0; fi
  log "$n still $(node_state "$n") after $2 s: scontrol update state=resume"
  SC scontrol update nodename="$n" state=resume || true
  wait_for 50 node_ready "$n" || die "$n stays $(node_state "$n")"
  echo "$n: $(node_state "$n") after $(secs "$t0")s (needed state=resume)"
}

usage() { sed -n '6,12p' "$TC_HERE/multinode.sh" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "multinode.sh: must run as root" >&2; exit 1; }
[ $# -ge 1 ] || usage
CMD=$1; shift
mkdir -p "$TC_TOP"; chmod 0755 "$TC_TOP"
case $CMD in
  start)
    [ $# = 0 ] || usage
    exec 9> "$LOCK"; flock 9; do_start ;;
  stop)
    PURGE=0; for a in "$@"; do case $a in --purge) PURGE=1 ;; *) usage ;; esac; done
    exec 9> "$LOCK"; flock 9; do_stop ;;
  status) [ $# = 0 ] || usage; do_status ;;
  cut|restore|kill-slurmd|start-slurmd)
    [ $# = 1 ] || usage; check_node "$1"; [ -f "$CONF" ] || die "not started (run multinode.sh start)"
    case $CMD in
      cut) ip link set "$(veth_of "$1")" down; log "cut $1" ;;
      restore) ip link set "$(veth_of "$1")" up; log "restored $1"; wait_node "$1" 30 ;;
      kill-slurmd)
        if mn_alive "slurmd-$1"; then p=$(mn_pid "slurmd-$1"); kill -9 "$p"; log "killed slurmd $1 ($p)"; echo "$1: killed slurmd $p"
        else echo "$1: slurmd not running"; fi ;;
      start-slurmd) exec 9> "$LOCK"; flock 9; start_slurmd "$1"; wait_node "$1" 30 ;;
    esac ;;
  *) usage ;;
esac
