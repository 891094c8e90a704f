# The two commands a newcomer needs: `make up` and `make test`. `make bench` prints the figures.

TANSU_VERSION := 0.6.0
CARGO_BIN ?= $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
TANSU ?= $(CARGO_BIN)/tansu
export TANSU

.PHONY: up test bench tansu prometheus

# Root installs packages directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## Everything in one process: embedded Kafka-protocol broker on 127.0.0.1:9092, every processor,
## /metrics on 127.0.0.1:9464, demo traffic.
up:
	cargo run --release --locked --bin tracepipe -- up --demo

## Every test, including the ones against a real Kafka-protocol broker (Tansu, installed once).
test: tansu prometheus
	cargo test --workspace --locked --no-fail-fast -- --test-threads 2

## Criterion benchmarks in process, then the end-to-end run against Tansu.
bench: tansu
	cargo bench --locked --bench decode -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked --bench assembly -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked --bench analysis -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked --bench e2e

## Tansu, the Kafka-protocol broker the integration tests start; built from crates.io once (10-25 minutes).
tansu:
	@if [ ! -x "$(TANSU)" ]; then \
		echo "installing tansu $(TANSU_VERSION) into $(CARGO_BIN) (builds once, 10-25 minutes)"; \
		cargo install tansu --locked --version $(TANSU_VERSION) --features dynostore,libsql; \
	fi

## Prometheus and promtool (Debian's package), for the scrape and rule tests.
prometheus:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
		echo "installing prometheus (Debian package) for the scrape and rule tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	fi
