#!/usr/bin/env bash
# The README's test command (make test). Installs what it needs as root on
# Debian, then runs every test. With CI=true nothing may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
./scripts/deps.sh
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "== test clusters (Slurm 22.05 and 24.11)" >&2
	./testcluster/start.sh all
else
	echo "== not root on Debian: the Slurm tests use running test clusters or say what is missing" >&2
fi
echo "== go vet" >&2
go vet ./...
echo "== unit and integration tests" >&2
go test -count=1 -parallel 16 -timeout 20m ./...
echo "== short fuzz runs" >&2
./scripts/fuzz.sh "${FUZZTIME:-5s}"
echo "== all tests passed in $(( $(date +%s) - start ))s" >&2
