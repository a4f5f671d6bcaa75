// sesender operator dashboard: plain JavaScript, no build step, no dependencies.
//
// Every value that comes from the API (topic ids, error texts, reasons) is put into the page with
// textContent or an attribute, never parsed as HTML; the page's Content-Security-Policy forbids
// inline scripts besides. The API key lives in sessionStorage (this tab only) and is sent as
// X-API-KEY; a 401 brings the key form back with a clear message.
"use strict";

(() => {
  const KEY_STORAGE = "sesender.apiKey";
  const WINDOW_STORAGE = "sesender.chartWindow";
  const REFRESH_MS = 2000;
  const TOPIC_LIMIT = 25;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REFUSED = "The API key was refused. Check it and enter it again.";

  const byId = (id) => document.getElementById(id);
  const integer = new Intl.NumberFormat("en-US");
  const decimal = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  const clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  const state = {
    key: readStorage(KEY_STORAGE),
    windowSeconds: Number(readStorage(WINDOW_STORAGE)) || 300,
    generation: 0, // bumped when the key changes: late answers for the old key are dropped
    timer: null,
    busy: false,
    again: false,
    lastRate: null,
    lastUpdate: null,
    pointerX: null,
    rows: new Map(), // topic id -> row parts, reused between refreshes
    admin: false, // whether the key has the admin scope (retry and cancel are shown)
  };

  // -- small helpers -------------------------------------------------------------------------------

  function readStorage(name) {
    try {
      return window.sessionStorage.getItem(name);
    } catch {
      return null;
    }
  }

  function writeStorage(name, value) {
    try {
      if (value === null) window.sessionStorage.removeItem(name);
      else window.sessionStorage.setItem(name, value);
    } catch {
      // Storage disabled: the key then lasts as long as the page.
    }
  }

  /** An element with a class and text (always textContent) and children. */
  function element(tag, className, text, children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const child of children || []) node.append(child);
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, String(value));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function count(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : 0;
  }

  function ago(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
    if (seconds < 10) return "just now";
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return new Date(then).toLocaleDateString();
  }

  function duration(seconds) {
    if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function plural(n, word) {
    return `${integer.format(n)} ${word}${n === 1 ? "" : "s"}`;
  }

  // -- the API ---------------------------------------------------------------------------------------

  class KeyRefused extends Error {}

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /**
   * Calls the JSON API (paths are relative to /dashboard, so a reverse proxy prefix is kept).
   * Resolves to the parsed body; rejects with KeyRefused on 401, ApiFailure otherwise.
   * `accept` lists non-2xx statuses whose body is still wanted (503 of /ready).
   */
  async function api(path, { method = "GET", key = state.key, accept = [] } = {}) {
    const headers = { Accept: "application/json" };
    if (key !== null && key !== undefined) headers["X-API-KEY"] = key;
    let response;
    try {
      response = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
    } catch {
      throw new ApiFailure(0, "Cannot reach sesender");
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    if (response.status === 401) throw new KeyRefused(message);
    if (!response.ok && !(accept.includes(response.status) && body)) {
      throw new ApiFailure(response.status, message);
    }
    if (body === null || typeof body !== "object") {
      throw new ApiFailure(response.status, "The service answered something that is not JSON");
    }
    return body;
  }

  // -- the refresh loop ----------------------------------------------------------------------------

  function schedule() {
    window.clearTimeout(state.timer);
    state.timer = window.setTimeout(tick, REFRESH_MS);
  }

  /** Refresh now; a refresh already under way is followed by one more instead of overlapping. */
  async function tick() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    try {
      await refresh();
    } catch (error) {
      showBanner(`The dashboard hit an error: ${error && error.message ? error.message : error}`);
    } finally {
      state.busy = false;
      if (state.again) {
        state.again = false;
        tick();
      } else {
        schedule();
      }
    }
  }

  /**
   * Shows the admin actions (retry, cancel) only to a key with the admin scope; a read key sees
   * the figures alone. Until the key's scopes are known, the page shows no action.
   */
  function applyScopes(scopes) {
    state.admin = Array.isArray(scopes) && scopes.includes("admin");
    document.body.classList.toggle("read-only", !state.admin);
  }

  async function refresh() {
    const generation = state.generation;
    const signedIn = state.key !== null;
    const calls = [api("ready", { accept: [503] })];
    if (signedIn) {
      calls.push(api(`v1/stats/send-rate?seconds=${state.windowSeconds}`));
      calls.push(api(`v1/topics?limit=${TOPIC_LIMIT}`));
      calls.push(api("v1/api-keys/current"));
      calls.push(api("v1/stats/storage"));
      calls.push(api("v1/webhooks"));
    }
    const [ready, rate, topics, current, storage, webhooks] = await Promise.allSettled(calls);
    if (generation !== state.generation) return;

    if (ready.status === "fulfilled") renderReady(ready.value);
    else renderUnreachable();
    if (!signedIn) return;

    if (current.status === "fulfilled") applyScopes(current.value.scopes);
    const results = [rate, topics, current, storage, webhooks];
    if (results.some((r) => r.status === "rejected" && r.reason instanceof KeyRefused)) {
      signOut(REFUSED);
      return;
    }
    if (rate.status === "fulfilled") renderRate(rate.value);
    if (topics.status === "fulfilled") renderTopics(topics.value.topics || []);
    if (storage.status === "fulfilled") renderStorage(storage.value);
    if (webhooks.status === "fulfilled") renderWebhooks(webhooks.value.webhooks || []);

    const failure = [ready, rate, topics, storage, webhooks].find((r) => r.status === "rejected");
    if (failure) {
      const since = state.lastUpdate ? ` Last update at ${clock.format(state.lastUpdate)}.` : "";
      showBanner(`${failure.reason.message}.${since} Retrying every ${REFRESH_MS / 1000} s…`);
    } else {
      hideBanner();
      state.lastUpdate = new Date();
      const updated = byId("updated");
      updated.textContent = `Updated ${clock.format(state.lastUpdate)}`;
      updated.classList.remove("blink");
      void updated.offsetWidth; // restart the animation
      updated.classList.add("blink");
    }
  }

  // -- key form ------------------------------------------------------------------------------------

  function showLogin(message) {
    byId("dashboard").hidden = true;
    byId("change-key").hidden = true;
    byId("login").hidden = false;
    const error = byId("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    const input = byId("api-key");
    input.setAttribute("aria-invalid", message ? "true" : "false");
    input.focus();
    input.select();
  }

  function showDashboard() {
    byId("login").hidden = true;
    byId("dashboard").hidden = false;
    byId("change-key").hidden = false;
    byId("updated").textContent = "";
  }

  function signOut(message) {
    state.key = null;
    state.generation += 1;
    writeStorage(KEY_STORAGE, null);
    state.rows.clear();
    byId("topic-rows").replaceChildren();
    state.lastRate = null;
    hideBanner();
    showLogin(message);
  }

  async function submitKey(event) {
    event.preventDefault();
    const input = byId("api-key");
    const button = byId("login-submit");
    const key = input.value.trim();
    if (!key) {
      showLogin("Enter the API key.");
      return;
    }
    if (/[^\u0020-\u00ff]/u.test(key)) {
      showLogin("This key has characters a browser cannot send in a header.");
      return;
    }
    button.disabled = true;
    button.textContent = "Checking…";
    try {
      const current = await api("v1/api-keys/current", { key });
      const scopes = Array.isArray(current.scopes) ? current.scopes : [];
      if (!scopes.includes("read") && !scopes.includes("admin")) {
        showLogin("This key cannot read statistics: the dashboard needs a read or admin key.");
        return;
      }
      applyScopes(scopes);
    } catch (error) {
      showLogin(
        error instanceof KeyRefused ? REFUSED : `Could not check the key: ${error.message}.`,
      );
      return;
    } finally {
      button.disabled = false;
      button.textContent = "Open dashboard";
    }
    input.value = "";
    state.key = key;
    state.generation += 1;
    writeStorage(KEY_STORAGE, key);
    byId("login-error").hidden = true;
    showDashboard();
    tick();
  }

  // -- service state -------------------------------------------------------------------------------

  function renderReady(ready) {
    const isReady = ready.status === "ok";
    const paused = ready.sending === "paused";
    // Held by the reputation guard: only an operator's resume lifts it (the button below).
    const held = ready.sending_held === true;
    const pill = byId("service-pill");
    pill.className = `pill ${!isReady ? "pill-bad" : paused ? "pill-warn" : "pill-good"}`;
    byId("service-pill-text").textContent = !isReady
      ? "Not ready"
      : held
        ? "Ready · sending held"
        : paused
          ? "Ready · sending paused"
          : "Ready";

    const actors = Object.values(ready.actors || {});
    const running = actors.filter((s) => s === "running").length;
    setKpi("kpi-service", isReady ? "good" : "bad");
    byId("service-state").textContent = isReady ? "Ready" : "Not ready";
    const detail = byId("service-detail");
    const parts = [
      element("span", "tag", `backend ${ready.backend || "?"}`),
      element("span", ready.database === "ok" ? "tag" : "tag tag-bad", `database ${ready.database || "?"}`),
      element("span", running === actors.length ? "tag" : "tag tag-bad", `actors ${running}/${actors.length}`),
    ];
    if (Array.isArray(ready.problems) && ready.problems.length) {
      parts.push(element("span", "problem", ready.problems.join(", ")));
    }
    if (Array.isArray(ready.warnings) && ready.warnings.length) {
      parts.push(element("span", "problem", ready.warnings.join(", ")));
    }
    detail.replaceChildren(...parts);
    const disk = byId("storage-disk");
    disk.textContent = typeof ready.disk_free_bytes === "number" ? bytes(ready.disk_free_bytes) : "–";
    disk.classList.toggle("warn", Array.isArray(ready.warnings) && ready.warnings.length > 0);

    setKpi("kpi-sending", held ? "bad" : paused ? "warn" : "good");
    byId("sending-state").textContent = held ? "Held" : paused ? "Paused" : "Active";
    byId("sending-detail").textContent = held
      ? `Reputation guard: ${ready.sending_held_reason || ready.sending_paused_reason || "no reason given"}`
      : paused
        ? ready.sending_paused_reason || "No reason given"
        : "Emails flow to the provider";
    byId("resume-sending").hidden = !held;
  }

  function bytes(value) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let amount = count(value);
    let unit = 0;
    while (amount >= 1024 && unit < units.length - 1) {
      amount /= 1024;
      unit += 1;
    }
    return `${amount.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
  }

  /** The storage card: GET /v1/stats/storage (sizes, rows, retention, backups). */
  function renderStorage(storage) {
    const rows = storage.rows || {};
    const free = count(storage.free_bytes);
    byId("storage-size").textContent =
      bytes(storage.database_bytes) + (free ? ` (${bytes(free)} free inside)` : "");
    byId("storage-emails").textContent = integer.format(count(rows.requests));
    byId("storage-rows").textContent = ["results", "contents", "suppressions", "topics"]
      .map((table) => `${integer.format(count(rows[table]))} ${table}`)
      .join(" · ");
    byId("storage-pruned").textContent = integer.format(count(storage.emails_pruned));
    byId("storage-last-prune").textContent = storage.last_prune_at ? ago(storage.last_prune_at) : "never";
    byId("storage-last-backup").textContent = storage.last_backup_at
      ? ago(storage.last_backup_at)
      : "never";
    const days = count(storage.retention_days);
    byId("storage-sub").textContent = days
      ? `Emails in a final state are deleted ${days} days after their last change; statistics stay.`
      : "Retention is off (RETENTION_DAYS=0): every email is kept.";
  }

  function renderUnreachable() {
    const pill = byId("service-pill");
    pill.className = "pill pill-bad";
    byId("service-pill-text").textContent = "Unreachable";
    setKpi("kpi-service", "bad");
    byId("service-state").textContent = "Unreachable";
    byId("service-detail").textContent = "GET /ready did not answer";
  }

  function setKpi(id, tone) {
    const card = byId(id);
    card.classList.remove("tone-good", "tone-warn", "tone-bad");
    if (tone) card.classList.add(`tone-${tone}`);
  }

  function renderRate(rate) {
    state.lastRate = rate;
    const configured = count(rate.configured_per_second);
    const current = count(rate.current_per_second);
    byId("current-rate").textContent = decimal.format(current);
    byId("configured-rate").textContent = integer.format(configured);
    const share = configured > 0 ? Math.min(1, current / configured) : 0;
    byId("rate-meter").style.width = `${(share * 100).toFixed(1)}%`;

    const queued = count(rate.queued);
    byId("queued").textContent = integer.format(queued);
    byId("queue-detail").textContent = `${integer.format(count(rate.in_flight))} in flight to the provider`;
    byId("queue-drain").textContent =
      queued === 0
        ? "Nothing waiting"
        : configured > 0
          ? `About ${duration(queued / configured)} to send at ${integer.format(configured)}/s`
          : "";
    setKpi("kpi-queue", null);
    drawChart();
  }

  // -- chart ---------------------------------------------------------------------------------------

  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      if (factor * power >= raw) return factor * power;
    }
    return 10 * power;
  }

  // An axis label: whole numbers only. Ticks under a minute apart are labelled in seconds
  // ("−80 s", not "−1.3333333333333333 min"); ticks a whole number of minutes apart in minutes.
  function offsetLabel(seconds, spacing) {
    if (seconds === 0) return "now";
    if (spacing % 60 !== 0) return `−${seconds} s`;
    return `−${seconds / 60} min`;
  }

  function drawChart() {
    const rate = state.lastRate;
    const container = byId("chart");
    if (!rate || container.offsetParent === null) return;
    const points = Array.isArray(rate.per_second) ? rate.per_second : [];
    const configured = count(rate.configured_per_second);
    const width = Math.max(280, container.clientWidth);
    const height = width < 600 ? 180 : 240;
    const pad = { top: 14, right: 24, bottom: 26, left: 52 };
    const plotWidth = width - pad.left - pad.right;
    const plotHeight = height - pad.top - pad.bottom;

    const peak = points.reduce((m, p) => Math.max(m, count(p.sent)), 0);
    const step = niceStep(Math.max(configured * 1.15, peak * 1.05, 4) / 4);
    const yMax = step * Math.ceil(Math.max(configured * 1.15, peak * 1.05, 4) / step);
    const slots = Math.max(1, points.length);
    const x = (i) => pad.left + (i / slots) * plotWidth;
    const y = (v) => pad.top + plotHeight - (v / yMax) * plotHeight;

    const root = svg("svg", {
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      class: "chart-svg",
      "aria-hidden": "true",
    });
    const defs = svg("defs");
    const gradient = svg("linearGradient", { id: "sent-fill", x1: 0, y1: 0, x2: 0, y2: 1 });
    gradient.append(
      svg("stop", { offset: "0%", class: "fill-stop-top" }),
      svg("stop", { offset: "100%", class: "fill-stop-bottom" }),
    );
    defs.append(gradient);
    root.append(defs);

    for (let value = 0; value <= yMax + 1e-9; value += step) {
      root.append(
        svg("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: "grid" }),
        svg("text", { x: pad.left - 8, y: y(value) + 4, class: "axis axis-y" }, integer.format(value)),
      );
    }
    const maxLabels = Math.max(2, Math.floor(plotWidth / 64));
    // Whole minutes when they give at least four ticks (the 5- and 10-minute windows), else the
    // closest spacing that fits the width.
    const fits = (t) => slots / t <= maxLabels;
    const spacings = [10, 15, 20, 30, 60, 120, 180, 300, 600];
    const tick =
      spacings.find((t) => t % 60 === 0 && fits(t) && slots / t >= 4) || spacings.find(fits) || 600;
    for (let back = 0; back <= slots; back += tick) {
      const position = x(slots - back);
      const anchor = back === 0 ? "end" : back >= slots - tick / 2 ? "start" : "middle";
      root.append(
        svg("line", { x1: position, x2: position, y1: pad.top + plotHeight, y2: pad.top + plotHeight + 4, class: "grid" }),
        svg("text", { x: position, y: height - 6, class: "axis", "text-anchor": anchor }, offsetLabel(back, tick)),
      );
    }

    if (points.length) {
      // Steps: each second is a flat segment, so a burst reads as what it was.
      let line = "";
      points.forEach((p, i) => {
        const top = y(count(p.sent));
        line += `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${top.toFixed(1)}H${x(i + 1).toFixed(1)}`;
      });
      const area = `${line}V${y(0).toFixed(1)}H${x(0).toFixed(1)}Z`;
      root.append(svg("path", { d: area, class: "sent-area" }), svg("path", { d: line, class: "sent-line" }));
    }

    if (configured > 0) {
      const limitY = y(configured);
      root.append(
        svg("line", { x1: pad.left, x2: width - pad.right, y1: limitY, y2: limitY, class: "limit-line" }),
        svg(
          "text",
          { x: width - pad.right - 4, y: limitY - 6, class: "limit-label", "text-anchor": "end" },
          `configured ${integer.format(configured)}/s`,
        ),
      );
    }

    const hover = svg("g", { class: "hover", visibility: "hidden" });
    const hoverLine = svg("line", { y1: pad.top, y2: pad.top + plotHeight, class: "hover-line" });
    const hoverDot = svg("circle", { r: 4, class: "hover-dot" });
    hover.append(hoverLine, hoverDot);
    root.append(hover);

    const tooltip = byId("chart-tooltip");
    const showHover = (pointerX) => {
      const index = Math.floor(((pointerX - pad.left) / plotWidth) * slots);
      if (!points.length || index < 0 || index >= points.length) {
        hover.setAttribute("visibility", "hidden");
        tooltip.hidden = true;
        return;
      }
      const point = points[index];
      const cx = x(index + 0.5);
      hoverLine.setAttribute("x1", cx);
      hoverLine.setAttribute("x2", cx);
      hoverDot.setAttribute("cx", cx);
      hoverDot.setAttribute("cy", y(count(point.sent)));
      hover.setAttribute("visibility", "visible");
      tooltip.textContent = `${clock.format(new Date(point.t * 1000))} · ${plural(count(point.sent), "email")}`;
      tooltip.hidden = false;
      tooltip.style.left = `${Math.min(Math.max(cx, 70), width - 70)}px`;
    };
    root.addEventListener("pointermove", (event) => {
      state.pointerX = event.clientX - root.getBoundingClientRect().left;
      showHover(state.pointerX);
    });
    root.addEventListener("pointerleave", () => {
      state.pointerX = null;
      showHover(-1);
    });

    const previous = container.querySelector("svg");
    if (previous) previous.replaceWith(root);
    else container.prepend(root);
    if (state.pointerX !== null) showHover(state.pointerX);

    const total = points.reduce((sum, p) => sum + count(p.sent), 0);
    const minutes = Math.round(slots / 60);
    byId("chart-summary").textContent =
      `${plural(total, "email")} sent in the last ${minutes} min · peak ${integer.format(peak)}/s`;
  }

  function selectWindow(seconds) {
    state.windowSeconds = seconds;
    writeStorage(WINDOW_STORAGE, String(seconds));
    for (const button of byId("window-buttons").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.seconds) === seconds));
    }
  }

  // -- topics --------------------------------------------------------------------------------------

  const SEGMENTS = [
    ["sent", "Sent"],
    ["pending", "Pending"],
    ["failed", "Failed"],
    ["stopped", "Stopped"],
    ["suppressed", "Suppressed"],
    ["held", "Held"],
  ];
  const NUMBERS = [
    ["sent", "Sent"],
    ["pending", "Pending"],
    ["failed", "Failed"],
    ["stopped", "Stopped"],
    ["suppressed", "Suppressed"],
    ["held", "Held"],
    ["bounces", "Bounces"],
    ["complaints", "Complaints"],
    ["opens", "Opens"],
  ];

  function topicCounts(topic) {
    const requests = topic.request_counts || {};
    const results = topic.result_counts || {};
    const counts = {
      sent: count(requests.Sent),
      pending: count(requests.Created) + count(requests.Processed),
      queued: count(requests.Created),
      failed: count(requests.Failed),
      stopped: count(requests.Stopped),
      suppressed: count(requests.Suppressed),
      held: count(requests.Held),
      bounces: count(results.Bounce),
      complaints: count(results.Complaint),
      opens: count(results.Open),
    };
    counts.total =
      counts.sent + counts.pending + counts.failed + counts.stopped + counts.suppressed + counts.held;
    return counts;
  }

  function topicStatus(c) {
    if (c.total === 0) return ["Empty", "status-idle"];
    if (c.pending > 0) return c.pending === c.queued && c.sent === 0 ? ["Queued", "status-queued"] : ["Sending", "status-sending"];
    if (c.held > 0) return ["Held by the guard", "status-failed"];
    if (c.stopped > 0) return ["Cancelled", "status-stopped"];
    if (c.failed > 0) return ["Done with failures", "status-failed"];
    return ["Complete", "status-done"];
  }

  function buildRow(topicId) {
    const row = element("tr", "topic-row");
    row.dataset.topicId = topicId;

    const name = element("div", "topic-id", topicId === "" ? "(empty topic id)" : topicId);
    if (topicId === "") name.classList.add("topic-id-empty");
    name.title = topicId;
    const meta = element("div", "topic-meta");
    const topicCell = element("td", "col-topic", null, [name, meta]);

    const bar = element("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    const segments = {};
    for (const [field, label] of SEGMENTS) {
      segments[field] = element("span", `segment segment-${field}`);
      segments[field].dataset.label = label;
      bar.append(segments[field]);
    }
    const status = element("span", "status");
    const percent = element("span", "percent");
    const progressCell = element("td", "col-progress", null, [
      bar,
      element("div", "progress-caption", null, [status, percent]),
    ]);

    row.append(topicCell, progressCell);
    const cells = {};
    for (const [field, label] of NUMBERS) {
      cells[field] = element("td", "num");
      cells[field].dataset.field = field;
      cells[field].dataset.label = label;
      row.append(cells[field]);
    }

    const retry = element("button", "button button-small", "Retry failed");
    retry.type = "button";
    retry.dataset.action = "retry";
    const cancel = element("button", "button button-small button-danger-outline", "Cancel");
    cancel.type = "button";
    cancel.dataset.action = "cancel";
    const resume = element("button", "button button-small", "Resume");
    resume.type = "button";
    resume.dataset.action = "resume";
    resume.hidden = true;
    row.append(element("td", "col-actions", null, [element("div", "actions", null, [resume, retry, cancel])]));

    const parts = { row, meta, bar, segments, status, percent, cells, resume, retry, cancel, topic: null, counts: null, busy: false };
    resume.addEventListener("click", () => resumeTopic(topicId, parts));
    retry.addEventListener("click", () => retryFailed(topicId, parts));
    cancel.addEventListener("click", () => cancelTopic(topicId, parts));
    return parts;
  }

  function updateRow(parts, topic) {
    const c = topicCounts(topic);
    parts.topic = topic;
    parts.counts = c;
    parts.meta.textContent = `${plural(c.total, "email")} · ${ago(topic.created_at)}`;
    parts.meta.title = topic.created_at || "";
    for (const [field, label] of SEGMENTS) {
      const share = c.total > 0 ? (c[field] / c.total) * 100 : 0;
      parts.segments[field].style.width = `${share}%`;
      parts.segments[field].title = `${label}: ${integer.format(c[field])}`;
    }
    const done = c.total > 0 ? Math.floor(((c.total - c.pending) / c.total) * 100) : 100;
    parts.bar.setAttribute("aria-valuenow", String(done));
    parts.bar.setAttribute("aria-label", `${done}% done`);
    const [label, tone] = topicStatus(c);
    parts.status.textContent = label;
    parts.status.className = `status ${tone}`;
    parts.percent.textContent = `${done}%`;
    for (const [field] of NUMBERS) {
      const cell = parts.cells[field];
      cell.textContent = integer.format(c[field]);
      cell.classList.toggle("zero", c[field] === 0);
      cell.classList.toggle(`alert-${field}`, c[field] > 0);
    }
    const addressable = parts.row.dataset.topicId !== "";
    parts.retry.disabled = parts.busy || !addressable || c.failed === 0;
    parts.cancel.disabled = parts.busy || !addressable || c.pending + c.held === 0;
    parts.resume.hidden = c.held === 0;
    parts.resume.disabled = parts.busy || !addressable;
    parts.resume.title = "Send the emails the reputation guard held (it stopped the topic for its bounce rate)";
    parts.retry.title = c.failed ? "Requeue the emails that failed for transient reasons" : "No failed emails";
    parts.cancel.title = c.pending + c.held ? "Stop the emails not yet handed to SES" : "Nothing left to send";
  }

  function renderTopics(topics) {
    const body = byId("topic-rows");
    const seen = new Set();
    topics.forEach((topic, index) => {
      const id = typeof topic.topic_id === "string" ? topic.topic_id : String(topic.topic_id);
      seen.add(id);
      let parts = state.rows.get(id);
      if (!parts) {
        parts = buildRow(id);
        state.rows.set(id, parts);
      }
      updateRow(parts, topic);
      // Move rows only when out of place, so a focused button keeps its focus.
      if (body.children[index] !== parts.row) body.insertBefore(parts.row, body.children[index] || null);
    });
    for (const [id, parts] of state.rows) {
      if (!seen.has(id)) {
        parts.row.remove();
        state.rows.delete(id);
      }
    }
    byId("topics-empty").hidden = topics.length > 0;
    byId("topics").hidden = topics.length === 0;
  }

  /** One row per webhook endpoint, rebuilt each refresh (a short list), all text as text. */
  function renderWebhooks(endpoints) {
    const body = byId("webhook-rows");
    const rows = endpoints.map((endpoint) => {
      const row = element("tr");
      row.dataset.webhookId = String(endpoint.id);
      const target = element("td", "col-topic", String(endpoint.url));
      target.title = `${endpoint.id}${endpoint.description ? ` · ${endpoint.description}` : ""}`;
      const status = element("td", `webhook-status webhook-${endpoint.status}`, String(endpoint.status));
      if (endpoint.disabled_reason) status.title = String(endpoint.disabled_reason);
      const pending = element("td", "num", integer.format(endpoint.pending || 0));
      const failed = element("td", "num", integer.format(endpoint.failed || 0));
      failed.classList.toggle("alert-failed", endpoint.failed > 0);
      const error = endpoint.last_error
        ? `${endpoint.last_error}${endpoint.last_error_at ? ` (${ago(endpoint.last_error_at)})` : ""}`
        : "";
      row.append(target, status, pending, failed, element("td", "webhook-error", error));
      return row;
    });
    body.replaceChildren(...rows);
    byId("webhooks-empty").hidden = endpoints.length > 0;
    byId("webhooks").hidden = endpoints.length === 0;
  }

  // -- actions -------------------------------------------------------------------------------------

  function confirmCancel(topicId, pending) {
    const dialog = byId("confirm");
    const text = byId("confirm-text");
    text.replaceChildren(
      "Stop the ",
      element("strong", null, plural(pending, "email")),
      " of ",
      element("strong", "dialog-topic", topicId),
      " that have not been handed to SES yet? Emails already sent are not affected. " +
        "This cannot be undone.",
    );
    return new Promise((resolve) => {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
      dialog.showModal();
    });
  }

  async function runAction(parts, work) {
    parts.busy = true;
    parts.retry.disabled = true;
    parts.cancel.disabled = true;
    if (parts.resume) parts.resume.disabled = true;
    try {
      await work();
    } catch (error) {
      if (error instanceof KeyRefused) {
        signOut(REFUSED);
        return;
      }
      toast(error.message, "error");
    } finally {
      parts.busy = false;
      if (parts.topic) updateRow(parts, parts.topic);
      tick();
    }
  }

  function topicPath(topicId) {
    return `v1/topics/${encodeURIComponent(topicId)}`;
  }

  async function cancelTopic(topicId, parts) {
    const pending = parts.counts ? parts.counts.pending : 0;
    if (!(await confirmCancel(topicId, pending))) return;
    await runAction(parts, async () => {
      const answer = await api(topicPath(topicId), { method: "DELETE" });
      toast(`Cancelled “${topicId}”: ${plural(count(answer.stopped), "email")} stopped.`, "success");
    });
  }

  async function retryFailed(topicId, parts) {
    await runAction(parts, async () => {
      const answer = await api(`${topicPath(topicId)}/retry`, { method: "POST" });
      const requeued = count(answer.requeued);
      toast(
        requeued
          ? `“${topicId}”: ${plural(requeued, "email")} requeued.`
          : `“${topicId}”: nothing to retry (permanent rejections are never retried).`,
        requeued ? "success" : "info",
      );
    });
  }

  async function resumeTopic(topicId, parts) {
    await runAction(parts, async () => {
      const answer = await api(`${topicPath(topicId)}/resume`, { method: "POST" });
      const resumed = count(answer.resumed);
      toast(
        answer.held
          ? `“${topicId}”: resumed, ${plural(resumed, "held email")} queued again.`
          : `“${topicId}”: was not held.`,
        answer.held ? "success" : "info",
      );
    });
  }

  async function resumeSending() {
    const button = byId("resume-sending");
    button.disabled = true;
    try {
      const answer = await api("v1/sending/resume", { method: "POST" });
      toast(answer.resumed ? "Sending resumed." : "Sending was not held.", answer.resumed ? "success" : "info");
    } catch (error) {
      if (error instanceof KeyRefused) {
        signOut(REFUSED);
        return;
      }
      toast(error.message, "error");
    } finally {
      button.disabled = false;
      tick();
    }
  }

  function toast(message, tone) {
    const node = element("div", `toast toast-${tone}`, message);
    byId("toasts").append(node);
    window.setTimeout(() => node.classList.add("toast-leaving"), 5000);
    window.setTimeout(() => node.remove(), 5400);
  }

  function showBanner(message) {
    const banner = byId("banner");
    banner.textContent = message;
    banner.hidden = false;
  }

  function hideBanner() {
    byId("banner").hidden = true;
  }

  // -- start ---------------------------------------------------------------------------------------

  function start() {
    byId("login-form").addEventListener("submit", submitKey);
    byId("change-key").addEventListener("click", () => signOut(""));
    byId("resume-sending").addEventListener("click", () => resumeSending());
    for (const button of byId("window-buttons").querySelectorAll("button")) {
      button.addEventListener("click", () => {
        selectWindow(Number(button.dataset.seconds));
        tick();
      });
    }
    selectWindow([60, 300, 600].includes(state.windowSeconds) ? state.windowSeconds : 300);
    let resizeFrame = 0;
    window.addEventListener("resize", () => {
      window.cancelAnimationFrame(resizeFrame);
      resizeFrame = window.requestAnimationFrame(drawChart);
    });
    applyScopes([]);
    if (state.key === null) showLogin("");
    else showDashboard();
    tick();
  }

  start();
})();
