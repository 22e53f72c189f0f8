# Shaddock: Pomelo's multi-server chat, in Rust.
#   make up      build and run a local cluster on chatofpomelo's ports (gate 3014,
#                connectors 3050/3051, web client 3001); Ctrl-C stops it
#   make down    stop what `make up` started
#   make test    every test: unit, NATS/Redis integration, end-to-end
#   make bench   the benchmark suite
#   make chaos   faults while users chat, then checks (DURATION=15m; default 5m; FAULTS=nats-restart)
#   make lint    rustfmt and clippy
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: up down test test-pomelo build lint fmt bench bench-redis chaos services browser-deps clean

build:
	$(CARGO) build --workspace --bins

up:
	./deploy/up.sh

down:
	./deploy/up.sh down

# The tests need NATS on 127.0.0.1:4222 and Redis on 127.0.0.1:6379.
services:
	./deploy/services.sh ensure

# The browser test needs Debian's chromium and playwright-core from npm.
browser-deps:
	@command -v chromium >/dev/null || { echo "installing chromium from Debian's packages"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; }
	@[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund --silent)

# The minute of chaos runs alone, after the rest: its checks have time bounds, and the other
# tests would load the machine under it.
test: services browser-deps build
	$(CARGO) test --workspace --no-fail-fast -- --skip chaos::
	$(CARGO) test -p shaddock-e2e --test e2e chaos::
	./k8s/validate.sh

# The web client against the original Node.js Pomelo chat (needs the chatofpomelo ports free).
test-pomelo: browser-deps
	./tests/browser/against-pomelo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Kill -9, SIGSTOP, NATS and Redis restarts, network pauses, one at a time, while simulated
# users chat on private NATS and Redis; after each, membership, views and messages are checked.
# FAULTS=nats-restart,kill-9 injects only those kinds; SEED=n picks another sequence.
DURATION ?= 5m
SEED ?= 1
chaos: build
	$(CARGO) build -p shaddock-e2e --bin shaddock-chaos
	./target/debug/shaddock-chaos --duration $(DURATION) --seed $(SEED) $(if $(FAULTS),--faults $(FAULTS))

# Shaddock and the Node.js Pomelo chat under the same load generator; writes BENCHMARKS.md.
bench:
	./tests/bench/run.sh

# Redis round trips per user and per chat message, single Redis and Redis Cluster (docs/scaling.md).
bench-redis:
	./tests/bench/redis_ops.sh

clean:
	$(CARGO) clean
	rm -rf run
