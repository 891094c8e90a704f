#!/usr/bin/env bash
# Instructions per request of the example shop (both services, every thread, librdkafka's and
# the exporter's included), counted by callgrind, which hardly depends on what else the machine
# is doing (a percent or two from run to run, from timer-driven work such as export intervals and
# producer batching), so it shows what a change to the instrumentation costs or saves. Callgrind
# runs one thread at a time: what contention between cores costs is not in it.
#
# Two profiles (PROFILES, both by default): `reference`, services doing a typical request's work
# (SQLite queries over a few thousand rows, pricing, JSON of a few kilobytes: examples/shop/work.rs),
# and `thin`, services doing nearly nothing besides the HTTP call and the Kafka hop, the worst
# case for instrumentation's share. Each profile in these modes:
#
#   off               uninstrumented (no tracing layers, no subscriber)
#   always_off        tracepipe-instrument, nothing sampled: context still propagated
#   ratio_0.1         tracepipe-instrument, parent-based, one trace in ten (production's usual)
#   on                tracepipe-instrument at 100%, a record per export batch (its default)
#   on_per_trace      tracepipe-instrument at 100%, a record per trace keyed by trace id
#   otel_always_off   the standard OpenTelemetry Rust stack (tracing-opentelemetry, the SDK's
#   otel_ratio_0.1    batch span processor, opentelemetry-otlp's default OTLP/HTTP exporter) to
#   otel_on           tracepipe's OTLP gateway, nothing sampled, 10%, and 100%
#
# and then three figures per profile, tracepipe-instrument's beside the standard stack's:
# instrumentation instructions per request at 100% (and their ratio), per span all-in (start,
# attributes, end, export: the 100% cost over the spans a request makes) and per hop with nothing
# sampled (the nothing-sampled cost over the request's two hops, the HTTP call and the Kafka hop:
# propagation, and the `tracing` spans made under an unsampled parent), and what each mode does
# per second while idle. Last, where the instructions go, by library: tracepipe-instrument
# with nothing sampled and at 100%, and the standard stack at 100%. A fully sampled mode in which
# not every span reached the gateway or the router fails the run.
#
# Each mode: a Tansu broker of its own, both services under `valgrind --tool=callgrind`, WARMUP
# requests, a pause longer than the export interval, counters zeroed, REQUESTS requests four at a
# time, the same pause, counters dumped; then IDLE seconds with no request, counted apart.
#
#     make bench-instructions            (REQUESTS=1000, REFERENCE_REQUESTS=500 by default)
#     PROFILES=thin MODES="off on" benches/instrumentation_instructions.sh
#
# KEEP_DUMPS=DIR keeps each mode's dumps there (PROFILE-MODE-SERVICE.out), for callgrind_annotate
# --inclusive=yes to say where the instructions went.
#
# Needs valgrind, Tansu ($TANSU) and the release build of the examples and the tracepipe binary.
set -euo pipefail

REQUESTS=${REQUESTS:-1000}
REFERENCE_REQUESTS=${REFERENCE_REQUESTS:-500}
WARMUP=${WARMUP:-300}
PROFILES=${PROFILES:-reference thin}
MODES=${MODES:-off always_off ratio_0.1 on on_per_trace otel_always_off otel_ratio_0.1 otel_on}
# The standard stack's batch processor exports every 5 s (OTEL_BSP_SCHEDULE_DELAY's default),
# tracepipe-instrument's every 500 ms: the pauses let the spans of the warm-up go out before the
# counters are zeroed, and those of the measured requests before they are dumped.
PAUSE=${PAUSE:-6}
IDLE=${IDLE:-10}
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

