# The two commands of the README: `make up` runs the whole system locally, `make test` runs the
# suite. Both install what is missing first (scripts/setup.sh).
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
VOTECTL := $(CARGO_TARGET_DIR)/release/votectl
WASM_DIR := $(CARGO_TARGET_DIR)/wasm32-wasip2/release

.PHONY: setup components build up down status test bench loadtest loadtest-weather compare compare-brokers clean-state

setup:
	@bash scripts/setup.sh

# The guest components (wasm32-wasip2), a workspace of their own; then vote-rest with its
# publisher import satisfied by publisher-http, one component that imports only wasi:* (what
# `wasmtime serve` runs; Spin composes the same two itself). wasm-tools compose names the
# plugged instance after the file, so the dependency goes in under a kebab-case name.
components: setup
	cargo build --release --target wasm32-wasip2 --manifest-path components/Cargo.toml
	rm -rf $(WASM_DIR)/compose && mkdir -p $(WASM_DIR)/compose
	cp $(WASM_DIR)/publisher_http.wasm $(WASM_DIR)/compose/publisher-http.wasm
	.venv/bin/wasm-tools compose $(WASM_DIR)/vote_rest.wasm -d $(WASM_DIR)/compose/publisher-http.wasm -o $(WASM_DIR)/vote-rest-spin.wasm

build: components
	cargo build --release --workspace --bins

up: build
	$(VOTECTL) up

down:
	@if [ -x $(VOTECTL) ]; then $(VOTECTL) down; else echo "nothing built yet, nothing to stop"; fi

status:
	$(VOTECTL) status

# The Rust suite and the deploy checks both run whatever the other found, and the target fails
# if either did (tests/deploy/test_makefile.py runs it with stand-ins for cargo and pytest).
PYTHON ?= .venv/bin/python
test: components
	cargo build --workspace --bins
	@rust=0; deploy=0; \
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast || rust=$$?; \
	else \
		cargo test --workspace --no-fail-fast || rust=$$?; \
	fi; \
	$(PYTHON) -m pytest -q tests/deploy || deploy=$$?; \
	if [ $$rust -ne 0 ]; then echo "make test: the Rust tests failed (exit $$rust; see above)" >&2; fi; \
	if [ $$deploy -ne 0 ]; then echo "make test: tests/deploy failed (exit $$deploy; see above)" >&2; fi; \
	[ $$rust -eq 0 ] && [ $$deploy -eq 0 ]

# Both producers at 64 connections, one after the other, on the running stack.
bench:
	$(VOTECTL) bench --count 20000 --concurrency 64

# Locust, headless, against each producer of the running stack (`make up`) in turn: the same
# users, spawn rate and duration per path; CSV, HTML and JSON reports under reports/.
LOADTEST_USERS ?= 64
LOADTEST_SPAWN_RATE ?= 16
LOADTEST_RUN_TIME ?= 30s
loadtest: setup
	VOTECTL=$(VOTECTL) .venv/bin/python scripts/loadtest.py --users $(LOADTEST_USERS) \
		--spawn-rate $(LOADTEST_SPAWN_RATE) --run-time $(LOADTEST_RUN_TIME)

# Seed 003's load test: 10 users posting the sample weather reports (data/weather.json) to
# POST /tweets on the running stack, 10,000 requests as the seed ran them; then the check that
# each accepted report was counted once (reports/weather*).
LOADTEST_WEATHER_USERS ?= 10
LOADTEST_WEATHER_REQUESTS ?= 10000
loadtest-weather: setup
	VOTECTL=$(VOTECTL) .venv/bin/python scripts/loadtest.py --paths weather --users $(LOADTEST_WEATHER_USERS) \
		--spawn-rate $(LOADTEST_WEATHER_USERS) --requests $(LOADTEST_WEATHER_REQUESTS) --run-time 10m

# The comparison report: votectl bench (sweep, open loop, CPU per vote) and Locust on the running
# stack, written to docs/comparison.md with its plots in docs/comparison/.
compare: setup
	VOTECTL=$(VOTECTL) .venv/bin/python scripts/compare.py

# Seed 003's question, Kafka or RabbitMQ: the weather workload through each broker in a stack of
# its own (own state and free ports; a running `make up` is left alone), written to
# docs/brokers.md with its plots in docs/brokers/.
compare-brokers: build
	VOTECTL=$(VOTECTL) .venv/bin/python scripts/compare_brokers.py

clean-state: down
	rm -rf .votes
