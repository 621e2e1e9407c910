# shellcheck shell=bash disable=SC2034
# Common definitions for the tether test clusters. Sourced by start.sh, stop.sh and ctl.sh.
#
#   bookworm : Slurm 22.05 from Debian 12 packages, on the host itself
#   trixie   : Slurm 24.11 from Debian 13 packages, in a debootstrap chroot
#
# Everything at run time lives under $TC_TOP (never under /tmp/testcluster, which other
# recipes use). See README.md next to this file.

TC_TOP=/tmp/tether-testcluster
TC_SHARED=$TC_TOP/shared                     # mode 1777, same path on the host and in the chroot
TC_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
TC_REPO=$(cd "$TC_HERE/.." && pwd -P)
TC_SITE_DIR=$TC_REPO/site-configs/testcluster
TC_LOG=$TC_TOP/start.log                     # verbose output of start.sh / stop.sh
TC_REST_USER=tetherrest                      # slurmrestd refuses to run as root or SlurmUser
TC_MARK=TETHER_TESTCLUSTER                   # env marker put on every daemon we start
TC_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TC_NODE=$(hostname -s)
TC_JWT_LIFESPAN=31536000                     # 1 year
export DEBIAN_FRONTEND=noninteractive

tc_all() { echo bookworm trixie; }

# tc_load NAME: set the cluster variables.
#   ROOT  chroot dir ("" on the host)       S  state prefix as seen by the cluster
#   Paths named *_IN are as the cluster sees them; hp PATH gives the host path.
tc_load() {
  NAME=$1
  case $NAME in
    bookworm)
      SERIES=22.05; D=$TC_TOP/bookworm; ROOT=""; S=$D
      CLUSTER=tether2205; P_CTLD=6817; P_SLURMD=6818; P_DBD=6819; P_REST=6820; P_DB=6306
      REST_VER=v0.0.38; WITH_DBD=${TESTCLUSTER_SLURMDBD:-1}
      BIN_DIR=/usr/bin; MPICC=/usr/bin/mpicc ;;
    trixie)
      SERIES=24.11; D=$TC_TOP/trixie; ROOT=$D/root; S=/srv/tether-testcluster
      CLUSTER=tether2411; P_CTLD=7817; P_SLURMD=7818; P_DBD=7819; P_REST=7820; P_DB=7306
      REST_VER=v0.0.42; WITH_DBD=${TESTCLUSTER_SLURMDBD:-1}
      BIN_DIR=$TC_HERE/trixie-bin; MPICC=$TC_HERE/trixie-bin/mpicc ;;
    *) echo "unknown cluster '$1' (bookworm|trixie)" >&2; return 2 ;;
  esac
  CONF_IN=/etc/slurm/slurm.conf
  RUN_IN=$S/run; LOG_IN=$S/log; STATE_IN=$S/state; MUNGE_IN=$S/munge
  MUNGE_SOCK_IN=$MUNGE_IN/munge.socket
  REST_SOCK_IN=$RUN_IN/rest/slurmrestd.sock
  REST_SOCK=$D/slurmrestd.sock                # symlink to the real socket (host view)
  REST_JWT_SOCK_IN=$RUN_IN/rest/slurmrestd-jwt.sock   # the JWT instance also listens here
  REST_JWT_SOCK=$D/slurmrestd-jwt.sock
  JWT_FILE=$D/jwt-root.token
  # MariaDB for slurmdbd always runs on the HOST (Debian 12's 10.11; trixie's 11.8 server breaks
  # slurmdbd 24.11.5), one instance per cluster, data outside the chroot.
  DB_DIR=$D/db
  ENV_FILE=$D/env.sh
}

hp() { echo "$ROOT$1"; }                      # host path of a cluster path

