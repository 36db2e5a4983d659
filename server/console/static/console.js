// The Falconet web console: a live, filtered, virtualised table of alerts, with charts and losses.
// Every string that comes from an alert is put in the page with textContent (never parsed as HTML): process
// names, arguments and file paths are chosen by whoever runs them. The server's Content-Security-Policy
// forbids inline scripts as a second line of defence.
"use strict";

(function () {
  const ROW_HEIGHT = 23;          // px, .row height + border (console.css)
  const MAX_ALERTS = 50000;       // alerts the page holds; older ones are forgotten (memory stays bounded)
  const TRIM_SLACK = 5000;        // trimmed in chunks, not one alert at a time
  const MAX_LOSSES = 200;
  const STATS_EVERY_MS = 2000;
  const RETRY_MIN_MS = 250, RETRY_MAX_MS = 5000;
  const FILTER_KEYS = ["rule", "tag", "source", "host"];

  const $ = (id) => document.getElementById(id);
  const state = {
    alerts: [],            // oldest first; the table shows them newest first
    bySeq: new Set(),      // sequences held (for the duplicate check), of the current epoch
    epoch: null,
    position: null,        // EPOCH:SEQ the stream has reached; a reconnect resumes just after it
    received: 0,
    duplicates: 0,
    lost: 0,
    losses: [],
    connected: false,
    connects: 0,
    token: sessionStorage.getItem("falconet-console-token") || "",
    controller: null,
    retryMs: RETRY_MIN_MS,
    window: "hour",
    stats: null,
    dirty: true,
    selected: null,
    frames: 0,             // animation frames drawn, and the longest wait between two (a frozen page shows here)
    lastFrame: null,
    maxFrameGapMs: 0,
    anchor: 0,             // alerts added above the rows in view since the last frame (see render)
  };

  // -- filters, mirrored in the URL so that a view can be shared --------------------------------------------

  function filtersFromUrl() {
    const params = new URLSearchParams(location.search);
    $("f-priority").value = params.get("priority") || "";
    for (const key of FILTER_KEYS) $("f-" + key).value = params.getAll(key).join(", ");
    $("f-q").value = params.get("q") || "";
    const w = params.get("window");
    if (w === "day" || w === "hour") state.window = w;
  }

  function filterParams() {
    const params = new URLSearchParams();
    const priority = $("f-priority").value;
    if (priority) params.set("priority", priority);
    for (const key of FILTER_KEYS) {
      for (const v of $("f-" + key).value.split(",")) {
        if (v.trim()) params.append(key, v.trim());
      }
    }
    const q = $("f-q").value.trim();
    if (q) params.set("q", q);
    return params;
  }

  function applyFilters() {
    const params = filterParams();
    if (state.window !== "hour") params.set("window", state.window);
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
    restart();
  }

  // -- the stream (server-sent events read with fetch, so a bearer token can travel in a header) --------------

  function headers() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function setStatus(text, cls) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (cls || "");
  }

  function restart() {
    if (state.controller) state.controller.abort();
    state.alerts = [];
    state.bySeq = new Set();
    state.position = null;
    state.anchor = 0;
    state.selected = null;
    $("detail").hidden = true;
    state.dirty = true;
    connect();
  }

  async function connect() {
    const controller = new AbortController();
    state.controller = controller;
    const params = filterParams();
    if (state.position) params.set("after", state.position);
    let response;
    try {
      response = await fetch("/api/stream?" + params.toString(), {
        headers: headers(), signal: controller.signal, cache: "no-store",
      });
    } catch (err) {
      if (controller.signal.aborted) return;
      return retry(controller, "unreachable");
    }
    if (response.status === 401) {
      state.connected = false;
      setStatus("needs a token", "down");
      $("token-form").hidden = false;
      if (state.token) $("token-error").textContent = "this token was refused";
      return;
    }
    if (!response.ok) {
      let message = response.status + "";
      try { message += " " + (await response.json()).message; } catch (_) { /* not JSON */ }
      if (response.status === 400 && state.position) {
        state.position = null;  // a position this server never reached: start afresh
        return retry(controller, "refused");
      }
      state.connected = false;
      setStatus("refused: " + message, "down");
      // 400 (a filter the server cannot apply), 403 (a certificate it refuses): retrying will not help.
      if (response.status === 400 || response.status === 403) return;
      return retry(controller, "refused " + response.status);
    }
    state.connected = true;
    state.connects += 1;
    state.retryMs = RETRY_MIN_MS;
    setStatus("live", "live");
    try {
      await readEvents(response.body.getReader(), controller);
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (!controller.signal.aborted) retry(controller, "cut");
  }

  function retry(controller, why) {
    if (state.controller !== controller) return;
    state.connected = false;
    setStatus("reconnecting (" + why + ")", "down");
    const wait = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
    setTimeout(() => { if (state.controller === controller) connect(); }, wait);
  }

  async function readEvents(reader, controller) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || controller.signal.aborted) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (state.controller === controller) handleEvent(block);
      }
    }
  }

  function handleEvent(block) {
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data) return;  // a keepalive comment
    const msg = JSON.parse(data);
    if (event === "hello") onHello(msg);
    else if (event === "alerts") onAlerts(msg);
    else if (event === "loss") onLoss(msg);
    else if (event === "refused") setStatus("refused: " + msg, "down");
  }

  function onHello(msg) {
    $("source-name").textContent = msg.hostname;
    if (state.epoch !== msg.epoch) {
      state.bySeq = new Set();
      state.epoch = msg.epoch;
    }
    state.position = msg.position;
  }

  function onAlerts(msg) {
    let added = 0;
    for (const alert of msg.alerts) {
      const seq = alert.cursor ? alert.cursor.sequence : null;
      if (seq !== null && alert.cursor.epoch === state.epoch) {
        if (state.bySeq.has(seq)) { state.duplicates += 1; continue; }
        state.bySeq.add(seq);
      }
      state.received += 1;
      added += 1;
      state.alerts.push(alert);
      if (alert.source === "internal") addLoss(alert, false);
    }
    if (state.alerts.length > MAX_ALERTS + TRIM_SLACK) {
      const gone = state.alerts.splice(0, state.alerts.length - MAX_ALERTS);
      for (const a of gone) if (a.cursor) state.bySeq.delete(a.cursor.sequence);
    }
    state.anchor += added;
    state.position = msg.position;
    state.dirty = true;
  }

  function onLoss(alert) {
    const lost = alert.output_fields ? alert.output_fields["falconet.lost"] : null;
    if (typeof lost === "number") state.lost += lost;
    addLoss(alert, true);
    state.dirty = true;
  }

  function addLoss(alert, toThisPage) {
    state.losses.push({ alert, toThisPage });
    if (state.losses.length > MAX_LOSSES) state.losses.shift();
    const li = document.createElement("li");
    li.textContent = alert.time + " " + (toThisPage ? "[this page] " : "[server] ") + alert.rule + ": " + alert.output;
    const list = $("loss-list");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_LOSSES) list.removeChild(list.lastChild);
    $("losses").hidden = false;
  }

  // -- the table: only the rows in view exist in the page ----------------------------------------------------

  const pool = [];

  function rowElement(i) {
    while (pool.length <= i) {
      const row = document.createElement("div");
      row.className = "row";
      for (const cls of ["c-time", "c-prio", "c-rule", "c-host", "c-ctr", "c-out"]) {
        const span = document.createElement("span");
        span.className = cls;
        row.appendChild(span);
      }
      row.addEventListener("click", () => showDetail(row.alert));
      $("rows").appendChild(row);
      pool.push(row);
    }
    return pool[i];
  }

  function containerOf(alert) {
    const f = alert.output_fields || {};
    const pod = f["k8s.pod.name"];
    const ctr = f["container.name"] || f["container.id"];
    if (pod) return (f["k8s.ns.name"] ? f["k8s.ns.name"] + "/" : "") + pod;
    return ctr == null ? "" : String(ctr);
  }

  function render() {
    if (!state.dirty) return;
    state.dirty = false;
    const n = state.alerts.length;
    const viewport = $("viewport");
    $("spacer").style.height = n * ROW_HEIGHT + "px";
    // Newest first: new alerts go on top. Someone reading further down keeps the same rows in view.
    if (state.anchor && viewport.scrollTop > 0) viewport.scrollTop += state.anchor * ROW_HEIGHT;
    state.anchor = 0;
    const first = Math.floor(viewport.scrollTop / ROW_HEIGHT);
    const visible = Math.ceil(viewport.clientHeight / ROW_HEIGHT) + 1;
    $("rows").style.transform = "translateY(" + first * ROW_HEIGHT + "px)";
    for (let i = 0; i < visible; i++) {
      const row = rowElement(i);
      const index = n - 1 - (first + i);  // newest first
      if (index < 0) { row.hidden = true; row.alert = null; continue; }
      const a = state.alerts[index];
      row.hidden = false;
      if (row.alert === a) continue;
      row.alert = a;
      const cells = row.children;
      cells[0].textContent = a.time.slice(5, 23).replace("T", " ");  // MM-DD HH:MM:SS.mmm (UTC); detail: all
      cells[1].textContent = a.priority;
      cells[1].className = "c-prio p-" + a.priority;
      cells[2].textContent = a.rule;
      cells[3].textContent = a.hostname;
      cells[4].textContent = containerOf(a);
      cells[5].textContent = a.output;
      row.classList.toggle("loss", a.source === "internal");
      row.dataset.seq = a.cursor ? a.cursor.sequence : "";
    }
    for (let i = visible; i < pool.length; i++) { pool[i].hidden = true; pool[i].alert = null; }
    $("count-received").textContent = state.received;
    $("count-shown").textContent = n;
    $("count-lost").textContent = state.lost;
  }

  function frame(now) {
    if (state.lastFrame !== null) state.maxFrameGapMs = Math.max(state.maxFrameGapMs, now - state.lastFrame);
    state.lastFrame = now;
    state.frames += 1;
    render();
    requestAnimationFrame(frame);
  }

  function showDetail(alert) {
    if (!alert) return;
    state.selected = alert;
    $("detail-rule").textContent = alert.rule;
    const table = $("detail-table");
    table.replaceChildren();
    const add = (key, value) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      const td = document.createElement("td");
      th.textContent = key;
      td.textContent = value === null ? "<NA>" : typeof value === "string" ? value : JSON.stringify(value);
      tr.append(th, td);
      table.appendChild(tr);
    };
    add("time", alert.time);
    add("priority", alert.priority);
    add("rule", alert.rule);
    add("source", alert.source);
    add("hostname", alert.hostname);
    add("cursor", alert.cursor ? alert.cursor.epoch + ":" + alert.cursor.sequence : "");
    add("output", alert.output);
    add("tags", (alert.tags || []).join(", "));
    const fields = alert.output_fields || {};
    for (const key of Object.keys(fields).sort()) add(key, fields[key]);
    $("detail").hidden = false;
  }

  // -- charts -------------------------------------------------------------------------------------------------

  const COLORS = ["#4a0000", "#7f0000", "#b71c1c", "#e53935", "#fb8c00", "#1e88e5", "#43a047", "#9e9e9e"];
  let charts = null;

  function makeCharts() {
    if (typeof Chart === "undefined") return null;
    const common = { animation: false, responsive: true, maintainAspectRatio: false };
    return {
      time: new Chart($("chart-time"), {
        type: "bar", data: { labels: [], datasets: [] },
        options: { ...common, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
      }),
      rules: new Chart($("chart-rules"), {
        type: "bar", data: { labels: [], datasets: [{ label: "top rules", data: [], backgroundColor: "#1e88e5" }] },
        options: { ...common, indexAxis: "y" },
      }),
      hosts: new Chart($("chart-hosts"), {
        type: "bar", data: { labels: [], datasets: [{ label: "top hosts", data: [], backgroundColor: "#43a047" }] },
        options: { ...common, indexAxis: "y" },
      }),
    };
  }

  function label(ts, seconds) {
    const d = new Date(ts * 1000);
    const hm = d.toTimeString().slice(0, 5);
    return seconds >= 3600 ? d.toDateString().slice(4, 10) + " " + hm : hm;
  }

  function drawStats(stats) {
    state.stats = stats;
    $("chart-total").textContent = stats.total;
    $("window-name").textContent = stats.window;
    if (!charts) charts = makeCharts();
    if (!charts) return;
    const labels = stats.buckets.map((_, i) => label(stats.start + i * stats.bucket_seconds, stats.bucket_seconds));
    charts.time.data.labels = labels;
    charts.time.data.datasets = stats.priorities.map((name, p) => ({
      label: name, backgroundColor: COLORS[p], data: stats.buckets.map((row) => row[p]),
    })).filter((ds) => ds.data.some((v) => v > 0));
    charts.time.update();
    for (const [chart, rows] of [[charts.rules, stats.top_rules], [charts.hosts, stats.top_hosts]]) {
      chart.data.labels = rows.map((r) => r[0]);
      chart.data.datasets[0].data = rows.map((r) => r[1]);
      chart.update();
    }
  }

  async function pollStats() {
    try {
      const response = await fetch("/api/stats?window=" + state.window, { headers: headers(), cache: "no-store" });
      if (response.ok) drawStats(await response.json());
    } catch (_) { /* the stream shows the connection's state */ }
  }

  function setWindow(name) {
    state.window = name;
    $("w-hour").classList.toggle("on", name === "hour");
    $("w-day").classList.toggle("on", name === "day");
    applyFilters();
    pollStats();
  }

  // -- start ----------------------------------------------------------------------------------------------------

  function start() {
    filtersFromUrl();
    $("w-hour").classList.toggle("on", state.window === "hour");
    $("w-day").classList.toggle("on", state.window === "day");
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
    $("f-clear").addEventListener("click", () => { $("filters").reset(); applyFilters(); });
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("falconet-console-token", state.token);
      $("token-form").hidden = true;
      $("token-error").textContent = "";
      restart();
      pollStats();
    });
    $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
    $("w-hour").addEventListener("click", () => setWindow("hour"));
    $("w-day").addEventListener("click", () => setWindow("day"));
    $("viewport").addEventListener("scroll", () => { state.dirty = true; }, { passive: true });
    window.addEventListener("resize", () => { state.dirty = true; });
    requestAnimationFrame(frame);
    connect();
    pollStats();
    setInterval(pollStats, STATS_EVERY_MS);
  }

  // What tests and curious operators can read (never used to change anything).
  window.falconetConsole = {
    state,
    sequences: () => state.alerts.filter((a) => a.cursor).map((a) => a.cursor.sequence),
    chartTotals: () => {
      if (!charts || !state.stats) return null;
      const out = {};
      for (const ds of charts.time.data.datasets) out[ds.label] = ds.data.reduce((x, y) => x + y, 0);
      return out;
    },
    topRules: () => (charts ? charts.rules.data.labels.map((l, i) => [l, charts.rules.data.datasets[0].data[i]]) : null),
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
