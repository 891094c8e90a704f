// tracepipe's UI: plain JavaScript over the query API, one view per hash route
// (#/search, #/trace/ID, #/services, #/slos, #/transactions, #/trends, #/map, #/alerts, #/bottlenecks, #/errors).
"use strict";

const view = document.getElementById("view");
const lookback = document.getElementById("lookback");

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The whole response body, for the endpoints that answer more than `data`.
async function apiBody(path) {
  const headers = {};
  const token = localStorage.getItem("tracepipe.token");
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers });
  if (response.status === 401) {
    const entered = prompt("This tracepipe requires a bearer token:");
    if (entered) { localStorage.setItem("tracepipe.token", entered); return apiBody(path); }
  }
  const body = await response.json();
  if (!response.ok) throw new Error((body.errors && body.errors[0] && body.errors[0].msg) || response.statusText);
  return body;
}

async function api(path) { return (await apiBody(path)).data; }

function range() {
  const end = Date.now() * 1000;
  return { start: end - Number(lookback.value), end };
}

function ms(us) {
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(1) + " ms";
  return us + " µs";
}

function when(us) { return new Date(us / 1000).toLocaleString(); }

function fail(error) { view.replaceChildren(h("div", { class: "card" }, h("b", {}, "Could not load: "), error.message)); }

function traceLink(id, text) { return h("a", { class: "trace-link", href: "#/trace/" + id, "data-trace-id": id }, text || id.slice(0, 12)); }

// ---- search ----------------------------------------------------------------------------------

async function searchView(query) {
  const services = await api("/api/services");
  const service = query.get("service") || services[0] || "";
  const form = h("form", { class: "search card" });
  const serviceSelect = h("select", { name: "service" }, services.map((s) => h("option", { value: s, selected: s === service }, s)));
  const operationSelect = h("select", { name: "operation" }, h("option", { value: "" }, "all"));
  const fillOperations = async () => {
    const ops = serviceSelect.value ? await api("/api/services/" + encodeURIComponent(serviceSelect.value) + "/operations") : [];
    operationSelect.replaceChildren(h("option", { value: "" }, "all"), ...ops.map((o) => h("option", { value: o, selected: o === query.get("operation") }, o)));
  };
  serviceSelect.addEventListener("change", fillOperations);
  await fillOperations();
  form.append(
    h("label", {}, "Service", serviceSelect),
    h("label", {}, "Operation", operationSelect),
    h("label", {}, "Tags (logfmt)", h("input", { name: "tags", placeholder: "error=true http.response.status_code=500", value: query.get("tags") || "", size: 34 })),
    h("label", {}, "Min duration", h("input", { name: "minDuration", placeholder: "100ms", value: query.get("minDuration") || "", size: 8 })),
    h("label", {}, "Limit", h("input", { name: "limit", value: query.get("limit") || "20", size: 4 })),
    h("button", { type: "submit" }, "Find traces"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    location.hash = "#/search?" + params;
  });
  const results = h("div", { id: "results" }, service ? h("p", { class: "muted" }, "searching…") : h("p", { class: "muted" }, "No traces stored yet."));
  view.replaceChildren(h("h2", {}, "Find traces"), form, results);
  if (!service) return;
  const { start, end } = range();
  const params = new URLSearchParams({ service, start, end, limit: query.get("limit") || "20" });
  for (const k of ["operation", "tags", "minDuration"]) if (query.get(k)) params.set(k, query.get(k));
  const traces = await api("/api/traces?" + params);
  if (!traces.length) { results.replaceChildren(h("p", { class: "muted" }, "No trace matches.")); return; }
  const rows = traces.map((t) => {
    const root = t.spans.find((s) => !s.references.some((r) => r.refType === "CHILD_OF")) || t.spans[0];
    const first = Math.min(...t.spans.map((s) => s.startTime));
    const last = Math.max(...t.spans.map((s) => s.startTime + s.duration));
    const errors = t.spans.filter((s) => s.tags.some((tag) => tag.key === "error" && tag.value === true)).length;
    const services = new Set(Object.values(t.processes).map((p) => p.serviceName));
    return { t, root, first, duration: last - first, errors, services };
  }).sort((a, b) => b.first - a.first);
  results.replaceChildren(h("table", { class: "traces" },
    h("tr", {}, h("th", {}, "Trace"), h("th", {}, "Root"), h("th", {}, "Duration"), h("th", {}, "Spans"), h("th", {}, "Services"), h("th", {}, "Errors"), h("th", {}, "Started")),
    rows.map((r) => h("tr", { class: "trace-row" },
      h("td", {}, traceLink(r.t.traceID)),
      h("td", {}, h("b", {}, r.t.processes[r.root.processID].serviceName), ": ", r.root.operationName),
      h("td", {}, ms(r.duration)),
      h("td", {}, r.t.spans.length),
      h("td", {}, r.services.size),
      h("td", {}, r.errors ? h("span", { class: "badge error" }, r.errors + " error" + (r.errors > 1 ? "s" : "")) : ""),
      h("td", { class: "muted" }, when(r.first)),
    ))));
}

// ---- trace waterfall -------------------------------------------------------------------------

// A bar's label goes after the bar, or before it when the bar reaches the right edge.
function labelPosition(startPct, endPct) {
  return endPct > 70 ? `right:${Math.max(0, 100 - startPct + 0.5)}%` : `left:${endPct + 0.5}%`;
}