# Run a command "in the cluster": with a clean environment (no SLURM_JWT / SLURM_CONF leaks),
# marked with $TC_MARK=<name>, inside the chroot for trixie.
# fd 9 (the lock of start/stop/ctl) is closed so daemons do not inherit it.
IN() {
  if [ -n "$ROOT" ]; then env -i "PATH=$TC_PATH" HOME=/root LANG=C.UTF-8 "$TC_MARK=$NAME" chroot "$ROOT" "$@" 9>&-
  else env -i "PATH=$TC_PATH" HOME=/root LANG=C.UTF-8 "$TC_MARK=$NAME" "$@" 9>&-; fi
}
# IN_AS USER CMD...: same, as USER (primary group of USER).
IN_AS() {
  local u=$1; shift
  if [ -n "$ROOT" ]; then env -i "PATH=$TC_PATH" HOME=/tmp LANG=C.UTF-8 "$TC_MARK=$NAME" chroot --userspec="$u:$u" "$ROOT" "$@" 9>&-
  else env -i "PATH=$TC_PATH" HOME=/tmp LANG=C.UTF-8 "$TC_MARK=$NAME" setpriv --reuid="$u" --regid="$u" --init-groups "$@" 9>&-; fi
}

# as_cmd USER: set array ASCMD to the prefix that IN_AS uses, for starting a daemon in the background
# with "${ASCMD[@]}" prog args &  -- every element execs, so $! is the daemon's own pid.
as_cmd() {
  if [ -n "$ROOT" ]; then ASCMD=(env -i "PATH=$TC_PATH" HOME=/tmp LANG=C.UTF-8 "$TC_MARK=$NAME" chroot --userspec="$1:$1" "$ROOT")
  else ASCMD=(env -i "PATH=$TC_PATH" HOME=/tmp LANG=C.UTF-8 "$TC_MARK=$NAME" setpriv --reuid="$1" --regid="$1" --init-groups); fi
}

log() { echo "[$(date +%T)] $NAME: $*" >> "$TC_LOG"; [ "${TC_VERBOSE:-0}" = 1 ] && echo "$NAME: $*" >&2; return 0; }
die() { echo "testcluster $NAME: $*" >&2; exit 1; }
# wait_for N CMD...: retry CMD every 0.2 s for at most N*0.2 s of wall time
wait_for() {
  local end=$(( $(date +%s%N) + $1 * 200000000 )); shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$(date +%s%N)" -lt "$end" ] || return 1
    sleep 0.2
  done
}

