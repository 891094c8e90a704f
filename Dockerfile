# tracepipe's container image: `docker build -t tracepipe:0.1.0 .`
# One binary runs every processor (`tracepipe run <processor>`); the UI is compiled into it.

# The build: rust's Debian image has what librdkafka's build takes (a C compiler, make,
# pkg-config) and the headers it links against (OpenSSL for TLS and SASL SCRAM, libcurl for
# OAUTHBEARER/OIDC, zlib).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev libcurl4-openssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts: a rebuild compiles only what changed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tracepipe \
 && install -D target/release/tracepipe /out/tracepipe

# The runtime: Debian slim with the shared libraries the binary links (libssl, libcurl, zlib) and
# CA certificates for brokers behind TLS and OAUTHBEARER token endpoints. Distroless has no libcurl.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 tracepipe \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tracepipe \
 && install -d -o 65532 -g 65532 /var/lib/tracepipe
COPY --from=build /out/tracepipe /usr/local/bin/tracepipe
COPY topology.yaml /etc/tracepipe/topology.yaml
ENV TRACEPIPE_TOPOLOGY=/etc/tracepipe/topology.yaml
# The store's directory when it is SQLite (sqlite://tracepipe.db is relative to it).
WORKDIR /var/lib/tracepipe
USER 65532:65532
# admin (/metrics, /healthz, /ready), OTLP gRPC and HTTP, the UI and API.
EXPOSE 9464 4317 4318 16686
ENTRYPOINT ["/usr/local/bin/tracepipe"]
