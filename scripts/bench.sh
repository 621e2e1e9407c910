#!/usr/bin/env bash
# Runs every benchmark (make bench). Targets are in each benchmark's comment;
# the figures go in the issue's closing note.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
go test -run '^$' -bench . -benchtime "${BENCHTIME:-20x}" ./... 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' | grep -v 'no test files'