# The count of a service's dump N (1: the measured requests, 2: the idle window).
dumped() {
    local file=$1.$2
    [ -s "$file" ] || { echo "callgrind wrote no dump at $file (see ${1%.out}.log)" >&2; return 1; }
    callgrind_annotate "$file" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

# The sum of a counter's samples on a Prometheus endpoint.
metric_sum() {
    curl -sf "http://127.0.0.1:$1/metrics" | awk -v name="$2" -v match_="$3" 'index($0, name) == 1 && index($0, match_) { sum += $NF } END { printf "%d", sum }'
}

# Spans one request makes: frontend server, client, orders server, Kafka producer, consumer,
# `confirm order`; the reference profile's orders service adds its `SELECT products` span.
spans_per_request() { if [ "$1" = reference ]; then echo 7; else echo 6; fi; }

results=$(mktemp -d)
breakdowns=$(mktemp -d)
trap 'cleanup; rm -rf "$results" "$breakdowns"' EXIT

# Counts one mode of one profile; leaves the instructions per request in $results/PROFILE-MODE.
count() {
    local profile=$1 mode=$2 requests=$3
    dir=$(mktemp -d)
    local kafka_port orders_port frontend_port
    kafka_port=$(free_port); orders_port=$(free_port); frontend_port=$(free_port)
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 &
    pids+=($!)
    wait_for_port "$kafka_port"
    local grpc_port http_port admin_port
    grpc_port=$(free_port); http_port=$(free_port); admin_port=$(free_port)
    sed "s/^  brokers: .*/  brokers: \"127.0.0.1:$kafka_port\"/; s/^topics:/topics:\n  orders.placed: { partitions: 3, replication: 1 }/; s/^  listen: 127.0.0.1:9464/  listen: 127.0.0.1:$admin_port/; s/^    grpc_listen: .*/    grpc_listen: 127.0.0.1:$grpc_port/; s/^    http_listen: .*/    http_listen: 127.0.0.1:$http_port/" \
        "$ROOT/topology.yaml" >"$dir/topology.yaml"
    "$RELEASE/tracepipe" topics create -t "$dir/topology.yaml" >"$dir/topics.log" 2>&1

    local instrument=on sampler=parentbased_always_on ratio= records=per-batch
    case $mode in
        off) instrument=off ;;
        always_off) sampler=always_off ;;
        ratio_*) sampler=parentbased_traceidratio ratio=${mode#ratio_} ;;
        on) ;;
        on_per_trace) records=per-trace ;;
        otel_always_off) instrument=otel sampler=always_off ;;
        otel_ratio_*) instrument=otel sampler=parentbased_traceidratio ratio=${mode#otel_ratio_} ;;
        otel_on) instrument=otel ;;
        *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
    # Outside callgrind like the broker, what reads the spans, so the run can say how many arrived:
    # the OTLP gateway the standard stack exports to, or the router reading otlp_spans.
    case $instrument in
        otel) RUST_LOG=warn "$RELEASE/tracepipe" run gateway -t "$dir/topology.yaml" >"$dir/reader.log" 2>&1 &
              pids+=($!); wait_for_port "$http_port" ;;
        on) RUST_LOG=warn "$RELEASE/tracepipe" run router -t "$dir/topology.yaml" >"$dir/reader.log" 2>&1 &
            pids+=($!); wait_for_port "$admin_port" ;;
    esac
    local service services=()
    for service in orders frontend; do
        local port=$orders_port
        [ "$service" = frontend ] && port=$frontend_port
        env -u TRACEPIPE_KAFKA_BROKERS -u TRACEPIPE_SPANS_TOPIC -u OTEL_SERVICE_NAME -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_TRACES_SAMPLER_ARG="$ratio" \
            PORT="$port" KAFKA_BROKERS="127.0.0.1:$kafka_port" ORDERS_URL="http://127.0.0.1:$orders_port" INSTRUMENT=$instrument SHOP_PROFILE=$profile \
            OTEL_TRACES_SAMPLER=$sampler TRACEPIPE_SPANS_RECORDS=$records OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$http_port" RUST_LOG=warn \
            valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$dir/$service.out" "$RELEASE/examples/shop_$service" >"$dir/$service.log" 2>&1 &
        pids+=($!)
        services+=($!)
        wait_for_port "$port"
    done

    local url=http://127.0.0.1:$frontend_port/checkout
    seq "$WARMUP" | xargs -P 4 -I{} curl -sf -o /dev/null "$url/warm{}"
    sleep "$PAUSE"
    callgrind_control -z "${services[@]}" >/dev/null 2>&1
    local started ended
    started=$(date +%s.%N)
    seq "$requests" | xargs -P 4 -I{} curl -sf -o /dev/null "$url/{}"
    sleep "$PAUSE"
    callgrind_control -d "${services[@]}" >/dev/null 2>&1
    ended=$(date +%s.%N)
    # What the services do with no request at all (export timers, the Kafka clients' own
    # wake-ups), counted over IDLE seconds: callgrind stretches the requests over far more time
    # than they take natively, so such work weighs more per request here than in production.
    callgrind_control -z "${services[@]}" >/dev/null 2>&1
    local idle_started
    idle_started=$(date +%s.%N)
    sleep "$IDLE"
    callgrind_control -d "${services[@]}" >/dev/null 2>&1
    local idle_seconds window
    idle_seconds=$(python3 -c "import time; print(time.time() - $idle_started)")
    window=$(python3 -c "print($ended - $started)")
    sleep 1
    local total=0 idle=0 instructions line=
    for service in orders frontend; do
        instructions=$(dumped "$dir/$service.out" 1)
        idle=$((idle + $(dumped "$dir/$service.out" 2)))
        total=$((total + instructions))
        line+=$(printf '%s %8d' "$service" $((instructions / requests)))"  "
        if [ -n "${KEEP_DUMPS:-}" ]; then
            mkdir -p "$KEEP_DUMPS"
            cp "$dir/$service.out.1" "$KEEP_DUMPS/$profile-$mode-$service.out"
        fi
        case $mode in off|always_off|on|otel_on) cp "$dir/$service.out.1" "$breakdowns/$profile-$mode-$service.out" ;; esac
    done
    local idle_per_second
    idle_per_second=$(python3 -c "print(int($idle / $idle_seconds))")
    echo $((total / requests)) >"$results/$profile-$mode"
    echo "$idle_per_second" >"$results/$profile-$mode.idle"
    printf '  %-16s %9d instructions per request  (%s); %.0f s; idle %d per second\n' "$mode" $((total / requests)) "$line" "$window" "$idle_per_second"
    # The services flush their telemetry as they stop, so they go first.
    kill "${services[@]}" 2>/dev/null || true
    wait "${services[@]}" 2>/dev/null || true
    if grep -qiE "dropped|error|failed" "$dir/orders.log" "$dir/frontend.log"; then
        echo "  $mode: the services logged: $(grep -hiE "dropped|error|failed" "$dir/orders.log" "$dir/frontend.log" | head -2)"
    fi
    # Every span of a fully sampled mode must have arrived, or the mode measured less tracing
    # than it claims.
    case $mode in
        on|on_per_trace|otel_on)
            local made arrived
            made=$(( $(spans_per_request "$profile") * (WARMUP + requests) ))
            for _ in $(seq 30); do
                if [ "$instrument" = otel ]; then
                    arrived=$(metric_sum "$admin_port" tracepipe_gateway_spans_total 'outcome="accepted"')
                else
                    arrived=$(metric_sum "$admin_port" tracepipe_router_routed_spans_total '')
                fi
                [ "$arrived" -ge "$made" ] && break
                sleep 1
            done
            if [ "$arrived" -ne "$made" ]; then
                echo "  $mode: $arrived spans arrived of the $made the requests made" >&2
                exit 1
            fi ;;
    esac
    cleanup
}