async function traceView(id) {
  const [trace] = await api("/api/v1/traces/" + encodeURIComponent(id));
  const spans = trace.spans;
  const byId = new Map(spans.map((s) => [s.spanID, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    const parent = s.references.find((r) => r.refType === "CHILD_OF" && byId.has(r.spanID));
    if (parent) { if (!children.has(parent.spanID)) children.set(parent.spanID, []); children.get(parent.spanID).push(s); } else roots.push(s);
  }
  const ordered = [];
  const walk = (s, depth) => { ordered.push([s, depth]); (children.get(s.spanID) || []).sort((a, b) => a.startTime - b.startTime).forEach((c) => walk(c, depth + 1)); };
  roots.sort((a, b) => a.startTime - b.startTime).forEach((r) => walk(r, 0));
  const t0 = Math.min(...spans.map((s) => s.startTime));
  const t1 = Math.max(...spans.map((s) => s.startTime + s.duration));
  const total = Math.max(1, t1 - t0);
  const critical = trace.criticalPath || {};
  const isError = (s) => s.tags.some((t) => t.key === "error" && t.value === true);
  const service = (s) => trace.processes[s.processID].serviceName;
  const root = roots[0];
  const rows = ordered.map(([s, depth]) => {
    const onPath = Object.prototype.hasOwnProperty.call(critical, s.spanID);
    const row = h("div", { class: "wf-row" + (onPath ? " critical" : "") + (isError(s) ? " error" : ""), "data-span-id": s.spanID },
      h("div", { class: "wf-label", style: "padding-left:" + (6 + depth * 14) + "px", title: service(s) + " " + s.operationName },
        isError(s) ? h("span", { class: "wf-mark", title: "error" }, "⚠ ") : "",
        h("span", { class: "service" }, service(s)), " ", s.operationName,
        s.spanID === trace.rootCause ? h("span", { class: "badge error" }, " root cause") : ""),
      h("div", { class: "wf-track" },
        h("div", { class: "wf-bar", style: `left:${((s.startTime - t0) / total) * 100}%;width:${(s.duration / total) * 100}%` }),
        h("span", { class: "wf-dur", style: labelPosition((s.startTime - t0) / total * 100, (s.startTime - t0 + s.duration) / total * 100) },
          ms(s.duration) + (onPath ? " · " + ms(critical[s.spanID]) + " on critical path" : ""))));
    row.addEventListener("click", () => {
      const open = row.nextSibling && row.nextSibling.classList && row.nextSibling.classList.contains("wf-detail");
      if (open) { row.nextSibling.remove(); return; }
      const kv = (list) => h("table", {}, list.map((t) => h("tr", {}, h("td", { class: "muted" }, t.key), h("td", {}, typeof t.value === "string" ? t.value : JSON.stringify(t.value)))));
      row.after(h("div", { class: "wf-detail" },
        h("div", {}, h("b", {}, "span "), s.spanID, " · start +", ms(s.startTime - t0), " · ", ms(s.duration)),
        h("h4", {}, "Tags"), kv(s.tags),
        s.logs.length ? [h("h4", {}, "Events"), s.logs.map((l) => h("div", {}, "+" + ms(l.timestamp - t0), kv(l.fields)))] : "",
        h("h4", {}, "Process"), kv([{ key: "service.name", value: service(s) }, ...trace.processes[s.processID].tags]),
        s.warnings ? h("p", { class: "muted" }, s.warnings.join("; ")) : ""));
    });
    return row;
  });
  const errors = spans.filter(isError).length;
  view.replaceChildren(
    h("h2", {}, root ? service(root) + ": " + root.operationName : "trace " + id),
    h("div", { class: "card" },
      h("div", {}, h("b", {}, "Trace "), trace.traceID, " · ", ms(total), " · ", spans.length, " spans · ", new Set(spans.map(service)).size, " services · started ", when(t0)),
      h("div", {}, "Kept by rule ", h("b", {}, trace.sampling.rule || "—"), " (adjusted count ", trace.sampling.adjustedCount, ")",
        trace.sampling.truncated ? h("span", { class: "badge error" }, "truncated") : "",
        errors ? [" · ", h("span", { class: "badge error" }, errors + " error span" + (errors > 1 ? "s" : ""))] : ""),
      h("div", { class: "compare-with" }, h("a", { href: "#/compare?a=" + trace.traceID, "data-compare": "typical" }, "Compare with the typical trace of this endpoint"), " or with trace ",
        h("input", { id: "compare-with", placeholder: "trace id", size: 34 }),
        h("button", { onclick: () => { const b = document.getElementById("compare-with").value.trim(); if (b) location.hash = "#/compare?a=" + trace.traceID + "&b=" + encodeURIComponent(b); } }, "Compare"))),
    h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:var(--critical)" }), "critical path"), h("span", {}, h("i", { style: "background:var(--error)" }), "error"), h("span", {}, h("i", { style: "background:#9fb4dc" }), "other spans"), h("span", {}, "click a span for its tags and events")),
    h("div", { class: "waterfall", id: "waterfall" }, rows));
}

// ---- trace comparison ------------------------------------------------------------------------

async function compareView(query) {
  const params = new URLSearchParams({ a: query.get("a") || "" });
  if (query.get("b")) params.set("b", query.get("b"));
  const c = await api("/api/v1/compare/traces?" + params);
  const name = (t) => `${t.root_service}: ${t.root_operation} · ${msOrDash(t.duration_ms)} · ${t.spans} spans`;
  const delta = (n) => n.delta_ms === null ? "" : (n.delta_ms >= 0 ? "+" : "−") + msOrDash(Math.abs(n.delta_ms));
  const rows = c.nodes.map((n) => h("tr", { class: "cmp-" + n.presence, "data-presence": n.presence },
    h("td", { style: "padding-left:" + (6 + n.depth * 14) + "px" }, h("span", { class: "service" }, n.service), " ", n.operation,
      n.presence === "only_a" ? h("span", { class: "badge error" }, " only in A") : n.presence === "only_b" ? h("span", { class: "badge" }, " only in B") : ""),
    h("td", {}, n.spans_a), h("td", {}, n.spans_b),
    h("td", {}, msOrDash(n.total_ms_a)), h("td", {}, msOrDash(n.total_ms_b)),
    h("td", { class: n.delta_ms > 0 ? "bad" : "" }, delta(n))));
  view.replaceChildren(h("h2", {}, "Trace comparison"),
    h("div", { class: "card" },
      h("div", {}, h("b", {}, "A "), traceLink(c.a.trace_id), " ", name(c.a)),
      h("div", {}, h("b", {}, "B "), traceLink(c.b.trace_id), " ", name(c.b), c.b_is_typical ? h("span", { class: "muted" }, " (the typical trace of the endpoint: the median duration of the last hour's stored traces)") : ""),
      h("div", {}, `operations only in A: ${c.only_in_a} · only in B: ${c.only_in_b}`)),
    h("table", { class: "trace-compare" }, h("tr", {}, h("th", {}, "Service · operation (by ancestry)"), h("th", {}, "Spans A"), h("th", {}, "Spans B"), h("th", {}, "Time A"), h("th", {}, "Time B"), h("th", {}, "B − A")), rows));
}

// ---- service map -----------------------------------------------------------------------------

async function mapView(query) {
  const { start, end } = range();
  // Two versions to compare edge by edge: those asked for, or the first canary's.
  let versions = query.get("candidate") ? { attribute: query.get("attribute") || "service.version", baseline: query.get("baseline"), candidate: query.get("candidate") } : null;
  if (!versions) {
    const canaries = await api("/api/v1/canaries");
    if (canaries.length) versions = { attribute: canaries[0].attribute, baseline: canaries[0].baseline, candidate: canaries[0].candidate };
  }
  const edges = await api(`/api/v1/edges?start=${start}&end=${end}` + (versions ? "&" + new URLSearchParams(versions) : ""));
  if (!edges.length) { view.replaceChildren(h("h2", {}, "Service map"), h("p", { class: "muted" }, "No edges in this range yet.")); return; }
  const nodes = new Map();
  const node = (name) => { if (!nodes.has(name)) nodes.set(name, { name, layer: 0, virtual: false, errors: 0, calls: 0 }); return nodes.get(name); };
  for (const e of edges) { node(e.client); const server = node(e.server); if (e.connection_type === "database" || e.connection_type === "virtual_node") server.virtual = true; server.calls += e.calls; server.errors += e.errors; }
  // Layers by longest path from the callers nobody calls (cycles stop after |nodes| rounds).
  for (let round = 0; round < nodes.size; round++) {
    let changed = false;
    for (const e of edges) { if (e.client === e.server) continue; const next = nodes.get(e.client).layer + 1; if (next > nodes.get(e.server).layer && next < nodes.size) { nodes.get(e.server).layer = next; changed = true; } }
    if (!changed) break;
  }
  const layers = [];
  for (const n of nodes.values()) (layers[n.layer] = layers[n.layer] || []).push(n);
  const W = 180, H = 34, GX = 80, GY = 22;
  layers.forEach((layer, x) => layer.sort((a, b) => a.name.localeCompare(b.name)).forEach((n, y) => { n.x = 20 + x * (W + GX); n.y = 20 + y * (H + GY); }));
  const width = 40 + layers.length * (W + GX), height = 40 + Math.max(...layers.map((l) => l.length)) * (H + GY);
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, ...kids) => { const el = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); kids.forEach((k) => el.append(k)); return el; };
  const svg = s("svg", { class: "map", viewBox: `0 0 ${width} ${height}`, height: Math.min(height, 900) });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto" }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8da2c8" }))));
  const deltas = [];
  for (const e of edges) {
    const a = nodes.get(e.client), b = nodes.get(e.server);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const cls = "edge" + (e.errors / Math.max(1, e.calls) > 0.05 ? " failing" : "") + (e.connection_type === "messaging_system" ? " messaging" : "");
    const path = s("path", { class: cls, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)", "stroke-width": String(1 + Math.min(4, Math.log10(1 + e.calls))) });
    path.append(s("title", {}, `${e.client} → ${e.server}${e.connection_type ? " (" + e.connection_type + ")" : ""}: ${e.calls} calls, ${e.errors} errors, p99 ${e.client_p99_ms ?? e.server_p99_ms ?? "?"} ms`));
    svg.append(path);
    if (e.comparison && e.comparison.p50_delta_ms !== null) {
      const d = e.comparison.p50_delta_ms;
      const label = `Δp50 ${d >= 0 ? "+" : "−"}${msOrDash(Math.abs(d))} · ${e.comparison.verdict_label}`;
      // Drawn over the nodes, just before the arrow's head, on a halo.
      deltas.push(s("text", { x: x2 - 8, y: y2 + 16, "text-anchor": "end", class: "edge-delta " + e.comparison.verdict, "data-edge": e.client + "->" + e.server }, label));
    }
  }
  for (const n of nodes.values()) {
    const failing = n.calls && n.errors / n.calls > 0.05;
    const g = s("g", { class: "node" + (n.virtual ? " virtual" : "") + (failing ? " failing" : ""), transform: `translate(${n.x},${n.y})` });
    g.append(s("rect", { width: W, height: H, rx: n.virtual ? 14 : 4 }), s("text", { x: 8, y: 21 }, n.name.length > 24 ? n.name.slice(0, 23) + "…" : n.name), s("title", {}, `${n.name}: ${n.calls} calls in, ${n.errors} errors`));
    svg.append(g);
  }
  deltas.forEach((d) => svg.append(d));
  const compared = versions
    ? h("p", { class: "muted", "data-versions": versions.candidate }, `Edges into a service that ran both ${versions.attribute} ${versions.baseline} and ${versions.candidate} are labelled with the median's change from ${versions.baseline} to ${versions.candidate} and the verdict (the server's requests of each, over all its operations).`)
    : "";
  view.replaceChildren(h("h2", {}, "Service map"), h("p", { class: "muted" }, `${nodes.size} nodes, ${edges.length} edges; dashed edges are Kafka hops, rounded grey nodes databases and uninstrumented peers, red more than 5% errors.`), compared, svg);
}

