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

.PHONY: deps build test unit integration vet lint demo bench clean

## deps: install redis-server, redis-sentinel, nutcracker, dig and build Consul (cached)
deps:
	@bash integration/scripts/deps.sh >/dev/null

## build: the agent binary in bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/redis-consul-agent

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

## unit: fast tests of the logic (fakes, no real servers)
unit:
	$(GO) test -race -count=1 -short ./...

## integration: tests against real Consul, Redis, Sentinel and nutcracker
integration: deps build
	RCA_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout $(INTEGRATION_TIMEOUT) ./integration/...

## test: everything CI runs
test: deps vet unit integration

## demo: a local stack (Consul, 3 Redis, 3 Sentinels, twemproxy, agents) until Ctrl-C
demo: deps build
	./$(BIN) demo

clean:
	rm -rf bin
