# The two commands a newcomer needs: `make up` and `make test`. `make bench` prints the figures.

TANSU_VERSION := 0.6.0
CARGO_BIN ?= $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
TANSU ?= $(CARGO_BIN)/tansu
export TANSU

.PHONY: up test bench bench-instructions build-deps tansu prometheus chromium stunnel postgres python kubectl valgrind

# Root installs packages directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## Everything in one process: embedded Kafka-protocol broker on 127.0.0.1:9092, every processor,
## SQLite storage (./tracepipe.db), the UI and API on 127.0.0.1:16686, /metrics on
## 127.0.0.1:9464, demo traffic.
up: build-deps
	@echo "tracepipe: the UI will be at http://127.0.0.1:16686/ (metrics at http://127.0.0.1:9464/metrics)"
	cargo run --release --locked --bin tracepipe -- up --demo

## Every test, including the ones against a real Kafka-protocol broker (Tansu, installed once).
test: build-deps tansu prometheus chromium stunnel postgres python kubectl
	cargo test --workspace --locked --no-fail-fast -- --test-threads 2

## Criterion benchmarks in process, then the end-to-end run against Tansu.
bench: tansu
	cargo bench --locked --bench decode -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked --bench assembly -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked --bench analysis -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked --bench sink
	cargo bench --locked --bench e2e
	cargo bench --locked --bench scaling
	cargo bench --locked -p tracepipe-instrument --bench spans -- --warm-up-time 1 --measurement-time 3
	cargo bench --locked -p tracepipe-instrument --bench export -- --warm-up-time 1 --measurement-time 3
	cargo build --release --locked --examples
	cargo bench --locked --bench instrumentation
	$(MAKE) --no-print-directory bench-instructions

## The example shop's instructions per request (reference and thin profiles) uninstrumented, with
## tracepipe-instrument and with the standard OpenTelemetry Rust stack, counted by callgrind:
## within a percent or two from run to run, unlike CPU time on a shared machine. Prints the three
## figures (per request against the standard stack, per span, per unsampled hop) and where the
## instructions go, by library.
bench-instructions: tansu valgrind
	cargo build --release --locked --examples --bin tracepipe
	benches/instrumentation_instructions.sh

## valgrind (Debian's package), whose callgrind counts instructions for bench-instructions.
valgrind:
	@if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then \
		echo "installing valgrind (Debian package) for the instruction counts"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind; \
	fi

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

## What the build links: OpenSSL for librdkafka's TLS and SASL SCRAM, libcurl for its
## OAUTHBEARER/OIDC token requests (Debian's libssl-dev, libcurl4-openssl-dev and pkg-config);
## zstd is built from source by its crate.
build-deps:
	@if ! pkg-config --exists openssl libcurl 2>/dev/null; then \
		echo "installing libssl-dev, libcurl4-openssl-dev and pkg-config (Debian packages) for librdkafka's TLS, SASL and OIDC"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl-dev libcurl4-openssl-dev pkg-config; \
	fi

## stunnel and the openssl CLI (Debian's packages): TLS in front of the test broker, test certificates.
stunnel:
	@if ! command -v stunnel4 >/dev/null || ! command -v openssl >/dev/null; then \
		echo "installing stunnel4 and openssl (Debian packages) for the TLS tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stunnel4 openssl; \
	fi

## kubectl with its built-in kustomize (v5), which renders the k8s/ overlays for tests/k8s.rs.
## Debian's own kubernetes-client is 1.20, whose kustomize predates components; the kubectl
## package of Kubernetes' or Google Cloud's apt repository is what the test machines have.
kubectl:
	@if ! kubectl kustomize --help >/dev/null 2>&1; then \
		echo "installing kubectl (apt) for the Kubernetes manifest tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl \
			|| { echo "kubectl is not installable from this machine's apt sources: install kubectl 1.27 or later (https://kubernetes.io/docs/tasks/tools/)"; exit 1; }; \
	fi

## Headless Chromium (Debian's package), for the UI test.
chromium:
	@if ! command -v chromium >/dev/null; then \
		echo "installing chromium (Debian package) for the UI test"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

## The Python services of the zero-code instrumentation test, in a virtualenv under target/.
PYTHON_ENV := target/python
python: $(PYTHON_ENV)/.installed
$(PYTHON_ENV)/.installed: tests/python/requirements.txt
	python3 -m venv $(PYTHON_ENV)
	$(PYTHON_ENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth) for the store tests: started if installed and down.
postgres:
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		echo "starting the local PostgreSQL cluster"; \
		$(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	fi
