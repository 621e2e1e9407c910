#!/usr/bin/env bash
# Ensure the pinned Airflow 3.x virtualenv used by tether's Airflow e2e tests
# exists and matches integrations/airflow/requirements-airflow.lock, then print
# its path (the ONLY thing written to stdout; all progress goes to stderr).
#
#   scripts/airflow-env.sh            create/refresh the venv, print its path
#   scripts/airflow-env.sh --relock   re-resolve requirements-airflow.in into
#                                     requirements-airflow.lock (needs PyPI), then
#                                     exit without touching the venv
#
# Environment:
#   TETHER_AIRFLOW_VENV       venv location (default: <repo>/.cache/airflow-venv)
#   TETHER_AIRFLOW_PYTHON     interpreter to build the venv from (default: python3,
#                             falling back to python3.11); must be CPython 3.11
#   TETHER_AIRFLOW_INSTALLER  uv (default, ~5s) or pip (~40s, no uv needed)
#
# Idempotent: the venv is rebuilt from scratch only when the lock files, the
# installer or the interpreter change (fingerprint stored in
# $VENV/.tether-airflow-lock.sha256). Concurrent callers serialise on a flock.
# On a fresh Debian 12 it installs python3-venv via apt when running as root.
set -euo pipefail

log() { printf 'airflow-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AF_DIR="$REPO/integrations/airflow"
LOCK="$AF_DIR/requirements-airflow.lock"
UV_LOCK="$AF_DIR/requirements-uv.lock"
VENV="${TETHER_AIRFLOW_VENV:-$REPO/.cache/airflow-venv}"
INSTALLER="${TETHER_AIRFLOW_INSTALLER:-uv}"
MARKER_NAME=".tether-airflow-lock.sha256"
# The lock is resolved for this Python minor version (see --relock below).
PY_MINOR="3.11"

case "$INSTALLER" in uv|pip) ;; *) die "TETHER_AIRFLOW_INSTALLER must be uv or pip, got '$INSTALLER'";; esac
[ -f "$LOCK" ] || die "missing $LOCK"
[ -f "$UV_LOCK" ] || die "missing $UV_LOCK"

# --- pick the interpreter ----------------------------------------------------
is_py311() { "$1" -c "import sys; sys.exit(sys.version_info[:2] != (${PY_MINOR/./, }))" 2>/dev/null; }
pick_python() {
  local c
  if [ -n "${TETHER_AIRFLOW_PYTHON:-}" ]; then
    is_py311 "$TETHER_AIRFLOW_PYTHON" || die "TETHER_AIRFLOW_PYTHON=$TETHER_AIRFLOW_PYTHON is not Python $PY_MINOR"
    command -v "$TETHER_AIRFLOW_PYTHON"; return
  fi
  for c in python3 "python$PY_MINOR" /usr/bin/python3; do
    if command -v "$c" >/dev/null 2>&1 && is_py311 "$c"; then command -v "$c"; return; fi
  done
  die "need Python $PY_MINOR (the lock is resolved for it); set TETHER_AIRFLOW_PYTHON"
}
PY=$(pick_python)

# --- venv support (Debian ships ensurepip separately in python3-venv) ---------
ensure_venv_module() {
  local probe
  probe=$(mktemp -d)
  if "$PY" -m venv "$probe/v" >/dev/null 2>&1; then rm -rf "$probe"; return; fi
  rm -rf "$probe"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "python venv/ensurepip missing: installing python3-venv via apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq python3-venv "python${PY_MINOR}-venv" >&2
  else
    die "'$PY -m venv' does not work; install python3-venv (apt-get install python3-venv)"
  fi
}

# Bootstrap uv (pinned + hashed) into $1 using that venv's pip.
install_uv_into() {
  "$1/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    --require-hashes --no-deps -r "$UV_LOCK" >&2
}

# --- --relock ----------------------------------------------------------------
if [ "${1:-}" = "--relock" ]; then
  ensure_venv_module
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  "$PY" -m venv "$tmp/uv"
  install_uv_into "$tmp/uv"
  log "resolving requirements-airflow.in for Python $PY_MINOR / x86_64 Linux"
  (cd "$AF_DIR" && "$tmp/uv/bin/uv" pip compile requirements-airflow.in --system-certs \
      --python-version "$PY_MINOR" --python-platform x86_64-unknown-linux-gnu \
      --generate-hashes --quiet --custom-compile-command "scripts/airflow-env.sh --relock" \
      -o requirements-airflow.lock >&2)
  log "wrote $LOCK"
  exit 0
elif [ $# -gt 0 ]; then
  die "unknown argument: $1 (usage: $0 [--relock])"
fi

# --- fingerprint of everything that determines the venv contents --------------
fingerprint() {
  {
    sha256sum "$LOCK" "$UV_LOCK" | awk '{print $1}'
    echo "installer=$INSTALLER"
    "$PY" -c 'import sys; print(sys.implementation.name, sys.version.split()[0])'
  } | sha256sum | awk '{print $1}'
}

mkdir -p "$(dirname "$VENV")"
VENV=$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")

# Serialise concurrent callers (parallel test runners) on a lock file.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.flock"
  flock 9
fi

WANT=$(fingerprint)
if [ -f "$VENV/$MARKER_NAME" ] && [ "$(cat "$VENV/$MARKER_NAME")" = "$WANT" ] \
   && [ -x "$VENV/bin/airflow" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
  log "up to date: $VENV"
  printf '%s\n' "$VENV"
  exit 0
fi

if [ -e "$VENV" ]; then
  # Only ever delete something that is recognisably a venv.
  [ -f "$VENV/pyvenv.cfg" ] || die "$VENV exists but is not a virtualenv; refusing to replace it"
  log "lock/installer/python changed (or install incomplete): rebuilding $VENV"
  rm -rf "$VENV"
fi

ensure_venv_module
start=$(date +%s)
log "creating venv at $VENV with $PY ($("$PY" -V 2>&1))"
"$PY" -m venv "$VENV"

if [ "$INSTALLER" = uv ]; then
  install_uv_into "$VENV"
  # --system-certs: trust the OS CA store like Debian's pip does (uv otherwise
  # uses its bundled roots and fails behind TLS-intercepting proxies).
  # --compile-bytecode matters: uv skips .pyc by default and with
  # PYTHONDONTWRITEBYTECODE=1 every `airflow` call would recompile ~2000
  # modules (+4-5 s per invocation).
  log "installing requirements-airflow.lock with uv"
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" --require-hashes --no-deps \
    --system-certs --compile-bytecode --quiet -r "$LOCK" >&2
else
  log "installing requirements-airflow.lock with pip"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    --require-hashes --no-deps -r "$LOCK" >&2
fi

"$VENV/bin/python" -c 'import airflow, airflow.providers.standard' \
  || die "installed venv cannot import airflow"
printf '%s\n' "$WANT" > "$VENV/$MARKER_NAME"
log "ready in $(( $(date +%s) - start ))s: $VENV (airflow $("$VENV/bin/python" -c 'import airflow; print(airflow.__version__)'))"
printf '%s\n' "$VENV"