// ---- service health and SLOs -----------------------------------------------------------------

function pct(ratio, digits) { return (ratio * 100).toFixed(digits === undefined ? 2 : digits) + "%"; }
function msOrDash(v) { return v === null || v === undefined ? "—" : v.toFixed(v < 10 ? 2 : 1) + " ms"; }
function statusBadge(status) { return status ? h("span", { class: "badge status " + status }, status) : h("span", { class: "badge" }, "no SLO"); }
function clock(unixMs) { return new Date(unixMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }
function day(unixMs) { return new Date(unixMs).toLocaleDateString([], { month: "short", day: "numeric" }); }

async function servicesView() {
  const [services, slos] = await Promise.all([api("/api/v1/services"), api("/api/v1/slos")]);
  const overview = h("h2", {}, "Service health");
  if (!services.length) { view.replaceChildren(overview, h("p", { class: "muted" }, "No requests stored yet (figures arrive as the analyzer closes each window).")); return; }
  const bySlo = new Map(slos.map((s) => [s.name, s]));
  view.replaceChildren(overview,
    h("p", { class: "muted" }, "Requests each service served (its server and consumer spans) over the latest 5 minutes stored, counted before sampling; status from its SLOs' burn rates."),
    h("table", { class: "services" },
      h("tr", {}, h("th", {}, "Service"), h("th", {}, "Status"), h("th", {}, "Requests/s"), h("th", {}, "Error ratio"), h("th", {}, "p50"), h("th", {}, "p90"), h("th", {}, "p99"), h("th", {}, "Apdex"), h("th", {}, "SLOs")),
      services.map((s) => h("tr", { class: "service-row", "data-service": s.service },
        h("td", {}, h("b", {}, s.service)),
        h("td", {}, statusBadge(s.status)),
        h("td", {}, s.requests_per_second.toFixed(1)),
        h("td", { class: s.error_ratio > 0.05 ? "bad" : "" }, pct(s.error_ratio)),
        h("td", {}, msOrDash(s.p50_ms)), h("td", {}, msOrDash(s.p90_ms)), h("td", {}, msOrDash(s.p99_ms)),
        h("td", {}, s.apdex === null ? "—" : [h("b", {}, s.apdex.toFixed(2)), h("span", { class: "muted" }, " T=" + s.apdex_threshold_ms + " ms")]),
        h("td", {}, s.slos.length ? s.slos.map((o) => h("div", {}, h("a", { href: "#/slos?slo=" + encodeURIComponent(o.name) }, o.name), " ", statusBadge(o.status),
          h("span", { class: "muted" }, " " + pct(Math.max(o.budget_remaining, 0), 1) + " budget left" + (bySlo.has(o.name) && bySlo.get(o.name).page_firing ? " · paging" : ""))))
          : h("span", { class: "muted" }, "—"))))));
}

// The budget left over the SLO window: 100% at its start, falling with every bad event.
function burnDownChart(slo) {
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, ...kids) => { const el = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); kids.forEach((k) => el.append(k)); return el; };
  const W = 640, H = 160, L = 44, B = 22;
  const points = slo.burn_down;
  const start = slo.period_start_unix_ms, end = start + slo.window.seconds * 1000;
  // An overspent budget is drawn down to -100% at most, so the part above zero stays readable.
  const floor = Math.max(-1, Math.min(0, ...points.map((p) => p.budget_remaining)));
  const lowest = floor < 0 ? Math.min(floor, -0.25) : 0;
  const x = (t) => L + ((t - start) / Math.max(1, end - start)) * (W - L - 8);
  const y = (v) => 8 + ((1 - Math.max(v, lowest)) / (1 - lowest)) * (H - B - 8);
  const svg = s("svg", { class: "burn-down", viewBox: `0 0 ${W} ${H}`, width: W, height: H });
  for (const v of lowest < 0 ? [1, 0.5, 0, lowest] : [1, 0.5, 0]) {
    svg.append(s("line", { x1: L, x2: W - 8, y1: y(v), y2: y(v), class: v === 0 ? "zero" : "grid" }), s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, pct(v, 0)));
  }
  const path = [[start, 1], ...points.map((p) => [p.unix_ms, p.budget_remaining])].map(([t, v], i) => (i ? "L" : "M") + x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
  svg.append(s("path", { d: path, class: "budget" + (slo.budget_remaining <= 0 ? " spent" : "") }));
  svg.append(s("text", { x: L, y: H - 6 }, day(start)), s("text", { x: W - 8, y: H - 6, "text-anchor": "end" }, day(end)));
  return svg;
}

