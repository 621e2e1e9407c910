#!/usr/bin/env bash
# Runs every benchmark (make bench). Targets are in each benchmark's comment;
# the figures go in the issue's closing note. BenchmarkMonitorSharedStateDir
# (about a minute: 11,000 run directories, a 10 s window) takes
# TETHER_BENCH_RUNS (runs of the first site; default 10000) and
# TETHER_BENCH_WINDOW (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
go test -run '^$' -bench . -benchtime "${BENCHTIME:-20x}" ./... 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' | grep -v 'no test files'
# BenchmarkArray1000 is one comparison of a few minutes (it skips itself
# in the run above)
go test -run '^$' -bench 'BenchmarkArray1000$' -benchtime 1x ./cmd/tether/ 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)'
./scripts/bench-controller.sh
./scripts/bench-triggerer.sh
