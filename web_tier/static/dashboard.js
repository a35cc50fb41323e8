// Live dashboard: polls /api/metrics?since=<last t> and appends the new points to uPlot charts.
// The server samples once a second for every browser; this page only reads its ring buffer.
(function () {
  "use strict";
  const body = document.body;
  const METRICS_URL = body.dataset.metricsUrl;
  const POLL_MS = Number(body.dataset.pollMs) || 1000;
  const KEEP_S = Number(body.dataset.windowS) || 600;
  const C = { blue: "#2563eb", amber: "#d97706", green: "#16a34a", red: "#dc2626", violet: "#7c3aed", grey: "#94a3b8" };

  const CHARTS = [
    { el: "chart-backlog", unit: "messages", series: [
      { key: "req_visible", label: "visible", color: C.blue, fill: "rgba(37,99,235,.12)" },
      { key: "req_in_flight", label: "in flight", color: C.amber, fill: "rgba(217,119,6,.10)" }] },
    { el: "chart-instances", unit: "instances", series: [
      { key: "inst_running", label: "running", color: C.green, fill: "rgba(22,163,74,.10)" },
      { key: "inst_pending", label: "pending", color: C.blue },
      { key: "inst_stopping", label: "stopping", color: C.amber },
      { key: "inst_stopped", label: "stopped", color: C.grey },
      { key: "desired", label: "desired", color: "#1c2430", dash: [6, 4], width: 1.5 },
      { key: "launch_refusals", label: "launches refused (30 s)", color: C.red, dash: [2, 3] }] },
    { el: "chart-rate", unit: "images/s", series: [
      { key: "images_per_s", label: "images/s", color: C.violet, fill: "rgba(124,58,237,.12)" }] },
    { el: "chart-latency", unit: "ms", series: [
      { key: "latency_p50_ms", label: "p50", color: C.blue },
      { key: "latency_p95_ms", label: "p95", color: C.red }] },
    { el: "chart-resp", unit: "messages", series: [
      { key: "resp_visible", label: "waiting", color: C.green, fill: "rgba(22,163,74,.10)" }] },
    { el: "chart-errors", unit: "count", series: [
      { key: "errors_per_s", label: "errors/s", color: C.red },
      { key: "dlq_visible", label: "dead letters", color: C.grey, fill: "rgba(148,163,184,.15)" }] },
  ];

  const state = { cols: null, lastT: null, latest: null, viewS: 300, failures: 0, charts: [] };
  window.imgrecDashboard = state; // read by tests and handy in the console

  function makeChart(spec) {
    const el = document.getElementById(spec.el);
    const opts = {
      width: Math.max(el.clientWidth, 280), height: 220,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { stroke: "#6b7686", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e3e7ee" } },
        { stroke: "#6b7686", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e3e7ee" }, size: 48,
          label: spec.unit, labelSize: 18, labelFont: "12px system-ui, sans-serif" },
      ],
      series: [{}].concat(spec.series.map((s) => ({
        label: s.label, stroke: s.color, width: s.width || 2, fill: s.fill, dash: s.dash,
        points: { show: false }, spanGaps: false,
        value: (u, v) => (v == null ? "–" : fmt(v)),
      }))),
    };
    const chart = new uPlot(opts, emptyData(spec), el);
    new ResizeObserver(() => chart.setSize({ width: Math.max(el.clientWidth, 280), height: 220 })).observe(el);
    return { spec, chart };
  }

  function emptyData(spec) { return [[]].concat(spec.series.map(() => [])); }

  function fmt(v) {
    if (v == null || Number.isNaN(v)) return "–";
    if (Math.abs(v) >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return v.toFixed(Math.abs(v) >= 10 ? 1 : 2);
  }

  function append(series) {
    if (!state.cols) { state.cols = series; return; }
    for (const k of Object.keys(series)) (state.cols[k] = state.cols[k] || []).push(...series[k]);
    const t = state.cols.t;
    const cutoff = t.length ? t[t.length - 1] - KEEP_S : 0;
    let drop = 0;
    while (drop < t.length && t[drop] < cutoff) drop++;
    if (drop) for (const k of Object.keys(state.cols)) state.cols[k].splice(0, drop);
  }

  function redraw() {
    const t = state.cols ? state.cols.t : [];
    let start = 0;
    const from = t.length ? t[t.length - 1] - state.viewS : 0;
    while (start < t.length && t[start] < from) start++;
    for (const { spec, chart } of state.charts) {
      const data = [t.slice(start)].concat(spec.series.map((s) => (state.cols[s.key] || []).slice(start)));
      chart.setData(data);
      // Not hovering: the legend shows the newest values instead of dashes.
      if (chart.cursor.idx == null && data[0].length) chart.setLegend({ idx: data[0].length - 1 });
    }
    body.dataset.points = String(t.length);
  }

  function text(id, v) { const el = document.getElementById(id); if (el) el.textContent = v; }

  function showLatest(latest) {
    const v = latest.values;
    const has = (k) => v[k] != null;
    text("cur-backlog", has("req_visible") ? fmt(v.req_visible + v.req_in_flight) : "–");
    text("cur-visible", fmt(v.req_visible));
    text("cur-inflight", fmt(v.req_in_flight));
    text("cur-resp", fmt(v.resp_visible));
    text("cur-running", fmt(v.inst_running));
    text("cur-pending", fmt(v.inst_pending));
    text("cur-stopping", fmt(v.inst_stopping));
    text("cur-desired", fmt(v.desired));
    const refused = v.launch_refusals || 0;
    text("cur-refusals", refused ? ` · ${fmt(refused)} launches refused (capacity or throttling): backing off` : "");
    document.getElementById("cur-refusals")?.classList.toggle("warn", refused > 0);
    text("cur-rate", fmt(v.images_per_s));
    text("cur-latency", has("latency_p50_ms") ? `${fmt(v.latency_p50_ms)} / ${fmt(v.latency_p95_ms)}` : "–");
    text("latency-mode", latest.latency_mode === "approx" ? "(approx.: emulator has no percentiles)" : "");
    text("cur-errors", fmt(v.dlq_visible));
    text("cur-errrate", fmt(v.errors_per_s));
    text("cur-dlq", fmt(v.dlq_visible));
    showErrors(latest.errors || {});
    showInstances(latest.instances || [], !!(latest.errors || {}).ec2);
  }

  function showErrors(errors) {
    const box = document.getElementById("source-errors");
    box.replaceChildren(...Object.entries(errors).map(([source, msg]) => {
      const b = document.createElement("span");
      b.className = "badge badge-error";
      b.dataset.source = source;
      b.title = msg;
      b.textContent = `${source}: ${msg}`;
      return b;
    }));
  }

  function uptime(s) {
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  function showInstances(rows, failed) {
    const tbody = document.querySelector("#instances tbody");
    text("instance-count", failed ? "(EC2 unavailable: last known)" : `(${rows.length})`);
    if (failed) return;
    if (!rows.length) {
      tbody.innerHTML = '<tr class="empty"><td colspan="5">no app-tier instances</td></tr>';
      return;
    }
    tbody.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.instanceId = r.id;
      const cells = [r.id, r.name, null, uptime(r.uptime_s), r.images_done == null ? "–" : String(r.images_done)];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        if (i === 2) {
          const s = document.createElement("span");
          s.className = `state state-${r.state}`;
          s.textContent = r.state;
          td.appendChild(s);
          if (r.health) {  // e.g. an OOM kill or a failed boot, reported by the local runner
            const h = document.createElement("span");
            h.className = "health";
            h.textContent = ` ${r.health}`;
            td.appendChild(h);
          }
        } else td.textContent = c;
        if (i >= 3) td.className = "num";
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  function setConn(cls, label) {
    const el = document.getElementById("conn");
    el.className = `badge ${cls}`;
    el.textContent = label;
  }

  async function poll() {
    const url = state.lastT == null ? METRICS_URL : `${METRICS_URL}?since=${state.lastT}`;
    try {
      const resp = await fetch(url, { cache: "no-store" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const data = await resp.json();
      const t = data.series.t;
      if (t.length) {
        append(data.series);
        state.lastT = t[t.length - 1];
        redraw();
      }
      if (data.latest) { state.latest = data.latest; showLatest(data.latest); }
      state.failures = 0;
      setConn(data.latest && Object.keys(data.latest.errors).length ? "badge-down" : "badge-live",
        data.latest && Object.keys(data.latest.errors).length ? "degraded" : "live");
    } catch (err) {
      state.failures += 1;
      setConn("badge-down", `disconnected (${err.message}); retrying`);
    }
    // Back off while the web tier is unreachable; never more than one request in flight.
    setTimeout(poll, POLL_MS * Math.min(10, 2 ** Math.max(0, state.failures - 1)));
  }

  document.querySelectorAll(".range button").forEach((btn) => btn.addEventListener("click", () => {
    document.querySelectorAll(".range button").forEach((b) => b.classList.toggle("on", b === btn));
    state.viewS = Number(btn.dataset.range);
    redraw();
  }));

  state.charts = CHARTS.map(makeChart);
  poll();
})();