async function slosView(query) {
  const slos = await api("/api/v1/slos");
  const title = h("h2", {}, "SLOs");
  if (!slos.length) { view.replaceChildren(title, h("p", { class: "muted" }, "No SLOs are defined: add them under slos: in topology.yaml (docs/slos.md).")); return; }
  const only = query.get("slo");
  const cards = slos.filter((o) => !only || o.name === only).map((o) => {
    const windowName = o.window.rolling ? "rolling " + o.window.rolling : "calendar month";
    const sli = [o.sli.availability ? "not an error" : "", o.sli.latency_ms !== null ? "at most " + o.sli.latency_ms + " ms" : ""].filter(Boolean).join(" and ");
    const burn = (w) => { const r = o.error_ratios.find((e) => e.window === w); return r ? r.burn_rate.toFixed(1) + "×" : "—"; };
    const exhausted = o.budget_remaining <= 0 ? "spent" : o.budget_exhausted_unix_ms ? "runs out " + when(o.budget_exhausted_unix_ms * 1000) + " at the last hour's rate" : "not running out at the last hour's rate";
    return h("div", { class: "card slo", "data-slo": o.name },
      h("div", { class: "slo-head" }, h("b", {}, o.name), " ", h("span", { class: "muted" }, o.service), " ", statusBadge(o.status),
        o.page_firing ? h("span", { class: "badge firing" }, "page firing") : "", o.ticket_firing ? h("span", { class: "badge firing" }, "ticket firing") : ""),
      o.description ? h("p", { class: "muted" }, o.description) : "",
      h("div", { class: "slo-figures" },
        h("div", {}, h("span", { class: "muted" }, "objective"), h("b", {}, pct(o.objective, 3)), h("span", { class: "muted" }, windowName + ", good = " + sli)),
        h("div", {}, h("span", { class: "muted" }, "attained"), h("b", {}, o.attainment === null ? "—" : pct(o.attainment, 3)), h("span", { class: "muted" }, `${o.events.good} good of ${o.events.total} events`)),
        h("div", {}, h("span", { class: "muted" }, "error budget left"), h("b", { class: o.budget_remaining <= 0 ? "bad" : "" }, pct(o.budget_remaining, 1)), h("span", { class: "muted" }, exhausted)),
        h("div", {}, h("span", { class: "muted" }, "burn rate 5m · 1h · 6h · 3d"), h("b", {}, [burn("5m"), burn("1h"), burn("6h"), burn("3d")].join(" · ")), h("span", { class: "muted" }, "1× spends the budget exactly over the window"))),
      h("table", { class: "burn-alerts" },
        h("tr", {}, h("th", {}, "Alert"), h("th", {}, "Windows"), h("th", {}, "Threshold"), h("th", {}, "Long"), h("th", {}, "Short"), h("th", {}, "")),
        o.alerts.flatMap((a) => a.windows.map((w) => h("tr", {}, h("td", {}, a.severity), h("td", {}, w.long + " and " + w.short), h("td", {}, w.burn_rate_threshold + "×"),
          h("td", {}, w.long_burn_rate.toFixed(1) + "×"), h("td", {}, w.short_burn_rate.toFixed(1) + "×"), h("td", {}, w.exceeded ? h("span", { class: "badge firing" }, "exceeded") : h("span", { class: "muted" }, "within")))))),
      h("h4", {}, "Error budget over the window"), burnDownChart(o),
      o.exemplar_trace_ids.length ? h("div", {}, h("span", { class: "muted" }, "traces of bad events: "), o.exemplar_trace_ids.map((id) => [traceLink(id), " "])) : "");
  });
  view.replaceChildren(title, h("p", { class: "muted" }, "Good and total events counted from every trace before sampling; burn rate is the error ratio over the budget."), ...cards);
}

// ---- business transactions and funnels -------------------------------------------------------

