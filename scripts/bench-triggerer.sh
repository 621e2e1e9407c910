#!/usr/bin/env bash
# Issue 21's benchmark (part of make bench): a real Airflow deployment with
# TETHER_BENCH_TASKS (default 500) deferred TetherOperator tasks on one
# triggerer, the shared tether watch against one tether step per run per
# poll, one after the other in one run. About 30 minutes with 500 tasks on
# 2 cores (Airflow's own task starts are most of it). Prints one JSON line
# per mode and a comparison line.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build
VENV=$(scripts/airflow-env.sh)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tether-bench-triggerer.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
scripts/install-provider.sh "$VENV" "$TMP" >/dev/null
TETHER_BIN="$PWD/bin/tether" "$VENV/bin/python" integrations/airflow/tests/bench/bench_triggerer.py \
	--tasks "${TETHER_BENCH_TASKS:-500}" ${TETHER_BENCH_TRIGGERER_ARGS:-}