# real_exe PATH: host path of the file PATH (cluster path) after resolving symlinks inside the
# cluster's root (Debian's slurmctld/slurmd are alternatives symlinks to slurmctld-wlm/slurmd-wlm).
real_exe() {
  local p=$1 t i
  for ((i = 0; i < 10; i++)); do
    [ -L "$ROOT$p" ] || break
    t=$(readlink "$ROOT$p")
    case $t in /*) p=$t ;; *) p=$(dirname "$p")/$t ;; esac
  done
  echo "$ROOT$p"
}
# pid_alive PIDFILE EXE: the pid in PIDFILE (host path) runs binary EXE (cluster path).
pid_alive() {
  local p exe
  [ -s "$1" ] || return 1
  p=$(cat "$1" 2>/dev/null) || return 1
  [[ $p =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$p/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [ "$exe" = "$ROOT$2" ] || [ "$exe" = "$(real_exe "$2")" ]
}
# stop_pid PIDFILE EXE LABEL: TERM, wait up to 10 s, then KILL. Only that pid.
stop_pid() {
  local p i
  if pid_alive "$1" "$2"; then
    p=$(cat "$1"); kill "$p" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "$3 ($p) still alive after 10 s: SIGKILL"; kill -9 "$p" 2>/dev/null; sleep 0.2; fi
    log "stopped $3 (pid $p)"
  fi
  rm -f "$1"
}

# daemon table: label -> pidfile (cluster path) and exe (cluster path); mariadb runs on the host
pf() {
  case $1 in
    munged) echo "$MUNGE_IN/munged.pid /usr/sbin/munged" ;;
    slurmdbd) echo "$RUN_IN/slurmdbd.pid /usr/sbin/slurmdbd" ;;
    slurmctld) echo "$RUN_IN/slurmctld.pid /usr/sbin/slurmctld" ;;
    slurmd) echo "$RUN_IN/slurmd.pid /usr/sbin/slurmd" ;;
    slurmrestd-jwt) echo "$RUN_IN/slurmrestd-jwt.pid /usr/sbin/slurmrestd" ;;
    slurmrestd-local) echo "$RUN_IN/slurmrestd-local.pid /usr/sbin/slurmrestd" ;;
    *) echo "pf: unknown daemon $1" >&2; return 1 ;;
  esac
}
d_alive() {
  if [ "$1" = mariadb ]; then ROOT="" pid_alive "$DB_DIR/mariadb.pid" /usr/sbin/mariadbd; return; fi
  local f e; read -r f e < <(pf "$1"); pid_alive "$(hp "$f")" "$e"
}
d_stop() {
  if [ "$1" = mariadb ]; then ROOT="" stop_pid "$DB_DIR/mariadb.pid" /usr/sbin/mariadbd mariadb; return; fi
  local f e; read -r f e < <(pf "$1"); stop_pid "$(hp "$f")" "$e" "$1"
}
# d_stop_many LABEL...: TERM all at once, wait up to 10 s for all, then KILL what is left
d_stop_many() {
  local l p i pids=() labels=()
  for l in "$@"; do
    if d_alive "$l"; then p=$(d_pid "$l"); kill "$p" 2>/dev/null; pids+=("$p"); labels+=("$l=$p"); fi
  done
  for ((i = 0; i < 100 && ${#pids[@]} > 0; i++)); do
    local left=() ; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    pids=("${left[@]+"${left[@]}"}"); [ ${#pids[@]} = 0 ] && break; sleep 0.1
  done
  if [ ${#pids[@]} -gt 0 ]; then log "still alive after 10 s, SIGKILL: ${pids[*]}"; kill -9 "${pids[@]}" 2>/dev/null; sleep 0.2; fi
  [ ${#labels[@]} = 0 ] || log "stopped ${labels[*]}"
  for l in "$@"; do
    if [ "$l" = mariadb ]; then rm -f "$DB_DIR/mariadb.pid"; else local f e; read -r f e < <(pf "$l"); rm -f "$(hp "$f")"; fi
  done
}
d_pid() {
  if [ "$1" = mariadb ]; then cat "$DB_DIR/mariadb.pid" 2>/dev/null; return; fi
  local f e; read -r f e < <(pf "$1"); cat "$(hp "$f")" 2>/dev/null
}

# Slurm client commands against this cluster (as root, clean env).
SC() { IN "$@"; }

ctld_ok() { IN scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { IN sinfo -h -N -n "$TC_NODE" -o %T 2>/dev/null | head -1; }
# node_ready: idle/mixed/allocated; resumes a node left down/drained by an earlier run.
node_ready() {
  local st; st=$(node_state)
  case $st in
    idle*|mixed*|alloc*|completing*) return 0 ;;
    drain*|drng*|down*|inval*|fail*) IN scontrol update nodename="$TC_NODE" state=resume >/dev/null 2>&1; return 1 ;;
    *) return 1 ;;
  esac
}

rest_ping_jwt() { # [curl args]: prints the body; succeeds if slurmctld answers UP through slurmrestd
  local tok; tok=$(cat "$JWT_FILE" 2>/dev/null) || return 1
  local body url="http://127.0.0.1:$P_REST"; [ $# -gt 0 ] && url=http://localhost
  body=$(curl -sf -m 5 -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: $tok" "$@" \
    "$url/slurm/$REST_VER/ping") || return 1
  echo "$body"
  if [ "$REST_VER" = v0.0.38 ]; then jq -e '.pings[0].ping=="UP"' <<<"$body" >/dev/null
  else jq -e '.pings[0].responding==true' <<<"$body" >/dev/null; fi
}
rest_ping_jwt_sock() { rest_ping_jwt --unix-socket "$REST_JWT_SOCK"; }
rest_ping_sock() {
  local body; body=$(curl -sf -m 5 --unix-socket "$REST_SOCK" "http://localhost/slurm/$REST_VER/ping") || return 1
  echo "$body"
  if [ "$REST_VER" = v0.0.38 ]; then jq -e '.pings[0].ping=="UP"' <<<"$body" >/dev/null
  else jq -e '.pings[0].responding==true' <<<"$body" >/dev/null; fi
}

# mounts under the chroot (host paths), deepest first
chroot_mounts() { [ -n "$ROOT" ] || return 0; awk -v r="$ROOT" '$2==r || index($2, r"/")==1 {print $2}' /proc/self/mounts | sort -r; }

# Start functions for the individual daemons. Each is a no-op if the daemon already runs.
start_munged() {
  d_alive munged && return 0
  # (the socket's .lock file is left alone: munged uses it to refuse a second daemon on the socket)
  rm -f "$(hp "$MUNGE_IN/munged.pid")"
  IN_AS munge /usr/sbin/munged --socket="$MUNGE_SOCK_IN" --key-file="$MUNGE_IN/munge.key" \
    --pid-file="$MUNGE_IN/munged.pid" --log-file="$MUNGE_IN/munged.log" --seed-file="$MUNGE_IN/munged.seed" \
    >> "$TC_LOG" 2>&1 || die "munged failed to start (see $TC_LOG)"
  wait_for 50 IN munge -S "$MUNGE_SOCK_IN" -n || die "munged not answering"
  log "munged pid $(d_pid munged)"
}

start_mariadb() { # on the host, as user mysql, TCP 127.0.0.1:$P_DB only for slurmdbd
  d_alive mariadb && return 0
  local H="env -i PATH=$TC_PATH HOME=/root LANG=C.UTF-8 $TC_MARK=$NAME"
  mkdir -p "$DB_DIR"; chown mysql:mysql "$DB_DIR"; chmod 0750 "$DB_DIR"
  if [ ! -d "$DB_DIR/data/mysql" ]; then
    $H mariadb-install-db --user=mysql --datadir="$DB_DIR/data" --auth-root-authentication-method=socket \
      --skip-test-db >> "$TC_LOG" 2>&1 9>&- || die "mariadb-install-db failed (see $TC_LOG)"
  fi
  rm -f "$DB_DIR/mariadb.pid"
  $H setpriv --reuid=mysql --regid=mysql --init-groups setsid /usr/sbin/mariadbd --no-defaults \
    --datadir="$DB_DIR/data" --socket="$DB_DIR/mysqld.sock" --pid-file="$DB_DIR/mariadb.pid" \
    --port="$P_DB" --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=64M \
    --log-error="$DB_DIR/mariadb.log" < /dev/null >> "$TC_LOG" 2>&1 9>&- &
  wait_for 150 $H mariadb-admin --socket="$DB_DIR/mysqld.sock" ping || die "mariadb not answering: $(tail -5 "$DB_DIR/mariadb.log")"
  wait_for 50 test -s "$DB_DIR/mariadb.pid"
  $H mariadb --socket="$DB_DIR/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;" 9>&- || die "mariadb: cannot create slurm user"
  log "mariadb pid $(d_pid mariadb)"
}

start_slurmdbd() {
  if d_alive slurmdbd; then accounting_qos; return 0; fi
  IN /usr/sbin/slurmdbd >> "$TC_LOG" 2>&1 || die "slurmdbd failed: $(tail -5 "$(hp "$LOG_IN/slurmdbd.log")")"
  wait_for 100 IN sacctmgr -n show cluster || die "slurmdbd not answering: $(tail -5 "$(hp "$LOG_IN/slurmdbd.log")")"
  if ! IN sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    IN sacctmgr -i add cluster "$CLUSTER" >> "$TC_LOG" 2>&1 || die "sacctmgr add cluster failed"
    # a new accounting DB hands out a new ClusterID: slurmctld would die with "CLUSTER ID MISMATCH"
    # against the one in its state dir; jobs are kept, only that file goes
    d_stop slurmctld
    rm -f "$(hp "$STATE_IN/ctld/clustername")"
  fi
  accounting_qos
  log "slurmdbd pid $(d_pid slurmdbd)"
}

# accounting_qos: a QOS with a submit limit (MaxSubmitJobsPerUser=5) root may use
accounting_qos() {
  IN sacctmgr -n -P show qos format=name | grep -qx tether5 ||
    IN sacctmgr -i add qos tether5 MaxSubmitJobsPerUser=5 >> "$TC_LOG" 2>&1 || die "sacctmgr add qos failed"
  IN sacctmgr -n -P show assoc user=root format=qos | grep -q tether5 ||
    IN sacctmgr -i modify user root set qos+=tether5 >> "$TC_LOG" 2>&1 || die "sacctmgr modify user root failed"
  # associations are enforced: the REST service account submits jobs too
  IN sacctmgr -n -P show assoc user="$TC_REST_USER" format=user | grep -qx "$TC_REST_USER" ||
    IN sacctmgr -i add user "$TC_REST_USER" account=root >> "$TC_LOG" 2>&1 || die "sacctmgr add user $TC_REST_USER failed"
}

# ctld_up_or_fatal LOGFILE OFFSET: 0 when the controller answers, 2 when it logged a fatal error
ctld_up_or_fatal() {
  ctld_ok && return 0
  tail -c +"$(($2 + 1))" "$1" 2>/dev/null | grep -q 'fatal:' && return 2
  return 1
}
start_slurmctld() {
  local lf; lf=$(hp "$LOG_IN/slurmctld.log")
  local try rc i off
  for try in 1 2; do
    d_alive slurmctld && break
    off=$(stat -c %s "$lf" 2>/dev/null || echo 0)
    IN /usr/sbin/slurmctld >> "$TC_LOG" 2>&1 || die "slurmctld failed: $(tail -5 "$lf")"
    rc=1
    for ((i = 0; i < 150; i++)); do rc=0; ctld_up_or_fatal "$lf" "$off" || rc=$?; [ $rc = 1 ] || break; sleep 0.2; done
    [ $rc = 0 ] && break
    if [ $try = 1 ] && tail -c +"$((off + 1))" "$lf" | grep -q 'CLUSTER ID MISMATCH'; then
      # the accounting DB is newer than the state dir (e.g. db dir removed): keep the jobs, drop the id
      log "slurmctld: CLUSTER ID MISMATCH with slurmdbd; removing $STATE_IN/ctld/clustername"
      rm -f "$(hp "$STATE_IN/ctld/clustername")"
      continue
    fi
    die "slurmctld not answering: $(tail -5 "$lf")"
  done
  wait_for 150 ctld_ok || die "slurmctld not answering: $(tail -5 "$lf")"
  log "slurmctld pid $(d_pid slurmctld)"
}

start_slurmd() {
  d_alive slurmd || IN /usr/sbin/slurmd >> "$TC_LOG" 2>&1 || die "slurmd failed: $(tail -5 "$(hp "$LOG_IN/slurmd.log")")"
  wait_for 150 node_ready || die "node $TC_NODE not ready ($(node_state)): $(IN sinfo -R 2>&1 | tail -2) $(tail -5 "$(hp "$LOG_IN/slurmd.log")")"
  log "slurmd pid $(d_pid slurmd)"
}

start_slurmrestd() {
  local plugins
  if [ "$SERIES" = 22.05 ]; then plugins=openapi/v0.0.38; [ "$WITH_DBD" = 1 ] && plugins=$plugins,openapi/dbv0.0.38
  else plugins=openapi/slurmctld; [ "$WITH_DBD" = 1 ] && plugins=$plugins,openapi/slurmdbd; fi
  if ! d_alive slurmrestd-jwt; then
    # SLURM_JWT=daemon: slurmrestd talks to slurmctld with each request's JWT (no munge needed for it)
    rm -f "$(hp "$REST_JWT_SOCK_IN")"
    as_cmd "$TC_REST_USER"
    "${ASCMD[@]}" env SLURM_JWT=daemon setsid /usr/sbin/slurmrestd -a rest_auth/jwt -s "$plugins" \
      "127.0.0.1:$P_REST" "unix:$REST_JWT_SOCK_IN" < /dev/null >> "$(hp "$LOG_IN/slurmrestd-jwt.log")" 2>&1 9>&- &
    echo $! > "$(hp "$RUN_IN/slurmrestd-jwt.pid")"
  fi
  if ! d_alive slurmrestd-local; then
    rm -f "$(hp "$REST_SOCK_IN")"
    as_cmd "$TC_REST_USER"
    "${ASCMD[@]}" setsid /usr/sbin/slurmrestd -a rest_auth/local -s "$plugins" \
      "unix:$REST_SOCK_IN" < /dev/null >> "$(hp "$LOG_IN/slurmrestd-local.log")" 2>&1 9>&- &
    echo $! > "$(hp "$RUN_IN/slurmrestd-local.pid")"
  fi
  ln -sfn "$(hp "$REST_SOCK_IN")" "$REST_SOCK"
  ln -sfn "$(hp "$REST_JWT_SOCK_IN")" "$REST_JWT_SOCK"
  sleep 0.1
  # the pid recorded is that of env/setpriv/chroot, which exec; give it a moment to become slurmrestd
  wait_for 25 d_alive slurmrestd-jwt || die "slurmrestd (jwt) did not start: $(tail -5 "$(hp "$LOG_IN/slurmrestd-jwt.log")")"
  wait_for 25 d_alive slurmrestd-local || die "slurmrestd (local) did not start: $(tail -5 "$(hp "$LOG_IN/slurmrestd-local.log")")"
}

ensure_token() {
  if [ -s "$JWT_FILE" ] && wait_for 5 rest_ping_jwt; then return 0; fi
  local t; t=$(IN scontrol token username=root lifespan=$TC_JWT_LIFESPAN 2>>"$TC_LOG" | sed -n 's/^SLURM_JWT=//p')
  [ -n "$t" ] || die "scontrol token failed"
  ( umask 077; printf '%s\n' "$t" > "$JWT_FILE.tmp" ); mv -f "$JWT_FILE.tmp" "$JWT_FILE"; chmod 0600 "$JWT_FILE"
  log "new JWT in $JWT_FILE"
}
rest_ready() {
  wait_for 75 rest_ping_jwt || die "slurmrestd (jwt) not answering on 127.0.0.1:$P_REST: $(tail -5 "$(hp "$LOG_IN/slurmrestd-jwt.log")")"
  wait_for 75 rest_ping_jwt_sock || die "slurmrestd (jwt) not answering on $REST_JWT_SOCK: $(tail -5 "$(hp "$LOG_IN/slurmrestd-jwt.log")")"
  wait_for 75 rest_ping_sock || die "slurmrestd (local) not answering on $REST_SOCK: $(tail -5 "$(hp "$LOG_IN/slurmrestd-local.log")")"
}

# slurm_site NAME BACKEND GENERATOR [TETHER_PATH]: the part every test
# Slurm site file shares (start.sh and multinode.sh write them); the
# backend's own section follows (slurm_site_rest for slurmrest).
slurm_site() {
  cat <<EOF
# generated by $3 -- do not edit, not committed
version = 1
name = "$1"
backend = "$2"
state_dir = "$TC_SHARED/state/$1"
EOF
  if [ -n "${4:-}" ]; then
    cat <<EOF
# jobs (in 24.11's chroot too) run \`tether report\` from the shared dir;
# \`make testcluster\` and the tests put the binary there
tether_path = "$4"
EOF
  fi
  cat <<EOF
max_walltime = "1h"

[defaults]
partition = "debug"

[mpi]
launcher = "srun"
srun_mpi = "pmix"

[poll]
min_interval = "1s"
max_interval = "5s"
# tests want answers sooner than a real site's budget (10 a minute) gives
max_queries_per_minute = 120

EOF
}

# slurm_site_rest URL JWT_FILE: the [slurmrest] section of a test site.
slurm_site_rest() {
  cat <<EOF
[slurmrest]
url = "$1"
api_version = "auto"
user = "root"
token_file = "$2"
EOF
}
