// Scrapoxy GUI: vanilla JS over the commander's /api, no third-party code.
//
// The credentials live in sessionStorage (gone when the tab closes) as the Basic token, and
// every fetch sends them. Data is rendered with textContent only, never innerHTML: instance
// names and errors come from providers and must not become markup.
"use strict";

(function () {
  const TOKEN_KEY = "scrapoxy.auth";

  const $ = (id) => document.getElementById(id);
  // Scaling fields the user edited since the last save: live updates leave those alone, and
  // a save sends only those (a required not sent follows the new bounds on the server).
  const editedFields = new Set();
  let scaling = null;         // last {min, required, max} from the server
  let lastUpdate = null;      // time of the last event, for the footer
  let shownConfig = null;     // the config the config view shows

  // --- auth ---------------------------------------------------------------------------

  function encodeBasic(username, password) {
    // btoa only takes Latin-1; encode UTF-8 first so any password works.
    const bytes = new TextEncoder().encode(username + ":" + password);
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary);
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || ("HTTP " + status));
      this.status = status;
      this.field = body && body.field;
    }
  }

  async function api(method, path, body) {
    const headers = {
      "Authorization": "Basic " + token(),
      // Tells the server not to send a Basic challenge (which would pop the browser's dialog).
      "X-Requested-With": "XMLHttpRequest",
    };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      // fetch's own TypeError ("Failed to fetch") says nothing to a person.
      throw new ApiError(0, { message: "The server cannot be reached: is scrapoxy-server running?" });
    }
    if (response.status === 401) {
      logout("Your session is no longer valid: sign in again.");
      throw new ApiError(401, { message: "not signed in" });
    }
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function showLogin(message) {
    $("dashboard").hidden = true;
    $("logout").hidden = true;
    $("connection").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-password").value = "";
    $("login-password").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
    $("connection").hidden = false;
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopStream();
    lastEventId = null;
    showLogin(message);
  }

  async function login(event) {
    event.preventDefault();
    const username = $("login-username").value;
    const password = $("login-password").value;
    sessionStorage.setItem(TOKEN_KEY, encodeBasic(username, password));
    try {
      await api("GET", "/api/scaling");
    } catch (e) {
      if (e.status !== 401) $("login-error").textContent = "Cannot reach the commander: " + e.message;
      else $("login-error").textContent = "Wrong username or password.";
      return;
    }
    start();
  }

  // --- live: the event stream ---------------------------------------------------------
  //
  // EventSource cannot send an Authorization header, so the stream is read with fetch():
  // the same SSE format, the same Last-Event-ID on reconnect (the server then sends what
  // was missed, or the whole current state when that is too old).

  let streamAbort = null;
  let lastEventId = null;
  let retryMs = 2000;
  let reconnectTimer = null;

  function start() {
    showDashboard();
    editedFields.clear();
    stopStream();
    loadHistory();
    openStream();
  }

  function stopStream() {
    if (reconnectTimer !== null) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (streamAbort) streamAbort.abort();
    streamAbort = null;
  }

  async function openStream() {
    if (!token()) return;
    const controller = new AbortController();
    streamAbort = controller;
    const headers = {
      "Authorization": "Basic " + token(),
      "X-Requested-With": "XMLHttpRequest",
      "Accept": "text/event-stream",
    };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    try {
      const response = await fetch("/api/events", { headers, cache: "no-store", signal: controller.signal });
      if (response.status === 401) { logout("Your session is no longer valid: sign in again."); return; }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      setConnection(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          handleBlock(block);
        }
      }
      throw new Error("the stream ended");
    } catch (e) {
      if (controller.signal.aborted) return;
      setConnection(false, e.message);
      reconnectTimer = setTimeout(openStream, retryMs);
    }
  }

  function handleBlock(block) {
    let id = null, kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") kind = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (id !== null) lastEventId = id;
    if (!data.length) return;
    let payload;
    try { payload = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (kind === "instances") renderInstances(payload);
    else if (kind === "scaling") {
      // Changed elsewhere (the pool woke on traffic, another operator): an earlier
      // "Going to sleep" would now be wrong.
      if (scaling && FIELDS.some((f) => scaling[f] !== payload[f])) scalingMessage("", "");
      scaling = payload;
      renderScaling();
      // The config view shows the scaling in force too; scaling changes come as their own
      // events, not as config events.
      if (shownConfig && shownConfig.scaling) {
        Object.assign(shownConfig.scaling, payload);
        renderConfig(shownConfig);
      }
    }
    else if (kind === "config") renderConfig(payload);
    else if (kind === "stats") addSample(payload);
    else if (kind === "providers") renderProviders(payload);
    lastUpdate = new Date().toLocaleTimeString();
    $("updated").textContent = "Live · last update " + lastUpdate;
  }

  function setConnection(ok, message) {
    const el = $("connection");
    el.className = "connection " + (ok ? "ok" : "bad");
    el.textContent = ok ? "Live" : "Reconnecting…";
    el.title = message || "";
    // The footer must not say "Live" while the header says the stream is down.
    if (!ok && lastUpdate) $("updated").textContent = "Disconnected · last update " + lastUpdate;
  }

  // --- stats and charts -----------------------------------------------------------------

  let span = 900;              // seconds the charts show: the server's stats window
  let sampleInterval = 1;      // seconds between samples, from GET /api/stats
  const samples = [];          // kept oldest first, at most one window's worth + a few
  let totals = null;           // cumulative counters from GET /api/stats
  let charts = null;

  function formatCount(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function formatBytes(v) {
    const units = ["B", "kB", "MB", "GB"];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 ? Math.round(v) : v.toFixed(v >= 10 ? 0 : 1)) + " " + units[i];
  }

  function formatSeconds(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return Math.round(v * 1000) + " ms";
    return v.toFixed(v >= 10 ? 0 : 2) + " s";
  }

  function describeWindow() {
    const minutes = span / 60;
    const length = minutes >= 1 && Number.isInteger(minutes)
      ? (minutes === 1 ? "minute" : minutes + " minutes") : Math.round(span) + " seconds";
    const every = sampleInterval === 1 ? "second" : sampleInterval + " seconds";
    return "last " + length + ", one point per " + every;
  }

  function setWindow(seconds, interval) {
    // The window is the server's (commander.stats_window): the charts show what it keeps.
    if (typeof seconds === "number" && seconds > 0) span = seconds;
    if (typeof interval === "number" && interval > 0) sampleInterval = interval;
    if (charts) Object.values(charts).forEach((chart) => { chart.span = span; });
    $("charts-window").textContent = describeWindow();
  }

  function keptSamples() {
    return Math.ceil(span / sampleInterval) + 5;
  }

  function makeCharts() {
    const { LineChart } = window.ScrapoxyCharts;
    return {
      rps: new LineChart($("chart-rps"), { span: span, format: formatCount, minTop: 5,
        series: [{ label: "req/s", color: "#2f6fde" }] }),
      bytes: new LineChart($("chart-bytes"), { span: span, format: formatBytes, minTop: 1000,
        series: [{ label: "in", color: "#1f9d55" }, { label: "out", color: "#8e5bd8" }] }),
      errors: new LineChart($("chart-errors"), { span: span, format: formatCount, minTop: 4,
        series: [{ label: "errors/s", color: "#d0453a" }] }),
      latency: new LineChart($("chart-latency"), { span: span, format: formatSeconds, minTop: 0.02,
        series: [{ label: "p50", color: "#2f6fde" }, { label: "p90", color: "#c98a00" },
                 { label: "p99", color: "#d0453a" }] }),
    };
  }

  async function loadHistory() {
    try {
      const view = await api("GET", "/api/stats");
      setWindow(view.window, view.interval);
      totals = view.totals;
      samples.length = 0;
      for (const sample of view.samples.slice(-keptSamples())) samples.push(sample);
      renderStats();
    } catch (e) { /* the stream brings samples anyway */ }
  }

  function addSample(sample) {
    if (samples.length && sample.t <= samples[samples.length - 1].t) return;
    samples.push(sample);
    while (samples.length > keptSamples()) samples.shift();
    if (totals) {
      const g = totals.global, s = sample.global;
      g.requests += s.requests;
      for (const [kind, n] of Object.entries(s.errors)) g.errors[kind] = (g.errors[kind] || 0) + n;
    }
    for (const [name, counts] of Object.entries(sample.instances || {})) {
      const td = document.querySelector('td.requests[data-name="' + CSS.escape(name) + '"]');
      if (td) td.textContent = String(counts.requests_total);
    }
    renderStats();
  }

  function sumErrors(errors) {
    return Object.values(errors || {}).reduce((a, b) => a + b, 0);
  }

  function renderStats() {
    if (!charts) charts = makeCharts();
    const times = samples.map((s) => s.t);
    // Per second, whatever the server's sampling interval.
    const per = (f) => samples.map((s) => f(s.global) / (s.interval || 1));
    const g = (f) => samples.map((s) => f(s.global));
    charts.rps.draw(times, [g((s) => s.rps)]);
    charts.bytes.draw(times, [per((s) => s.bytes_in), per((s) => s.bytes_out)]);
    charts.errors.draw(times, [per((s) => sumErrors(s.errors))]);
    charts.latency.draw(times, [g((s) => s.latency.p50), g((s) => s.latency.p90), g((s) => s.latency.p99)]);
    const last = samples.length ? samples[samples.length - 1].global : null;
    $("tile-rps").textContent = last ? formatCount(last.rps) : "–";
    $("tile-latency").textContent = last && last.latency.p50 !== null
      ? formatSeconds(last.latency.p50) + " / " + formatSeconds(last.latency.p99) : "–";
    if (totals) {
      $("tile-requests").textContent = formatCount(totals.global.requests);
      const errors = totals.global.errors || {};
      const n = sumErrors(errors);
      const tile = $("tile-errors");
      tile.textContent = formatCount(n);
      tile.title = Object.entries(errors).map(([k, v]) => k + ": " + v).join("\n");
    }
  }

  // --- config -------------------------------------------------------------------------

  const SECRET_KEYS = ["password", "instance_password", "secret_access_key", "access_key_id"];

  function configNode(key, value) {
    // A nested list built with textContent: config values come from a file and are data.
    const empty = value !== null && typeof value === "object" && !Object.keys(value).length;
    if (value !== null && typeof value === "object" && !empty) {
      const wrap = document.createElement("div");
      wrap.className = "config-group";
      if (key !== null) {
        const title = document.createElement("div");
        title.className = "config-key group";
        title.textContent = key;
        wrap.appendChild(title);
      }
      // List entries by their name when they have one (providers), else by position.
      const entries = Array.isArray(value)
        ? value.map((v, i) => [v && typeof v === "object" && v.name ? v.name : "[" + i + "]", v])
        : Object.entries(value);
      for (const [k, v] of entries) wrap.appendChild(configNode(k, v));
      return wrap;
    }
    const row = document.createElement("div");
    row.className = "config-row";
    const name = document.createElement("span");
    name.className = "config-key";
    name.textContent = key;
    row.appendChild(name);
    if (SECRET_KEYS.includes(key) && value !== null) row.appendChild(configValue("••••••", "secret"));
    else if (value === null || empty) row.appendChild(configValue(value === null ? "not set" : "none", "muted"));
    else row.appendChild(configValue(typeof value === "string" ? value : JSON.stringify(value), ""));
    return row;
  }

  function configValue(text, className) {
    const span = document.createElement("span");
    span.className = "config-value mono " + (className || "");
    span.textContent = text;
    return span;
  }

  function renderConfig(config) {
    shownConfig = config;
    $("config-body").replaceChildren(configNode(null, config));
    // The stats window changed through the API: take it (and the samples) from the
    // sampler itself, which is what the charts show.
    if (config && config.commander && config.commander.stats_window !== span) loadHistory();
  }

  // --- scaling ------------------------------------------------------------------------

  const FIELDS = ["min", "required", "max"];

  function renderScaling() {
    if (!scaling) return;
    const state = $("pool-state");
    const fixed = scaling.min === scaling.max;
    const awake = scaling.required > scaling.min;
    // min = max: wake and sleep change nothing, so neither word would be true.
    state.textContent = fixed ? "fixed size" : awake ? "awake" : "asleep";
    state.className = "pill " + (fixed || awake ? "started" : "stopped");
    state.title = "required " + scaling.required + " (min " + scaling.min + ", max " + scaling.max + ")" +
      (fixed ? ": min = max, so the pool keeps this size whatever the traffic" : "");
    FIELDS.forEach((f) => { if (!editedFields.has(f)) $("scaling-" + f).value = scaling[f]; });
  }

  function clearInvalid() {
    FIELDS.forEach((f) => $("scaling-" + f).classList.remove("invalid"));
  }

  function scalingMessage(text, kind) {
    const el = $("scaling-message");
    el.textContent = text;
    el.className = "message" + (kind ? " " + kind : "");
  }

  async function patchScaling(changes, done) {
    clearInvalid();
    try {
      const updated = await api("PATCH", "/api/scaling", changes);
      Object.keys(changes).forEach((f) => editedFields.delete(f));
      if (updated) scaling = updated;
      renderScaling();
      scalingMessage(updated ? done : "Nothing to change.", "ok");
    } catch (e) {
      if (e.status === 401) return;
      if (e.field && FIELDS.includes(e.field)) $("scaling-" + e.field).classList.add("invalid");
      scalingMessage(e.message, "error");
    }
  }

  function saveScaling(event) {
    event.preventDefault();
    const changes = {};
    for (const f of FIELDS) {
      if (!editedFields.has(f)) continue;
      const raw = $("scaling-" + f).value.trim();
      // Sent as typed when not a number: the server names the bad field in its answer.
      changes[f] = raw !== "" && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
    }
    patchScaling(changes, "Saved.");
  }

  function wake() {
    if (scaling) patchScaling({ required: scaling.max }, "Waking up: required = max.");
  }

  function sleep() {
    if (scaling) patchScaling({ required: scaling.min }, "Going to sleep: required = min.");
  }

  // --- instances ----------------------------------------------------------------------

  function formatAge(startedAt) {
    if (typeof startedAt !== "number" || !Number.isFinite(startedAt)) return "";
    let s = Math.max(0, Math.floor(Date.now() / 1000 - startedAt));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s).padStart(2, "0") + "s";
    return s + "s";
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text === null || text === undefined ? "" : String(text);
    return td;
  }

  function instanceRow(instance) {
    const tr = document.createElement("tr");
    tr.appendChild(cell(instance.name, "mono"));
    tr.appendChild(cell(instance.provider));

    const status = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = "pill " + String(instance.status || "");
    pill.textContent = instance.status || "";
    status.appendChild(pill);
    tr.appendChild(status);

    const alive = document.createElement("td");
    const dot = document.createElement("span");
    dot.className = "dot " + (instance.alive ? "alive" : "dead");
    dot.title = instance.alive ? "alive" : "not alive";
    alive.appendChild(dot);
    tr.appendChild(alive);

    if (instance.error) pill.title = instance.error;
    if (instance.retiring) pill.textContent += " · retiring";

    tr.appendChild(cell(instance.fingerprint, "mono"));
    const age = cell(formatAge(instance.started_at), "age");
    age.dataset.startedAt = String(instance.started_at);
    tr.appendChild(age);
    const requests = cell(instance.requests, "num requests");
    requests.dataset.name = instance.name;
    tr.appendChild(requests);

    const actions = document.createElement("td");
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "button small danger";
    stop.textContent = "Stop";
    stop.title = "Stop this instance; the manager starts a new one";
    stop.addEventListener("click", () => stopInstance(instance.name, stop));
    actions.appendChild(stop);
    tr.appendChild(actions);
    tr.dataset.name = instance.name;
    return tr;
  }

  function renderInstances(instances) {
    const body = $("instances-body");
    const rows = instances.map(instanceRow);
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(scaling && scaling.max === 0 ? "No instances: max is 0." : "No instances yet.",
                      "empty");
      td.colSpan = 8;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    // An instance on its way out may still answer checks: it serves nothing new.
    const stopping = instances.filter((i) => i.status === "stopping").length;
    const alive = instances.filter((i) => i.alive && i.status !== "stopping").length;
    $("instances-summary").textContent = alive + " alive of " + instances.length +
      (stopping ? " (" + stopping + " stopping)" : "");
    $("tile-alive").textContent = alive + " / " + instances.length;
  }

  // --- providers: errors that would otherwise only be in the server log -----------------

  const ACTIONS = {
    list: "listing instances", create: "creating instances", terminate: "terminating instances",
  };

  function formatTime(epoch) {
    return typeof epoch === "number" ? new Date(epoch * 1000).toLocaleTimeString() : "";
  }

  function renderProviders(providers) {
    const banner = $("provider-errors");
    const failing = (providers || []).filter((p) => p.error);
    const items = failing.map((p) => {
      const li = document.createElement("li");
      li.dataset.provider = p.name;
      const what = document.createElement("strong");
      what.textContent = "Provider " + p.name + (p.type ? " (" + p.type + ")" : "") + ": "
        + (ACTIONS[p.error.action] || p.error.action) + " fails";
      li.appendChild(what);
      const when = [];
      if (p.error.since) when.push("since " + formatTime(p.error.since));
      if (p.error.failures) when.push(p.error.failures + (p.error.failures === 1 ? " attempt" : " attempts"));
      if (p.error.retry_at) when.push("next try " + formatTime(p.error.retry_at));
      if (when.length) li.appendChild(document.createTextNode(" (" + when.join(", ") + ")"));
      const detail = document.createElement("div");
      detail.className = "detail mono";
      detail.textContent = p.error.message;
      li.appendChild(detail);
      return li;
    });
    banner.replaceChildren(...items);
    banner.hidden = !items.length;
  }

  async function stopInstance(name, button) {
    button.disabled = true;
    const message = $("instances-message");
    try {
      const answer = await api("POST", "/api/instances/stop", { name });
      message.className = "message ok";
      const text = "Stopped " + name + "; " + answer.alive + " alive. A replacement starts shortly.";
      message.textContent = text;
      // News, not state: the list below shows what happened next.
      setTimeout(() => { if (message.textContent === text) message.textContent = ""; }, 15000);
    } catch (e) {
      if (e.status === 401) return;
      message.className = "message error";
      message.textContent = e.message;
      button.disabled = false;
    }
  }

  // --- wiring -------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout(""));
    $("scaling-form").addEventListener("submit", saveScaling);
    $("scaling-form").addEventListener("input", (event) => {
      const field = event.target.id.replace("scaling-", "");
      if (FIELDS.includes(field)) editedFields.add(field);
    });
    $("wake").addEventListener("click", wake);
    $("sleep").addEventListener("click", sleep);
    // Ages move every second without asking the server.
    setInterval(() => {
      document.querySelectorAll("td.age").forEach((td) => {
        td.textContent = formatAge(Number(td.dataset.startedAt));
      });
    }, 1000);
    window.addEventListener("resize", () => { if (charts) renderStats(); });
    if (token()) start(); else showLogin("");
  });
})();
