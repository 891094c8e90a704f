#!/usr/bin/env bash
# Instructions per request of the example shop (both services, every thread, librdkafka's and
# the exporter's included), counted by callgrind: uninstrumented, instrumented with nothing
# sampled (`always_off`: context still propagated), with one trace in ten sampled (`ratio_0.1`,
# parent-based, as services in production commonly run), at 100%, and at 100% with one unkeyed
# record per export batch instead of one per trace (`on_per_batch`). Unlike CPU time,
# the count hardly depends on what else the machine is doing (a percent or two from run to run,
# from timer-driven work such as export intervals and producer batching), so it shows what a
# change to the instrumentation costs or saves. Callgrind runs one thread at a time: what
# contention between cores costs is not in it.
#
# Each mode: a Tansu broker of its own, both services under `valgrind --tool=callgrind`, 300
# warm-up requests, counters zeroed, REQUESTS requests four at a time, counters dumped.
#
#     make bench-instructions            (REQUESTS=1000 by default)
#
# KEEP_DUMPS=DIR keeps each mode's dumps there (MODE-SERVICE.out), for callgrind_annotate
# --inclusive=yes to say where the instructions went.
#
# Needs valgrind, Tansu ($TANSU) and the release build of the examples and the tracepipe binary.
set -euo pipefail

REQUESTS=${REQUESTS:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=$ROOT/target/release
TANSU=${TANSU:-$HOME/.cargo/bin/tansu}
for program in "$RELEASE/examples/shop_frontend" "$RELEASE/examples/shop_orders" "$RELEASE/tracepipe" "$TANSU"; do
    [ -x "$program" ] || { echo "$program is missing: cargo build --release --examples --bin tracepipe, make tansu" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for_port() {
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

# What a mode leaves running, stopped on any exit.
pids=()
dir=
cleanup() {
    if [ ${#pids[@]} -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    [ -n "$dir" ] && rm -rf "$dir"
    pids=()
    dir=
}
trap cleanup EXIT

# The count callgrind dumped for a service, after the counters were zeroed.
dumped() {
    local file=$1.1
    [ -s "$file" ] || { echo "callgrind wrote no dump at $file (see ${1%.out}.log)" >&2; return 1; }
    callgrind_annotate "$file" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

# Prints the instructions per request of one mode: `off`, `always_off`, `ratio_0.1` or `on`.
count() {
    local mode=$1
    dir=$(mktemp -d)
    local kafka_port orders_port frontend_port
    kafka_port=$(free_port); orders_port=$(free_port); frontend_port=$(free_port)
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 &
    pids+=($!)
    wait_for_port "$kafka_port"
    sed "s/^  brokers: .*/  brokers: \"127.0.0.1:$kafka_port\"/; s/^topics:/topics:\n  orders.placed: { partitions: 3, replication: 1 }/" "$ROOT/topology.yaml" >"$dir/topology.yaml"
    "$RELEASE/tracepipe" topics create -t "$dir/topology.yaml" >"$dir/topics.log" 2>&1

    local instrument=on sampler=parentbased_always_on ratio= records=per-trace
    case $mode in
        off) instrument=off ;;
        always_off) sampler=always_off ;;
        ratio_*) sampler=parentbased_traceidratio ratio=${mode#ratio_} ;;
        on_per_batch) records=per-batch ;;
    esac
    local service
    for service in orders frontend; do
        local port=$orders_port
        [ "$service" = frontend ] && port=$frontend_port
        env -u TRACEPIPE_KAFKA_BROKERS -u TRACEPIPE_SPANS_TOPIC -u OTEL_SERVICE_NAME OTEL_TRACES_SAMPLER_ARG="$ratio" \
            PORT="$port" KAFKA_BROKERS="127.0.0.1:$kafka_port" ORDERS_URL="http://127.0.0.1:$orders_port" INSTRUMENT=$instrument \
            OTEL_TRACES_SAMPLER=$sampler TRACEPIPE_SPANS_RECORDS=$records RUST_LOG=warn \
            valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$dir/$service.out" "$RELEASE/examples/shop_$service" >"$dir/$service.log" 2>&1 &
        pids+=($!)
        wait_for_port "$port"
    done

    local url=http://127.0.0.1:$frontend_port/checkout
    seq 300 | xargs -P 4 -I{} curl -sf -o /dev/null "$url/warm{}"
    sleep 2
    callgrind_control -z "${pids[1]}" "${pids[2]}" >/dev/null 2>&1
    seq "$REQUESTS" | xargs -P 4 -I{} curl -sf -o /dev/null "$url/{}"
    # The last spans reach the exporter and Kafka within the export interval (500 ms).
    sleep 3
    callgrind_control -d "${pids[1]}" "${pids[2]}" >/dev/null 2>&1
    sleep 1
    local total=0 instructions
    for service in orders frontend; do
        instructions=$(dumped "$dir/$service.out")
        total=$((total + instructions))
        printf '  %-12s %-9s %8d instructions per request\n' "$mode" "$service" $((instructions / REQUESTS))
        if [ -n "${KEEP_DUMPS:-}" ]; then
            mkdir -p "$KEEP_DUMPS"
            cp "$dir/$service.out.1" "$KEEP_DUMPS/$mode-$service.out"
        fi
    done
    printf '  %-12s %-9s %8d instructions per request\n' "$mode" both $((total / REQUESTS))
    # The services flush their telemetry to the broker as they stop, so it goes last.
    kill "${pids[2]}" "${pids[1]}" 2>/dev/null || true
    wait "${pids[2]}" "${pids[1]}" 2>/dev/null || true
    cleanup
}

echo "example shop, GET /checkout, $REQUESTS requests, callgrind:"
for mode in off always_off ratio_0.1 on on_per_batch; do
    count "$mode"
done
