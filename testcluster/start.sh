#!/bin/bash
# Install (if missing), configure and start the tether Slurm test clusters. Idempotent.
#
#   testcluster/start.sh [bookworm|trixie|all]     (default: all)
#
#   bookworm: Slurm 22.05 on the host      slurmctld :6817 slurmd :6818 slurmdbd :6819 REST :6820
#   trixie:   Slurm 24.11 in a chroot      slurmctld :7817 slurmd :7818 slurmdbd :7819 REST :7820
#   (slurmdbd storage: one MariaDB 10.11 per cluster on the host, 127.0.0.1:6306 / :7306)
#
# Writes /tmp/tether-testcluster/<cluster>/env.sh and site-configs/testcluster/slurm-<ver>-{sbatch,rest}.toml.
# Prints one line per cluster on success; details go to /tmp/tether-testcluster/start.log
# (TC_VERBOSE=1 also echoes them). Knobs: TESTCLUSTER_SLURMDBD=0 (no slurmdbd/mariadb, no real sacct),
# MIRROR=http://deb.debian.org/debian (for debootstrap / the chroot's apt).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd /   # daemons inherit the cwd: never leave them in a directory a test may delete

[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root" >&2; exit 1; }
WHICH=${1:-all}
case $WHICH in all) CLUSTERS=$(tc_all) ;; bookworm|trixie) CLUSTERS=$WHICH ;; *) echo "usage: $0 [bookworm|trixie|all]" >&2; exit 2 ;; esac
MIRROR=${MIRROR:-http://deb.debian.org/debian}

mkdir -p "$TC_TOP"; chmod 0755 "$TC_TOP"
exec 9> "$TC_TOP/.lock"; flock 9           # serialise concurrent start/stop/ctl runs
mkdir -p "$TC_SHARED" "$TC_SHARED/state"; chmod 1777 "$TC_SHARED" "$TC_SHARED/state"

# ------------------------------------------------------------------ helpers
missing_pkgs() { # missing_pkgs ROOT PKG... : prints the packages not installed (in ROOT, "" = host)
  local r=$1; shift
  local have
  if [ -n "$r" ]; then have=$(chroot "$r" dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)
  else have=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true); fi
  local p; for p in "$@"; do grep -q "^$p ii" <<<"$have" || echo "$p"; done
}
NO_START_CREATED=""
apt_install() { # apt_install ROOT PKG...   (no service starts: policy-rc.d for the duration)
  local r=$1; shift
  local prc=$r/usr/sbin/policy-rc.d
  if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' > "$prc"; chmod 755 "$prc"; NO_START_CREATED=$prc; fi
  log "apt-get install $*"
  if [ -n "$r" ]; then
    env -i PATH=$TC_PATH HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get update -qq >> "$TC_LOG" 2>&1 || die "apt-get update in chroot failed (see $TC_LOG)"
    env -i PATH=$TC_PATH HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get install -y -qq --no-install-recommends "$@" >> "$TC_LOG" 2>&1 || die "apt-get install in chroot failed (see $TC_LOG)"
  else
    apt-get update -qq >> "$TC_LOG" 2>&1 || die "apt-get update failed (see $TC_LOG)"
    apt-get install -y -qq --no-install-recommends "$@" >> "$TC_LOG" 2>&1 || die "apt-get install failed (see $TC_LOG)"
  fi
  if [ -n "$NO_START_CREATED" ]; then rm -f "$NO_START_CREATED"; NO_START_CREATED=""; fi
}
cleanup() { [ -z "$NO_START_CREATED" ] || rm -f "$NO_START_CREATED"; }
trap cleanup EXIT
# install_file SRC DST MODE: replace DST if different; returns 0 if it changed
install_file() { if cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi; install -m "$3" "$1" "$2"; rm -f "$1"; return 0; }

# ------------------------------------------------------------------ steps
step_packages() {
  local host_pkgs="curl jq munge slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin openmpi-bin libopenmpi-dev gcc libc6-dev"
  [ "$NAME" = trixie ] && host_pkgs="curl jq debootstrap"
  if [ "$WITH_DBD" = 1 ]; then
    host_pkgs="$host_pkgs mariadb-server"
    [ "$NAME" = bookworm ] && host_pkgs="$host_pkgs slurmdbd slurm-wlm-mysql-plugin"
  fi
  local miss; miss=$(missing_pkgs "" $host_pkgs)
  # shellcheck disable=SC2086
  [ -z "$miss" ] || apt_install "" $miss
  [ "$NAME" = trixie ] || return 0

  if [ ! -f "$ROOT/.tether-debootstrap-done" ]; then
    [ -z "$(chroot_mounts)" ] || die "refusing to debootstrap: mounts under $ROOT (run stop.sh trixie)"
    rm -rf "$ROOT"; mkdir -p "$D"
    log "debootstrap trixie -> $ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >> "$TC_LOG" 2>&1 || die "debootstrap failed (see $TC_LOG)"
    touch "$ROOT/.tether-debootstrap-done"
  fi
}

