// tracepipe's UI: plain JavaScript over the query API, one view per hash route
// (#/search, #/trace/ID, #/services, #/slos, #/transactions, #/map, #/alerts, #/bottlenecks, #/errors).
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
        errors ? [" · ", h("span", { class: "badge error" }, errors + " error span" + (errors > 1 ? "s" : ""))] : "")),
    h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:var(--critical)" }), "critical path"), h("span", {}, h("i", { style: "background:var(--error)" }), "error"), h("span", {}, h("i", { style: "background:#9fb4dc" }), "other spans"), h("span", {}, "click a span for its tags and events")),
    h("div", { class: "waterfall", id: "waterfall" }, rows));
}

// ---- service map -----------------------------------------------------------------------------

async function mapView() {
  const { start, end } = range();
  const edges = await api(`/api/v1/edges?start=${start}&end=${end}`);
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
  for (const e of edges) {
    const a = nodes.get(e.client), b = nodes.get(e.server);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const cls = "edge" + (e.errors / Math.max(1, e.calls) > 0.05 ? " failing" : "") + (e.connection_type === "messaging_system" ? " messaging" : "");
    const path = s("path", { class: cls, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)", "stroke-width": String(1 + Math.min(4, Math.log10(1 + e.calls))) });
    path.append(s("title", {}, `${e.client} → ${e.server}${e.connection_type ? " (" + e.connection_type + ")" : ""}: ${e.calls} calls, ${e.errors} errors, p99 ${e.client_p99_ms ?? e.server_p99_ms ?? "?"} ms`));
    svg.append(path);
  }
  for (const n of nodes.values()) {
    const failing = n.calls && n.errors / n.calls > 0.05;
    const g = s("g", { class: "node" + (n.virtual ? " virtual" : "") + (failing ? " failing" : ""), transform: `translate(${n.x},${n.y})` });
    g.append(s("rect", { width: W, height: H, rx: n.virtual ? 14 : 4 }), s("text", { x: 8, y: 21 }, n.name.length > 24 ? n.name.slice(0, 23) + "…" : n.name), s("title", {}, `${n.name}: ${n.calls} calls in, ${n.errors} errors`));
    svg.append(g);
  }
  view.replaceChildren(h("h2", {}, "Service map"), h("p", { class: "muted" }, `${nodes.size} nodes, ${edges.length} edges; dashed edges are Kafka hops, rounded grey nodes databases and uninstrumented peers, red more than 5% errors.`), svg);
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

// ---- routing ---------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.slice(1) || "/search";
  const [path, queryText] = hash.split("?");
  const query = new URLSearchParams(queryText || "");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === (parts[0] === "trace" ? "search" : parts[0])));
  try {
    switch (parts[0]) {
      case "trace": await traceView(parts[1]); break;
      case "services": await servicesView(); break;
      case "slos": await slosView(query); break;
      case "transactions": await transactionsView(); break;
      case "map": await mapView(); break;
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
