#!/usr/bin/env bash
# The README's test command (make test). Installs what it needs as root on
# Debian (OpenMPI, Prometheus, the Slurm test clusters, the Airflow venv),
# then runs every test. With CI=true nothing may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start ))s)" >&2; }
step "dependencies"
./scripts/deps.sh
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	step "test clusters (Slurm 22.05, 24.11 and the 3-node cluster)"
	./testcluster/start.sh all
	./testcluster/multinode.sh start
else
	step "not root on Debian: the Slurm tests use running test clusters or say what is missing"
fi
step "go vet, gofmt, go mod tidy"
go vet ./...
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt needed: $unformatted" >&2
	exit 1
fi
go mod tidy -diff
if git rev-parse --git-dir >/dev/null 2>&1; then
	step "generated slurmrestd clients are up to date"
	go generate ./backends/slurmrest/internal/...
	git diff --exit-code -- backends/slurmrest/internal
fi
step "unit, integration and end-to-end tests"
go test -count=1 -parallel 32 -timeout 25m ./...
step "the monitor and the run directory under the race detector"
# the monitor's cycles, its inotify goroutine and its web handlers share
# trackers; these packages' tests are quick enough to run again with -race
go test -race -count=1 -timeout 10m ./monitor/... ./rundir/...
step "short fuzz runs"
./scripts/fuzz.sh "${FUZZTIME:-5s}"
step "Airflow"
./scripts/test-airflow.sh
step "all tests passed"