function num(v, digits) { return v === null || v === undefined ? "—" : v.toLocaleString([], { minimumFractionDigits: digits, maximumFractionDigits: digits }); }
function figure(label, value, note, cls) { return h("div", {}, h("span", { class: "muted" }, label), h("b", { class: cls || "" }, value), h("span", { class: "muted" }, note || "")); }

function transactionCard(t) {
  const metrics = t.metrics.map((m) => h("tr", { class: "metric-row", "data-metric": m.name },
    h("td", {}, h("b", {}, m.name), h("span", { class: "muted" }, " " + m.attribute)), h("td", {}, num(m.count, 0)), h("td", {}, h("b", {}, num(m.sum, 2))),
    h("td", {}, num(m.avg, 2)), h("td", {}, num(m.min, 2) + " – " + num(m.max, 2)), h("td", {}, num(m.p50, 2) + " · " + num(m.p90, 2) + " · " + num(m.p99, 2))));
  const counts = t.counts_by.map((c) => h("div", { class: "counts" }, h("h4", {}, "By " + c.attribute),
    h("table", {}, c.values.map((v) => h("tr", { class: "value-row", "data-value": v.value },
      h("td", { style: "width:20%" }, h("b", {}, v.value)), h("td", { style: "width:50%" }, h("div", { class: "bar", style: `width:${(v.share * 100).toFixed(1)}%` })),
      h("td", {}, num(v.count, 0)), h("td", { class: "muted" }, pct(v.share, 1)))))));
  const splits = t.splits.length ? h("div", {}, h("h4", {}, "By split"), h("table", {},
    h("tr", {}, h("th", {}, "Value"), h("th", {}, "Count"), h("th", {}, "Failed"), h("th", {}, "p50"), h("th", {}, "p99")),
    t.splits.map((s) => h("tr", { class: "split-row", "data-split": s.value }, h("td", {}, h("b", {}, s.value || "(none)")), h("td", {}, num(s.count, 0)), h("td", {}, num(s.errors, 0)), h("td", {}, msOrDash(s.p50_ms)), h("td", {}, msOrDash(s.p99_ms)))))) : "";
  const steps = t.steps.length ? h("div", {}, h("h4", {}, "Steps"), h("table", {},
    h("tr", {}, h("th", {}, "Step"), h("th", {}, "Present"), h("th", {}, "Failed"), h("th", {}, "Mean"), h("th", {}, "p50"), h("th", {}, "p99")),
    t.steps.map((s) => h("tr", { class: "step-row", "data-step": s.name }, h("td", {}, h("b", {}, s.name)),
      h("td", {}, num(s.count, 0) + " (" + (s.presence === null ? "—" : pct(s.presence, 1)) + ")"),
      h("td", { class: s.failure_ratio > 0.05 ? "bad" : "" }, num(s.errors, 0) + " (" + (s.failure_ratio === null ? "—" : pct(s.failure_ratio, 2)) + ")"),
      h("td", {}, msOrDash(s.avg_ms)), h("td", {}, msOrDash(s.p50_ms)), h("td", {}, msOrDash(s.p99_ms)))))) : "";
  return h("div", { class: "card transaction", "data-transaction": t.name },
    h("div", { class: "slo-head" }, h("b", {}, t.name), " ", t.description ? h("span", { class: "muted" }, t.description) : ""),
    h("div", { class: "slo-figures" },
      figure("volume", num(t.count, 0), t.per_second.toFixed(2) + " per second"),
      figure("failed", pct(t.error_ratio), num(t.errors, 0) + " entries failed", t.error_ratio > 0.05 ? "bad" : ""),
      figure("latency p50 · p90 · p99", msOrDash(t.p50_ms) + " · " + msOrDash(t.p90_ms) + " · " + msOrDash(t.p99_ms), "mean " + msOrDash(t.avg_ms)),
      figure("traced end to end", t.coverage === null ? "—" : pct(t.coverage, 1), num(t.complete, 0) + " of " + num(t.count, 0) + " with every step")),
    metrics.length ? h("table", { class: "metrics" }, h("tr", {}, h("th", {}, "Metric"), h("th", {}, "Count"), h("th", {}, "Sum"), h("th", {}, "Average"), h("th", {}, "Min – max"), h("th", {}, "p50 · p90 · p99")), metrics) : "",
    h("div", { class: "transaction-parts" }, counts, splits), steps);
}

function funnelCard(f) {
  const first = f.steps.length ? Math.max(f.steps[0].reached, 1) : 1;
  return h("div", { class: "card funnel", "data-funnel": f.name },
    h("div", { class: "slo-head" }, h("b", {}, f.name), " ", h("span", { class: "muted" }, (f.description ? f.description + " · " : "") + "joined on " + f.correlation)),
    h("p", { class: "muted" }, `${num(f.journeys, 0)} journeys closed, ${num(f.complete, 0)} through every step`,
      h("span", { class: "muted" }, ` (those that began by ${clock(f.settled_before_unix_ms)}: a journey that stops short closes ${f.join_window_seconds} s after its first step)`)),
    h("table", {},
      h("tr", {}, h("th", {}, "Step"), h("th", {}, "Reached"), h("th", {}, ""), h("th", {}, "Conversion"), h("th", {}, "From the step before"), h("th", {}, "Time from the step before (median · p90)")),
      f.steps.map((s, i) => h("tr", { class: "funnel-step", "data-step": s.name },
        h("td", {}, h("b", {}, (i + 1) + ". " + s.name)), h("td", {}, num(s.reached, 0)),
        h("td", { style: "width:30%" }, h("div", { class: "bar funnel-bar", style: `width:${(100 * s.reached / first).toFixed(1)}%` })),
        h("td", {}, s.conversion === null ? "—" : pct(s.conversion, 1)),
        h("td", {}, s.from_previous === null || s.from_previous === undefined ? "—" : pct(s.from_previous, 1)),
        h("td", {}, s.median_seconds === null ? "—" : s.median_seconds.toFixed(2) + " s · " + s.p90_seconds.toFixed(2) + " s")))));
}

async function transactionsView() {
  const windowUs = Number(lookback.value);
  const hours = lookback.options[lookback.selectedIndex].text;
  const body = await apiBody(`/api/v1/transactions?window=${windowUs}us`);
  const title = h("h2", {}, "Business transactions");
  if (!body.data.length && !body.funnels.length) { view.replaceChildren(title, h("p", { class: "muted" }, "No transactions or funnels are defined: add them under transactions: and funnels: in topology.yaml (docs/transactions.md).")); return; }
  view.replaceChildren(title,
    h("p", { class: "muted" }, "Counted from every trace before sampling, over the latest " + hours + " stored (" + clock(body.from_unix_ms) + " – " + clock(body.to_unix_ms) + ")."),
    ...body.data.map(transactionCard),
    body.funnels.length ? h("h2", {}, "Funnels") : "",
    ...body.funnels.map(funnelCard));
}

