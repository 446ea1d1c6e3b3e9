// Scrapoxy GUI: vanilla JS over the commander's /api, no third-party code.
//
// The credentials live in sessionStorage (gone when the tab closes) as the Basic token, and
// every fetch sends them. Data is rendered with textContent only, never innerHTML: instance
// names and errors come from providers and must not become markup.
"use strict";

(function () {
  const TOKEN_KEY = "scrapoxy.auth";
  const POLL_MS = 2000;

  const $ = (id) => document.getElementById(id);
  let pollTimer = null;
  let scalingDirty = false;   // the user is editing: polling must not overwrite the inputs
  let scaling = null;         // last {min, required, max} from the server

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
    const response = await fetch(path, init);
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
    stopPolling();
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

  // --- polling ------------------------------------------------------------------------

  function start() {
    showDashboard();
    scalingDirty = false;
    stopPolling();
    poll();
  }

  function stopPolling() {
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = null;
  }

  async function poll() {
    // setTimeout after each round (not setInterval) so slow answers never pile up.
    if (!token()) return;
    if (!document.hidden) await refresh();
    if (token()) pollTimer = setTimeout(poll, POLL_MS);
  }

  async function refresh() {
    try {
      const [instances, current] = await Promise.all([
        api("GET", "/api/instances"),
        api("GET", "/api/scaling"),
      ]);
      scaling = current;
      renderScaling();
      renderInstances(instances);
      setConnection(true);
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (e.status !== 401) setConnection(false, e.message);
    }
  }

  function setConnection(ok, message) {
    const el = $("connection");
    el.className = "connection " + (ok ? "ok" : "bad");
    el.textContent = ok ? "Connected" : "Disconnected";
    el.title = message || "";
  }

  // --- scaling ------------------------------------------------------------------------

  const FIELDS = ["min", "required", "max"];

  function renderScaling() {
    if (scalingDirty || !scaling) return;
    FIELDS.forEach((f) => { $("scaling-" + f).value = scaling[f]; });
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
      scalingDirty = false;
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
    if (typeof startedAt !== "number") return "";
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

    tr.appendChild(cell(instance.fingerprint, "mono"));
    tr.appendChild(cell(formatAge(instance.started_at)));
    tr.appendChild(cell(instance.requests, "num"));

    const actions = document.createElement("td");
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "button small danger";
    stop.textContent = "Stop";
    stop.title = "Stop this instance; the manager starts a new one";
    stop.addEventListener("click", () => stopInstance(instance.name, stop));
    actions.appendChild(stop);
    tr.appendChild(actions);
    return tr;
  }

  function renderInstances(instances) {
    const body = $("instances-body");
    const rows = instances.map(instanceRow);
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell("No instances yet.", "empty");
      td.colSpan = 8;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const alive = instances.filter((i) => i.alive).length;
    $("instances-summary").textContent = alive + " alive of " + instances.length;
  }

  async function stopInstance(name, button) {
    button.disabled = true;
    const message = $("instances-message");
    try {
      const answer = await api("POST", "/api/instances/stop", { name });
      message.className = "message ok";
      message.textContent = "Stopped " + name + "; " + answer.alive + " alive.";
    } catch (e) {
      if (e.status === 401) return;
      message.className = "message error";
      message.textContent = e.message;
      button.disabled = false;
      return;
    }
    refresh();
  }

  // --- wiring -------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout(""));
    $("scaling-form").addEventListener("submit", saveScaling);
    $("scaling-form").addEventListener("input", () => { scalingDirty = true; });
    $("wake").addEventListener("click", wake);
    $("sleep").addEventListener("click", sleep);
    if (token()) start(); else showLogin("");
  });
})();