for profile in $PROFILES; do
    requests=$REQUESTS
    [ "$profile" = reference ] && requests=$REFERENCE_REQUESTS
    spans_per_request "$profile" >"$results/$profile.spans"
    echo "example shop, $profile profile, GET /checkout, $requests requests, callgrind:"
    for mode in $MODES; do
        count "$profile" "$mode" "$requests"
    done
done

# The three figures, and where the instructions went.
REQUESTS=$REQUESTS REFERENCE_REQUESTS=$REFERENCE_REQUESTS python3 - "$results" "$breakdowns" "$PROFILES" <<'PY'
import os, re, sys
results, breakdowns, profiles = sys.argv[1], sys.argv[2], sys.argv[3].split()
def read(profile, mode, suffix=""):
    try:
        return int(open(os.path.join(results, f"{profile}-{mode}{suffix}")).read())
    except (OSError, ValueError):
        return None
def fmt(n):
    return "-" if n is None else f"{n:,.0f}"
for profile in profiles:
    spans = int(open(os.path.join(results, f"{profile}.spans")).read())
    off = read(profile, "off")
    if off is None:
        continue
    print(f"\n{profile} profile: {off:,} instructions per request uninstrumented; {spans} spans and 2 hops per request")
    print(f"  {'':34} {'tracepipe-instrument':>22} {'standard stack':>16}")
    def cost(mode):
        value = read(profile, mode)
        return None if value is None else value - off
    def share(mode):
        c = cost(mode)
        return "" if c is None else f" ({c / off * 100:+.1f}%)"
    rows = [
        ("instrumentation per request, 100%", cost("on"), cost("otel_on"), share("on"), share("otel_on")),
        ("instrumentation per request, 10%", cost("ratio_0.1"), cost("otel_ratio_0.1"), share("ratio_0.1"), share("otel_ratio_0.1")),
        ("per span, all-in (100%)", None if cost("on") is None else cost("on") / spans, None if cost("otel_on") is None else cost("otel_on") / spans, "", ""),
        ("per hop, nothing sampled", None if cost("always_off") is None else cost("always_off") / 2, None if cost("otel_always_off") is None else cost("otel_always_off") / 2, "", ""),
    ]
    for label, ours, theirs, our_share, their_share in rows:
        print(f"  {label:34} {fmt(ours) + our_share:>22} {fmt(theirs) + their_share:>16}")
    # What each mode does with no request at all, over uninstrumented: work that is per second,
    # not per request, and weighs more per request under callgrind, which stretches the requests
    # over far more time than they take natively (a timer's work moves by tens of thousands of
    # instructions a second from one window to the next).
    idle_off = read(profile, "off", ".idle")
    def idle(mode):
        value = read(profile, mode, ".idle")
        return None if value is None or idle_off is None else value - idle_off
    if idle("on") is not None or idle("otel_on") is not None:
        print(f"  idle, instructions per second over uninstrumented: tracepipe-instrument {fmt(idle('always_off'))} nothing sampled, {fmt(idle('on'))} at 100%; standard stack {fmt(idle('otel_always_off'))} and {fmt(idle('otel_on'))}")
    if cost("on") is not None and cost("otel_on"):
        print(f"  tracepipe-instrument / standard stack at 100%: {cost('on') / cost('otel_on'):.2f} (target at most 0.5); per span {cost('on') / spans:,.0f} (target at most 2,500); per hop {fmt(None if cost('always_off') is None else cost('always_off') / 2)} (target at most 1,500)")