// ---- alerts, bottlenecks, errors -------------------------------------------------------------

async function alertsView(query) {
  const state = query.get("state") || "all";
  const { start, end } = range();
  const alerts = await api(`/api/v1/alerts?state=${state}&start=${start}&end=${end}`);
  const select = h("select", { onchange: (e) => { location.hash = "#/alerts?state=" + e.target.value; } }, ["all", "open", "firing", "resolved"].map((s) => h("option", { value: s, selected: s === state }, s)));
  const exemplars = (a) => ((a.details && a.details.exemplar_trace_ids) || []).slice(0, 3).map((id) => [traceLink(id), " "]);
  view.replaceChildren(h("h2", {}, "Alerts"), h("div", { class: "card" }, "Show ", select),
    alerts.length ? h("table", {},
      h("tr", {}, h("th", {}, "State"), h("th", {}, "Kind"), h("th", {}, "Severity"), h("th", {}, "Summary"), h("th", {}, "Opened"), h("th", {}, "Last event"), h("th", {}, "Exemplars")),
      alerts.map((a) => h("tr", { class: "alert-row" }, h("td", {}, h("span", { class: "badge " + a.state }, a.state)), h("td", {}, a.kind), h("td", {}, a.severity), h("td", {}, a.summary), h("td", { class: "muted" }, when(a.opened_unix_ms * 1000)), h("td", { class: "muted" }, when(a.event_unix_ms * 1000)), h("td", {}, exemplars(a)))))
      : h("p", { class: "muted" }, "No alerts in this range."));
}

async function bottlenecksView() {
  const { start, end } = range();
  const endpoints = await api(`/api/v1/bottlenecks?start=${start}&end=${end}&limit=20`);
  view.replaceChildren(h("h2", {}, "Bottlenecks"), h("p", { class: "muted" }, "Per endpoint, where its time goes on the critical path (self time, summed over traces)."),
    ...(endpoints.length ? endpoints.map((e) => h("div", { class: "card endpoint" },
      h("div", {}, h("b", {}, e.service + ": " + e.operation), h("span", { class: "muted" }, ` · ${e.traces} traces · mean ${e.mean_ms.toFixed(1)} ms`)),
      h("table", {}, e.contributors.slice(0, 8).map((c) => h("tr", {},
        h("td", { style: "width:35%" }, h("b", {}, c.service), " ", c.operation),
        h("td", { style: "width:45%" }, h("div", { class: "bar", style: `width:${(c.share * 100).toFixed(1)}%` })),
        h("td", {}, (c.share * 100).toFixed(1) + "%"),
        h("td", { class: "muted" }, c.mean_ms.toFixed(2) + " ms/trace"))))))
      : [h("p", { class: "muted" }, "No bottleneck rollups in this range yet (they are written once a window closes).")]));
}

async function errorsView() {
  const { start, end } = range();
  const groups = await api(`/api/v1/errors?start=${start}&end=${end}`);
  view.replaceChildren(h("h2", {}, "Error groups"),
    groups.length ? h("table", {},
      h("tr", {}, h("th", {}, "Count"), h("th", {}, "Where"), h("th", {}, "Exception"), h("th", {}, "Message"), h("th", {}, "Exemplars")),
      groups.map((g) => h("tr", {}, h("td", {}, h("b", {}, g.count)), h("td", {}, h("b", {}, g.service), " ", g.operation), h("td", {}, g.exception_type || "—"), h("td", {}, g.message), h("td", {}, g.exemplar_trace_ids.slice(0, 3).map((id) => [traceLink(id), " "])))))
      : h("p", { class: "muted" }, "No errors in this range."));
}


// ---- trends and comparisons ------------------------------------------------------------------

const svgNs = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) { const el = document.createElementNS(svgNs, tag); for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); kids.forEach((k) => el.append(k)); return el; }

function niceMax(v) { if (v <= 0) return 1; const p = Math.pow(10, Math.floor(Math.log10(v))); return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v); }

// A time-series chart: `series` is [{name, cls, points: [[t_ms, value]]}], drawn as lines on one axis.
// `markers` ([{t_ms, label}]) are drawn as dashed vertical lines: change points; `band`
// ([[t_ms, point, lower, upper]]) as a forecast with its interval, past `endMs`.
function lineChart(title, series, format, startMs, endMs, markers, band) {
  const W = 640, H = 170, L = 64, B = 22, T = 10;
  band = band || [];
  if (band.length) endMs = Math.max(endMs, band[band.length - 1][0]);
  const values = series.flatMap((s) => s.points.map((p) => p[1])).concat(band.map((b) => b[3])).filter((v) => v !== null);
  const top = niceMax(Math.max(0, ...values));
  const x = (t) => L + ((t - startMs) / Math.max(1, endMs - startMs)) * (W - L - 8);
  const y = (v) => T + (1 - v / top) * (H - B - T);
  const chart = svg("svg", { class: "line-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title });
  for (const v of [0, top / 2, top]) chart.append(svg("line", { x1: L, x2: W - 8, y1: y(v), y2: y(v), class: "grid" }), svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  for (const t of [startMs, (startMs + endMs) / 2, endMs]) chart.append(svg("text", { x: x(t), y: H - 6, "text-anchor": t === startMs ? "start" : t === endMs ? "end" : "middle" }, clock(t)));
  for (const s of series) {
    const pts = s.points.filter((p) => p[1] !== null);
    if (!pts.length) continue;
    chart.append(svg("path", { d: pts.map(([t, v], i) => (i ? "L" : "M") + x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" "), class: "series " + s.cls }));
    // Points as dots too, so a lone one (a single bucket) shows.
    if (pts.length <= 120) pts.forEach(([t, v]) => chart.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: "dot " + s.cls })));
  }
  if (band.length) {
    const upper = band.map((b) => x(b[0]).toFixed(1) + "," + y(b[3]).toFixed(1));
    const lower = band.slice().reverse().map((b) => x(b[0]).toFixed(1) + "," + y(Math.max(0, b[2])).toFixed(1));
    chart.append(svg("polygon", { points: upper.concat(lower).join(" "), class: "forecast-band" }),
      svg("path", { d: band.map((b, i) => (i ? "L" : "M") + x(b[0]).toFixed(1) + "," + y(b[1]).toFixed(1)).join(" "), class: "series forecast" }));
  }
  for (const m of markers || []) {
    chart.append(svg("line", { x1: x(m.t_ms), x2: x(m.t_ms), y1: T, y2: H - B, class: "marker" }), svg("text", { x: x(m.t_ms) + 3, y: T + 10, class: "marker-label" }, m.label));
  }
  const legend = h("div", { class: "legend" }, series.map((s) => h("span", { class: "key " + s.cls }, s.name)));
  return h("div", { class: "chart", "data-chart": title }, h("h4", {}, title), legend, chart);
}