step_mounts() {
  [ -n "$ROOT" ] || return 0
  local m
  mkdir -p "$ROOT$TC_SHARED" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys"
  mountpoint -q "$ROOT/proc"    || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/sys"     || mount --bind /sys "$ROOT/sys"
  mountpoint -q "$ROOT/dev"     || mount --bind /dev "$ROOT/dev"
  for m in /dev/pts /dev/shm; do
    if mountpoint -q "$m" && ! mountpoint -q "$ROOT$m"; then mkdir -p "$ROOT$m"; mount --bind "$m" "$ROOT$m"; fi
  done
  mountpoint -q "$ROOT$TC_SHARED" || mount --bind "$TC_SHARED" "$ROOT$TC_SHARED"
}

step_chroot_packages() {
  [ -n "$ROOT" ] || return 0
  cp /etc/hosts "$ROOT/etc/hosts"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  local src; src=$(mktemp)
  printf 'deb %s trixie main\ndeb %s trixie-updates main\ndeb http://deb.debian.org/debian-security trixie-security main\n' "$MIRROR" "$MIRROR" > "$src"
  install_file "$src" "$ROOT/etc/apt/sources.list" 0644 || true
  local pkgs="munge slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin openmpi-bin libopenmpi-dev gcc libc6-dev"
  [ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd slurm-wlm-mysql-plugin"
  local miss; miss=$(missing_pkgs "$ROOT" $pkgs)
  # shellcheck disable=SC2086
  [ -z "$miss" ] || apt_install "$ROOT" $miss
}

step_users_dirs() {
  if ! id "$TC_REST_USER" >/dev/null 2>&1; then useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$TC_REST_USER"; fi
  if [ -n "$ROOT" ]; then   # same uid/gid inside the chroot
    local uid gid; uid=$(id -u "$TC_REST_USER"); gid=$(id -g "$TC_REST_USER")
    IN getent group "$TC_REST_USER" >/dev/null || IN groupadd -o -g "$gid" "$TC_REST_USER"
    IN id "$TC_REST_USER" >/dev/null 2>&1 || IN useradd -o -r -u "$uid" -g "$gid" -M -d /nonexistent -s /usr/sbin/nologin "$TC_REST_USER"
    [ "$(IN id -u slurm)" = "$(id -u slurm)" ] || log "WARNING: uid of slurm differs between host and chroot"
  fi
  mkdir -p "$(hp "$STATE_IN/ctld")" "$(hp "$STATE_IN/d")" "$(hp "$RUN_IN/rest")" "$(hp "$LOG_IN")" "$(hp "$MUNGE_IN")"
  chmod 0755 "$(hp "$S")" "$(hp "$RUN_IN")" "$(hp "$LOG_IN")"
  IN chown slurm:slurm "$STATE_IN/ctld" "$RUN_IN" "$LOG_IN"
  IN chown "$TC_REST_USER:$TC_REST_USER" "$RUN_IN/rest"
  IN chown munge:munge "$MUNGE_IN"; chmod 0755 "$(hp "$MUNGE_IN")"
  local key; key=$(hp "$MUNGE_IN/munge.key")
  [ -s "$key" ] || { dd if=/dev/urandom of="$key" bs=1024 count=1 2>/dev/null; }
  IN chown munge:munge "$MUNGE_IN/munge.key"; chmod 0400 "$key"
  key=$(hp "$S/jwt_hs256.key")
  [ -s "$key" ] || { dd if=/dev/urandom of="$key" bs=32 count=1 2>/dev/null; }
  IN chown slurm:slurm "$S/jwt_hs256.key"; chmod 0600 "$key"
  [ -z "$ROOT" ] || ln -sfn "root$S/log" "$D/log"   # convenience: logs of the chroot cluster
}

step_config() {
  local acct="AccountingStorageType=accounting_storage/none"
  if [ "$WITH_DBD" = 1 ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$P_DBD
# munge socket for talking to slurmdbd (AuthInfo is not used for that connection)
AccountingStoragePass=$MUNGE_SOCK_IN
# associations, limits and QOS are enforced: the QOS tether5 (5 submitted
# jobs per user, see start_slurmdbd) is a submit limit for tests to meet
AccountingStorageEnforce=associations,limits,qos"
  fi
  # RPC rate limiting (Slurm >= 23.02): root and SlurmUser are exempt, so
  # it throttles only the tests that query as another user (a bucket of 3,
  # refilled by one every 10 s); throttled clients are answered late
  local rl="# no RPC rate limiting before Slurm 23.02"
  [ "$SERIES" = 22.05 ] || rl="SlurmctldParameters=rl_enable,rl_bucket_size=3,rl_refill_rate=1,rl_refill_period=10"
  local new; new=$(mktemp)
  cat > "$new" <<EOF
# generated by tether testcluster/start.sh ($NAME, Slurm $SERIES) -- do not edit, rerun start.sh
ClusterName=$CLUSTER
SlurmctldHost=$TC_NODE(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=$P_CTLD
SlurmdPort=$P_SLURMD
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK_IN
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$S/jwt_hs256.key
StateSaveLocation=$STATE_IN/ctld
SlurmdSpoolDir=$STATE_IN/d
SlurmctldPidFile=$RUN_IN/slurmctld.pid
SlurmdPidFile=$RUN_IN/slurmd.pid
SlurmctldLogFile=$LOG_IN/slurmctld.log
SlurmdLogFile=$LOG_IN/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups on this machine: track processes through /proc, no binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# memory is a consumable resource (500 MB per CPU unless a job asks), so
# every step has a memory limit, and jobacct_gather kills a step that
# goes past it (OverMemoryKill below): memory enforcement without cgroups
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
# start batch jobs right away (the default batch_sched_delay adds 1-3 s per job)
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
# 1, not 2: with 2 a node set DOWN by scontrol comes back by itself as soon as slurmd talks to slurmctld
# (e.g. when the jobs killed by the DOWN end); with 1 it stays DOWN until "state=resume"
ReturnToService=1
# finished jobs stay visible to squeue/scontrol/REST for 5 minutes
MinJobAge=60
# time limits: kill at the limit, SIGKILL 2 s after SIGTERM (limits are checked about every 30 s)
OverTimeLimit=0
KillWait=2
InactiveLimit=0
# reject, instead of queueing forever, jobs that exceed partition limits
EnforcePartLimits=ALL
# accept CPUs= larger than the real core count
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/linux
# sample every 2 s, so a job of a few seconds has a MaxRSS in sacct
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_IN/jobcomp.txt
$acct
$rl
NodeName=$TC_NODE NodeAddr=127.0.0.1 CPUs=32 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=1-00:00:00 DefaultTime=01:00:00 State=UP
PartitionName=short Nodes=ALL MaxTime=00:02:00 DefaultTime=00:01:00 State=UP
EOF
  mkdir -p "$(hp /etc/slurm)"
  CONF_CHANGED=0; DBD_CHANGED=0
  local had=0; [ -f "$(hp "$CONF_IN")" ] && had=1
  if install_file "$new" "$(hp "$CONF_IN")" 0644; then [ $had = 1 ] && CONF_CHANGED=1; log "wrote $(hp "$CONF_IN")"; fi
  if [ -n "$ROOT" ]; then
    # Slurm >= 23.02 slurmd sets up a cgroup plugin even with proctrack/linuxproc: no cgroup fs in the chroot
    new=$(mktemp); echo "CgroupPlugin=disabled" > "$new"
    install_file "$new" "$(hp /etc/slurm/cgroup.conf)" 0644 && [ $had = 1 ] && CONF_CHANGED=1
  fi
  if [ "$WITH_DBD" = 1 ]; then
    new=$(mktemp)
    cat > "$new" <<EOF
# generated by tether testcluster/start.sh ($NAME) -- do not edit
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK_IN
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$S/jwt_hs256.key
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$P_DBD
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG_IN/slurmdbd.log
PidFile=$RUN_IN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$P_DB
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
EOF
    had=0; [ -f "$(hp /etc/slurm/slurmdbd.conf)" ] && had=1
    if install_file "$new" "$(hp /etc/slurm/slurmdbd.conf)" 0600; then [ $had = 1 ] && DBD_CHANGED=1; fi
    IN chown slurm:slurm /etc/slurm/slurmdbd.conf
  fi
  if [ "$CONF_CHANGED" = 1 ] || [ "$DBD_CHANGED" = 1 ]; then
    log "configuration changed: restarting Slurm daemons"
    d_stop_many slurmrestd-jwt slurmrestd-local slurmd slurmctld
    [ "$DBD_CHANGED" = 1 ] && d_stop slurmdbd
  fi
  return 0
}

toml_write() { # toml_write FILE  (content on stdin; only rewritten when different)
  local new; new=$(mktemp); cat > "$new"
  install_file "$new" "$1" 0644 || true
}

step_outputs() {
  local rel; rel=$(IN scontrol --version | awk '{print $2}')
  local sacct_ok=0; [ "$WITH_DBD" = 1 ] && sacct_ok=1
  local new; new=$(mktemp)
  cat > "$new" <<EOF
# generated by tether testcluster/start.sh -- Slurm $SERIES test cluster "$NAME". Source me.
export TESTCLUSTER_NAME=$NAME
export TESTCLUSTER_SLURM_VERSION=$SERIES
export TESTCLUSTER_SLURM_RELEASE=$rel
export TESTCLUSTER_CLUSTER_NAME=$CLUSTER
export TESTCLUSTER_BIN_DIR=$BIN_DIR
export TESTCLUSTER_MPICC=$MPICC
export TESTCLUSTER_CHROOT=$ROOT
export TESTCLUSTER_REST_URL=http://127.0.0.1:$P_REST
export TESTCLUSTER_REST_SOCKET=$REST_SOCK
export TESTCLUSTER_REST_JWT_SOCKET=$REST_JWT_SOCK
export TESTCLUSTER_REST_API_VERSION=$REST_VER
export TESTCLUSTER_JWT_FILE=$JWT_FILE
export TESTCLUSTER_USER=root
export TESTCLUSTER_SHARED_DIR=$TC_SHARED
export TESTCLUSTER_NODE=$TC_NODE
export TESTCLUSTER_NODE_CPUS=32
export TESTCLUSTER_PARTITIONS=debug,short
export TESTCLUSTER_SACCT=$sacct_ok
export TESTCLUSTER_SLURMCTLD_PID_FILE=$(hp "$RUN_IN/slurmctld.pid")
export TESTCLUSTER_SLURM_CONF=$(hp "$CONF_IN")
export TESTCLUSTER_LOG_DIR=$(hp "$LOG_IN")
export TESTCLUSTER_CTL="$TC_HERE/ctl.sh $NAME"
export TESTCLUSTER_SITE_SBATCH=$TC_SITE_DIR/slurm-$SERIES-sbatch.toml
export TESTCLUSTER_SITE_REST=$TC_SITE_DIR/slurm-$SERIES-rest.toml
EOF
  install_file "$new" "$ENV_FILE" 0644 || true

  mkdir -p "$TC_SITE_DIR"
  # The site files' tether_path: jobs in 24.11's chroot cannot see bin/.
  # A new file renamed in, so running jobs keep the old one.
  if [ -x "$TC_REPO/bin/tether" ]; then
    mkdir -p "$TC_SHARED/bin"
    cp "$TC_REPO/bin/tether" "$TC_SHARED/bin/.tether.$$" && mv -f "$TC_SHARED/bin/.tether.$$" "$TC_SHARED/bin/tether"
  fi
  { slurm_site "slurm-$SERIES-sbatch" sbatch "testcluster/start.sh $NAME" "$TC_SHARED/bin/tether"
    printf '[sbatch]\nbin_dir = "%s"\n' "$BIN_DIR"
  } | toml_write "$TC_SITE_DIR/slurm-$SERIES-sbatch.toml"
  { slurm_site "slurm-$SERIES-rest" slurmrest "testcluster/start.sh $NAME" "$TC_SHARED/bin/tether"
    slurm_site_rest "http://127.0.0.1:$P_REST" "$JWT_FILE"
  } | toml_write "$TC_SITE_DIR/slurm-$SERIES-rest.toml"
  REL=$rel
}

start_cluster() {
  tc_load "$1"
  local t0; t0=$(date +%s.%N)
  log "---- start"
  mkdir -p "$D"
  step_packages
  step_mounts
  step_chroot_packages
  step_users_dirs
  step_config
  start_munged
  if [ "$WITH_DBD" = 1 ]; then start_mariadb; start_slurmdbd; fi
  start_slurmctld
  start_slurmd
  start_slurmrestd
  ensure_token
  rest_ready
  step_outputs
  local t; t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  log "up in ${t}s"
  echo "$NAME: Slurm $REL up (${t}s): source $ENV_FILE"
}

for c in $CLUSTERS; do start_cluster "$c"; done