# Where the instrumentation's instructions go: each library's own instructions (self cost, read
# from the dumps; a function's callees count for their own library) in a mode minus
# uninstrumented, per request, the biggest first.
def self_costs(path):
    names, objects, costs = {}, {}, {}
    function, obj, skip = None, "", False
    def resolve(table, spec):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "?")
    for line in open(path, errors="replace"):
        if not line.strip():
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            if skip:
                skip = False  # the inclusive cost of the call just named
                continue
            parts = line.split()
            if len(parts) >= 2 and function is not None:
                costs[(function, obj)] = costs.get((function, obj), 0) + int(parts[1])
        elif line.startswith("fn="):
            function = resolve(names, line[3:].strip())
        elif line.startswith("ob="):
            obj = os.path.basename(resolve(objects, line[3:].strip()))
        elif line.startswith("cfn="):
            resolve(names, line[4:].strip())
        elif line.startswith("cob="):
            resolve(objects, line[4:].strip())
        elif line.startswith("calls="):
            skip = True
    return costs
def library(function, obj):
    name = function.lstrip("<&*(")
    crate = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    if crate:
        return {"std": "std/core/alloc", "alloc": "std/core/alloc", "core": "std/core/alloc", "__rustc": "std/core/alloc"}.get(crate.group(1), crate.group(1))
    if function.startswith("rd_") or function.startswith("rd_kafka"):
        return "librdkafka"
    if obj.startswith("libc") or obj.startswith("ld-linux"):
        return "libc (malloc, free, memcpy)"
    return obj or "other"
def by_library(profile, mode, requests):
    totals = {}
    for service in ("orders", "frontend"):
        path = os.path.join(breakdowns, f"{profile}-{mode}-{service}.out")
        if not os.path.exists(path):
            return None
        for (function, obj), count in self_costs(path).items():
            key = library(function, obj)
            totals[key] = totals.get(key, 0) + count
    return {k: v / requests for k, v in totals.items()}
for profile in profiles:
    requests = int(os.environ["REFERENCE_REQUESTS"] if profile == "reference" else os.environ["REQUESTS"])
    base = by_library(profile, "off", requests)
    for mode, label in (("always_off", "tracepipe-instrument, nothing sampled"), ("on", "tracepipe-instrument at 100%"), ("otel_on", "standard stack at 100%")):
        traced = by_library(profile, mode, requests)
        if base is None or traced is None:
            continue
        diff = sorted(((traced.get(k, 0) - base.get(k, 0), k) for k in set(traced) | set(base)), reverse=True)
        print(f"\n{profile} profile, {label}: instructions per request over uninstrumented, by library")
        shown = [(value, name) for value, name in diff if value >= 500][:12]
        for value, name in shown:
            print(f"  {name:34} {value:>8,.0f}")
        print(f"  {'(the rest)':34} {sum(v for v, _ in diff) - sum(v for v, _ in shown):>8,.0f}")
PY
