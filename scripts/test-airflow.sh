#!/usr/bin/env bash
# The Airflow tests of tether (called by `make test`):
#   1. make build                                  -> bin/tether
#   2. scripts/airflow-env.sh                      -> the pinned Airflow 3 venv
#   3. unit tests of airflow-provider-tether       (operator + trigger, fake CLI)
#   4. scripts/install-provider.sh: the wheel (+ sdist) built and installed
#      into the venv with --no-deps
#   5. real-Airflow e2e tests (SQLite, dag.test() in-process), split into
#      parallel pytest processes; includes the README's example DAGs, the
#      success case on the Slurm 22.05 test cluster (skipped if it is not
#      running, a failure with CI=true), and a real deployment (api-server,
#      scheduler, dag-processor, triggerer processes: test_triggerer.py)
# Exits non-zero if anything fails.
#
# Environment:
#   TETHER_AIRFLOW_E2E_JOBS  parallel e2e pytest processes (default 2, 3 with >= 4 CPUs;
#                            1 = one process)
#   TETHER_E2E_KEEP=1        keep the e2e AIRFLOW_HOMEs (paths printed)
#   PYTEST_ARGS              extra pytest arguments for both test runs (e.g. "-x -k success")
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
AF="$REPO/integrations/airflow"
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
start=$EPOCHREALTIME
phase=$start
log() { printf '== airflow: %s\n' "$*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }
done_phase() { log "$* ($(since "$phase"))"; phase=$EPOCHREALTIME; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tether-test-airflow.XXXXXX")
cleanup() {
	local pid
	for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT

log "make build"
make -s build >&2
export TETHER_BIN="$REPO/bin/tether"
done_phase "built $TETHER_BIN"

VENV=$(scripts/airflow-env.sh)
PY="$VENV/bin/python"
done_phase "venv $VENV"

# An empty, migrated Airflow DB for the e2e shards to copy, made while the
# unit tests and the wheel build run (a migration takes ~4 s of CPU).
(
	export AIRFLOW_HOME="$TMP/db-template" AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONWARNINGS=ignore
	export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$TMP/db-template/airflow.db"
	export AIRFLOW__CORE__DAGS_FOLDER="$TMP/db-template/dags"
	mkdir -p "$AIRFLOW__CORE__DAGS_FOLDER"
	"$VENV/bin/airflow" db migrate >"$TMP/migrate.log" 2>&1
) &
migrate_pid=$!

log "unit tests (the provider from src/)"
(cd "$AF" && PYTHONPATH="$AF/src" "$PY" -m pytest tests/unit -q --basetemp="$TMP/pytest-unit" ${PYTEST_ARGS:-}) >&2
done_phase "unit tests passed"

log "python -m build (wheel + sdist), install into the venv"
wheel=$(scripts/install-provider.sh "$VENV" "$TMP")
done_phase "built and installed $wheel"

wait "$migrate_pid" || { cat "$TMP/migrate.log" >&2; log "airflow db migrate failed"; exit 1; }
export TETHER_E2E_DB_TEMPLATE="$TMP/db-template/airflow.db"

# Each shard pays ~8 s of Airflow start-up (imports, DAG parsing, the
# in-process Execution API); the rest is mostly Tasks sleeping. 2 shards are
# as fast as 3 on 2 cores (~28 s against ~47 s for one process).
if [ "$(nproc 2>/dev/null || echo 2)" -ge 4 ]; then jobs_n=${TETHER_AIRFLOW_E2E_JOBS:-3}; else jobs_n=${TETHER_AIRFLOW_E2E_JOBS:-2}; fi
log "e2e tests with real Airflow, $jobs_n parallel pytest process(es)"
cd "$AF"
if [ "$jobs_n" -le 1 ]; then
	"$PY" -m pytest tests/e2e -q -rs --basetemp="$TMP/pytest-e2e" ${PYTEST_ARGS:-} >&2
else
	pids=()
	for ((i = 0; i < jobs_n; i++)); do
		TETHER_E2E_SHARD="$i/$jobs_n" "$PY" -m pytest tests/e2e -q -rs --basetemp="$TMP/pytest-e2e.$i" ${PYTEST_ARGS:-} \
			>"$TMP/e2e.$i.log" 2>&1 &
		pids+=($!)
	done
	failed=0
	for ((i = 0; i < jobs_n; i++)); do
		if wait "${pids[$i]}"; then
			grep -E '^SKIPPED' "$TMP/e2e.$i.log" | sed "s/^/[shard $i] /" >&2 || true
			tail -n 1 "$TMP/e2e.$i.log" | sed "s/^/[shard $i] /" >&2
		else
			rc=$?
			# 5 = no tests collected in this shard: fine
			if [ "$rc" = 5 ]; then continue; fi
			failed=1
			log "shard $i failed (exit $rc):"
			sed "s/^/[shard $i] /" "$TMP/e2e.$i.log" >&2
		fi
	done
	[ "$failed" = 0 ] || { log "e2e tests FAILED"; exit 1; }
fi
done_phase "e2e tests passed"
log "all Airflow tests passed in $(since "$start")"