// Two latency distributions overlaid on a logarithmic axis: the share of requests per bucket.
function distributionChart(baselineName, candidateName, distributions) {
  const W = 640, H = 180, L = 44, B = 22, T = 10;
  const all = [...distributions.baseline, ...distributions.candidate];
  if (!all.length) return h("p", { class: "muted" }, "No requests to draw.");
  const lo = Math.log10(Math.max(0.001, Math.min(...all.map((b) => b[0])))), hi = Math.log10(Math.max(...all.map((b) => b[0])) * 1.05);
  // Shares are summed into 60 bins on the log axis so the two sides are drawn alike.
  const bins = 60, width = (hi - lo) / bins || 1;
  const binned = (d) => { const out = new Array(bins).fill(0); d.forEach(([v, share]) => { out[Math.min(bins - 1, Math.max(0, Math.floor((Math.log10(Math.max(v, 0.001)) - lo) / width)))] += share; }); return out; };
  const a = binned(distributions.baseline), b = binned(distributions.candidate);
  const top = niceMax(Math.max(...a, ...b));
  const x = (i) => L + (i / bins) * (W - L - 8);
  const y = (v) => T + (1 - v / top) * (H - B - T);
  const chart = svg("svg", { class: "distribution-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "latency distributions" });
  for (const v of [0, top / 2, top]) chart.append(svg("line", { x1: L, x2: W - 8, y1: y(v), y2: y(v), class: "grid" }), svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, pct(v, 0)));
  for (let d = Math.ceil(lo); d <= Math.floor(hi); d++) chart.append(svg("text", { x: x((d - lo) / width), y: H - 6, "text-anchor": "middle" }, msOrDash(Math.pow(10, d))));
  const path = (bars) => "M" + x(0) + "," + y(0) + " " + bars.map((v, i) => "L" + x(i).toFixed(1) + "," + y(v).toFixed(1) + " L" + x(i + 1).toFixed(1) + "," + y(v).toFixed(1)).join(" ") + " L" + x(bins) + "," + y(0);
  chart.append(svg("path", { d: path(a), class: "area baseline" }), svg("path", { d: path(b), class: "area candidate" }));
  return h("div", { class: "chart", "data-chart": "distributions" }, h("div", { class: "legend" }, h("span", { class: "key baseline" }, baselineName), h("span", { class: "key candidate" }, candidateName)), chart);
}

function interval(i) { return i ? `${msOrDash(i.estimate)} (${i.low.toFixed(2)}–${i.high.toFixed(2)})` : "—"; }

function comparisonCard(c, baselineName, candidateName) {
  const cls = c.verdict === "worse" ? "firing" : c.verdict === "better" ? "status healthy" : "";
  const side = (name, s) => h("tr", {}, h("td", {}, name), h("td", {}, num(s.count, 0)), h("td", {}, pct(s.error_ratio)), h("td", {}, interval(s.p50_ms)), h("td", {}, interval(s.p90_ms)), h("td", {}, interval(s.p99_ms)));
  return h("div", { class: "card comparison", "data-verdict": c.verdict },
    h("div", { class: "slo-head" }, h("b", {}, `${candidateName} against ${baselineName}: `), h("span", { class: "badge verdict " + cls }, c.verdict_label)),
    h("ul", {}, c.evidence.map((e) => h("li", {}, e))),
    h("table", {}, h("tr", {}, h("th", {}, "Cohort"), h("th", {}, "Requests"), h("th", {}, "Errors"), h("th", {}, "p50"), h("th", {}, "p90"), h("th", {}, "p99")),
      side(baselineName, c.baseline), side(candidateName, c.candidate)),
    h("p", { class: "muted" }, `Quantiles with their ${pct(c.confidence, 1)} intervals; Mann-Whitney U and the Hodges-Lehmann shift for latency, a two-proportion test for errors.`),
    distributionChart(baselineName, candidateName, c.distributions));
}

async function trendsView(query) {
  const { start, end } = range();
  const operations = (await api(`/api/v1/operations?start=${start}&end=${end}`)).filter((o) => o.span_kind === "SPAN_KIND_SERVER" || o.span_kind === "SPAN_KIND_CONSUMER");
  const title = h("h2", {}, "Trends");
  if (!operations.length) { view.replaceChildren(title, h("p", { class: "muted" }, "No requests stored in this range yet.")); return; }
  const busiest = operations.slice().sort((a, b) => b.count - a.count)[0];
  const service = query.get("service") || busiest.service, operation = query.get("operation") || busiest.operation;
  const resolution = query.get("resolution") || (Number(lookback.value) > 6 * 3600e6 ? "1h" : "1m");
  const go = (s, o, r) => { location.hash = "#/trends?" + new URLSearchParams({ service: s, operation: o, resolution: r }); };
  const picker = h("select", { onchange: (e) => { const [s, o] = JSON.parse(e.target.value); go(s, o, resolution); } },
    operations.map((o) => h("option", { value: JSON.stringify([o.service, o.operation]), selected: o.service === service && o.operation === operation }, `${o.service} · ${o.operation}`)));
  const resolutions = h("select", { onchange: (e) => go(service, operation, e.target.value) }, ["1m", "5m", "1h", "1d"].map((r) => h("option", { value: r, selected: r === resolution }, r)));
  const subject = new URLSearchParams({ service, operation, start, end });
  const [series, cohorts, latencyChanges, errorChanges] = await Promise.all([
    api(`/api/v1/series?${subject}&resolution=${resolution}`),
    api(`/api/v1/cohorts?${subject}`),
    api(`/api/v1/changepoints?${subject}&resolution=${resolution}&metric=p99`),
    api(`/api/v1/changepoints?${subject}&resolution=${resolution}&metric=error_ratio`),
  ]);
  const changes = [...latencyChanges.changepoints, ...errorChanges.changepoints];
  // The p99 forecast a quarter of the range ahead; a short history has none.
  const horizonMs = Math.max(60000, Math.round((end - start) / 4000 / 60000) * 60000);
  const forecast = await api(`/api/v1/forecast?${subject}&resolution=${resolution}&metric=p99&horizon=${horizonMs / 1000}s`).catch((error) => ({ error: error.message }));
  const marker = (c) => ({ t_ms: c.t_ms, label: (c.change >= 0 ? "+" : "") + (c.change * 100).toFixed(0) + "%" });
  const points = series.points, s0 = series.start_ms, s1 = series.end_ms;
  const charts = h("div", { class: "charts" },
    lineChart("Requests per second", [{ name: "rate", cls: "rate", points: points.map((p) => [p.t_ms, p.rate_per_s]) }], (v) => v.toFixed(v < 10 ? 1 : 0), s0, s1),
    lineChart("Error ratio", [{ name: "errors", cls: "errors", points: points.map((p) => [p.t_ms, p.error_ratio]) }], (v) => pct(v, v < 0.01 ? 2 : 1), s0, s1, errorChanges.changepoints.map(marker)),
    lineChart("Latency", [["p50", "p50"], ["p90", "p90"], ["p99", "p99"]].map(([name, cls]) => ({ name, cls, points: points.map((p) => [p.t_ms, p[name + "_ms"]]) })), (v) => (v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s" : msOrDash(v)), s0, s1, latencyChanges.changepoints.map(marker), forecast.forecast));
  const forecastNote = forecast.error
    ? h("p", { class: "muted", "data-forecast": "none" }, "No p99 forecast: " + forecast.error)
    : h("p", { class: "muted", "data-forecast": forecast.model }, `p99 forecast (dashed, with its ${pct(forecast.level, 0)} interval): ${forecast.model}` +
      (forecast.backtest ? `; backtest on the last ${forecast.backtest.held_back} points: sMAPE ${pct(forecast.backtest.smape, 1)}, ${pct(forecast.backtest.coverage, 0)} inside the interval` + (forecast.backtest.mase !== null ? `, MASE ${forecast.backtest.mase.toFixed(2)}` : "") : ""));
  // Change points in words, with the local time.
  const changeList = changes.length
    ? h("ul", { class: "changepoints" }, changes.map((c) => h("li", { "data-changepoint": c.t_ms },
      `${latencyChanges.changepoints.includes(c) ? "p99" : "error ratio"} ${c.change >= 0 ? "rose" : "fell"} ${Math.abs(c.change * 100).toFixed(0)}% at ${clock(c.t_ms)}`,
      c.changed.length ? ", when " + c.changed.map((w) => w.appeared ? `${w.attribute} ${w.value} appeared` : `${w.attribute} ${w.value} went from ${pct(w.share_before, 0)} to ${pct(w.share_after, 0)} of requests`).join(" and ") : "")))
    : h("p", { class: "muted" }, "No change points in this range.");

  // The cohorts of this operation: each attribute with two or more values is compared, the
  // incumbent as the baseline.
  const byAttribute = {};
  cohorts.filter((c) => c.operation === operation).forEach((c) => { (byAttribute[c.attribute] = byAttribute[c.attribute] || []).push(c); });
  const comparisons = [];
  for (const [attribute, values] of Object.entries(byAttribute)) {
    if (values.length < 2) continue;
    // The incumbent (the value seen first; the busier one of those seen together) is the baseline.
    values.sort((a, b) => (a.first_window_ms - b.first_window_ms) || (b.count - a.count));
    for (const candidate of values.slice(1, 4)) {
      const params = new URLSearchParams({ service, operation, attribute, baseline: values[0].value, candidate: candidate.value, start, end });
      comparisons.push(api(`/api/v1/compare?${params}`).then((c) => comparisonCard(c, `${attribute}=${values[0].value}`, `${attribute}=${candidate.value}`)));
    }
  }
  const cards = await Promise.all(comparisons);
  const canaries = await api("/api/v1/canaries");
  const canaryRows = canaries.map((c) => h("tr", { "data-canary": c.service + " " + c.operation },
    h("td", {}, h("a", { href: "#/trends?" + new URLSearchParams({ service: c.service, operation: c.operation, resolution }) }, `${c.service} · ${c.operation}`)),
    h("td", {}, `${c.attribute}=${c.candidate} against ${c.baseline}`),
    h("td", {}, h("span", { class: "badge verdict " + (c.verdict === "worse" ? "firing" : "") }, c.decided ? c.verdict_label : c.verdict_label + " yet")),
    h("td", {}, `evaluation ${c.evaluation} of ${c.evaluations}`),
    h("td", {}, c.comparison.evidence[0] || "")));
  const canaryCard = canaries.length
    ? h("div", { class: "card" }, h("h3", {}, "Canaries"), h("table", {}, h("tr", {}, h("th", {}, "Operation"), h("th", {}, "Version"), h("th", {}, "Verdict"), h("th", {}, "Schedule"), h("th", {}, "Evidence")), canaryRows))
    : "";
  view.replaceChildren(title, canaryCard, h("div", { class: "controls" }, picker, " at ", resolutions),
    h("p", { class: "muted" }, `${service} · ${operation}: every request counted before sampling, merged from the stored histograms.`), charts,
    forecastNote,
    h("h3", {}, "Change points"), changeList,
    h("h3", {}, "Cohorts compared"),
    ...(cards.length ? cards : [h("p", { class: "muted" }, "Every request of this operation carried one value of each cohort attribute (service.version, deployment.environment.name, feature flags): nothing to compare.")]));
}

// ---- routing ---------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.slice(1) || "/search";
  const [path, queryText] = hash.split("?");
  const query = new URLSearchParams(queryText || "");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === (parts[0] === "trace" || parts[0] === "compare" ? "search" : parts[0])));
  try {
    switch (parts[0]) {
      case "trace": await traceView(parts[1]); break;
      case "compare": await compareView(query); break;
      case "services": await servicesView(); break;
      case "slos": await slosView(query); break;
      case "transactions": await transactionsView(); break;
      case "trends": await trendsView(query); break;
      case "map": await mapView(query); break;
      case "alerts": await alertsView(query); break;
      case "bottlenecks": await bottlenecksView(); break;
      case "errors": await errorsView(); break;
      default: await searchView(query);
    }
    document.body.dataset.ready = parts[0] || "search";
  } catch (error) { fail(error); }
}

lookback.addEventListener("change", route);
window.addEventListener("hashchange", route);
route();
