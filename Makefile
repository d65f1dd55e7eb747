# redis-consul-agent — every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
BIN       := bin/redis-consul-agent
PKG       := github.com/seed42ef8afe/redis-consul-agent
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X $(PKG)/agent/buildinfo.Version=$(VERSION) -X $(PKG)/agent/buildinfo.Commit=$(COMMIT)
CACHE_BIN := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/redis-consul-agent/bin
export PATH := $(CACHE_BIN):$(PATH)
export RCA_CONSUL_BIN := $(CACHE_BIN)/consul

# Integration tests start real processes; give CI room but stay well inside
# its 90 minutes.
INTEGRATION_TIMEOUT ?= 45m

# The Docker stack's end-to-end test builds images; give it its own budget.
COMPOSE_TIMEOUT ?= 20m

.PHONY: deps build test unit integration vet demo clean compose-up compose-down test-compose chaos bench sizes test-rules

## deps: install redis-server, redis-sentinel, nutcracker, dig and build Consul (cached)
deps:
	@bash integration/scripts/deps.sh >/dev/null

## build: the agent binary in bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/redis-consul-agent

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## unit: fast tests of the logic (fakes, no real servers)
unit:
	$(GO) test -race -count=1 -short ./...

## test-rules: check the Prometheus alerting rules and run their unit tests (promtool, from deps)
test-rules: deps
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

## integration: tests against real Consul, Redis, Sentinel and nutcracker
integration: deps build
	RCA_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout $(INTEGRATION_TIMEOUT) ./integration/...

## test-compose: end-to-end test of the Docker stack (DNS, twemproxy, stopped master, partition)
test-compose: deps
	RCA_COMPOSE=1 $(GO) test -count=1 -timeout $(COMPOSE_TIMEOUT) -run '^TestCompose$$' -v ./integration/

## compose-up: the Docker stack of docker-compose.yml, built locally (works with no image registry)
compose-up: deps
	bash integration/compose/stack.sh up

## compose-down: stop and remove the Docker stack
compose-down:
	bash integration/compose/stack.sh down

## test: everything CI runs
test: deps vet unit test-rules integration test-compose

## demo: a local stack (Consul, 3 Redis, 3 Sentinels, twemproxy, agents) until Ctrl-C
# The agent build is timed like deps' long steps (the first one compiles every
# dependency); the demo then prints each start with its time.
demo: deps
	@bash integration/scripts/progress.sh "building the agent" $(MAKE) --no-print-directory build >/dev/null
	./$(BIN) demo

## chaos: a fault campaign against the real stack (CHAOS_DURATION, CHAOS_SEED); exit 1 on any violation
CHAOS_DURATION ?= 30m
CHAOS_SEED     ?= 1
chaos: deps build
	$(GO) run ./cmd/rca-chaos --agent $(BIN) --duration $(CHAOS_DURATION) --seed $(CHAOS_SEED)

## bench: the figures of docs/BENCHMARKS.md (BENCH_ARGS, e.g. --short)
bench: deps build
	$(GO) run ./cmd/rca-bench --agent $(BIN) $(BENCH_ARGS)

## sizes: the daemon's largest files and functions (what the structure review counts)
sizes:
	@sh .ci/sizes.sh

clean:
	rm -rf bin
