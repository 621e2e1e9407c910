#!/usr/bin/env bash
# Issue 17's table, rerun side by side in one run: tether with its Slurm
# defaults against PSI/J (default 30 s, and 5 s) on the Slurm 22.05 test
# cluster, 50 jobs of 30-57 s, slurmctld's status RPCs from sdiag. About
# 7 minutes; nothing else may use the cluster meanwhile. Part of make bench.
set -euo pipefail
cd "$(dirname "$0")/.."
./testcluster/start.sh bookworm >/dev/null
. /tmp/tether-testcluster/bookworm/env.sh
go build -o bin/tether ./cmd/tether
venv=${XDG_CACHE_HOME:-$HOME/.cache}/tether/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import psij' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'psij-python==0.9.11'
fi
out=$TESTCLUSTER_SHARED_DIR/bench-controller-$$
mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
# tether's own Slurm defaults: the test cluster's site without its poll overrides
grep -v -E '^(min_interval|max_interval|max_queries_per_minute) = ' "$TESTCLUSTER_SITE_SBATCH" > "$out/site.toml"
mkdir -p "$out/bin"; cp bin/tether "$out/bin/tether"
PATH=$TESTCLUSTER_BIN_DIR:$PATH "$venv/bin/python" scripts/bench_controller.py "$out/bin/tether" "$out/site.toml" "$out"
