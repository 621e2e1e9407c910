# tether — see README.md.
GO       ?= go
BIN      := bin/tether
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: build run test test-unit sim fuzz bench deps testcluster testcluster-stop generate refresh-specs clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tether

# Run an example Task on the embedded local site and show its outcome.
run: build
	@./$(BIN) run examples/tasks/hello.toml | tee /dev/stderr | python3 -m json.tool >/dev/null && echo "(the JSON line above is the outcome Airflow reads)"

# Everything: installs what the tests need (as root on Debian), then runs
# unit, integration, fuzz and end-to-end tests.
test:
	./scripts/test.sh

test-unit:
	$(GO) test -count=1 ./...

# The fault-schedule simulation at length: make sim SEEDS=100000 [FIRST=1].
# A failing seed replays with: go test ./internal/sim -run 'TestSimulation$$' -sim.seed=N -v
SEEDS ?= 100000
FIRST ?= 1
sim:
	$(GO) test -count=1 -timeout 0 -run 'TestSimulation$$' -v ./internal/sim -sim.seeds=$(SEEDS) -sim.first=$(FIRST)

fuzz:
	./scripts/fuzz.sh 10s

bench:
	./scripts/bench.sh

deps:
	./scripts/deps.sh

# Start (or check) the Slurm 22.05 and 24.11 test clusters; stop them.
testcluster: build
	./testcluster/start.sh all
	./testcluster/multinode.sh start
	./testcluster/pbs.sh start

testcluster-stop:
	./testcluster/pbs.sh stop
	./testcluster/multinode.sh stop
	./testcluster/stop.sh all

generate:
	$(GO) generate ./...

# Fetch slurmrestd's OpenAPI specs from the running test clusters,
# regenerate the REST clients and test them; review the diff.
refresh-specs:
	./scripts/refresh-specs.sh

clean:
	rm -rf bin
