// The live dashboard: plain JavaScript, no build step, and no request to any host but the push gateway that served
// it (the page's Content-Security-Policy says so too). The leaderboard follows the board's SSE stream: a snapshot,
// then update frames whose members it applies as absolute totals; the browser's EventSource reconnects by itself
// after a network drop and sends the last sequence as Last-Event-ID, so the stream resumes without a reload.
"use strict";

const TOP = 20;

// ---- Leaderboard state, kept as the server orders boards: score descending, ties by member descending. ----

/** The board being shown: its period, the members known (top of the board), and the last sequence applied. */
const board = { stream: null, period: null, entries: new Map(), previousRanks: new Map(), sequence: null, members: 0 };

function boardPath(window, dimension, value) {
  return "/v1/streams/sse/" + encodeURIComponent(window) + "/" + encodeURIComponent(dimension) + (value ? "/" + encodeURIComponent(value) : "");
}

/** Competition ranks ("1224"): equal scores share a rank. */
function ranked(entries) {
  const sorted = [...entries.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? 1 : a[0] > b[0] ? -1 : 0));
  let rank = 0, previous = null;
  return sorted.map(([userId, score], index) => {
    if (score !== previous) { rank = index + 1; previous = score; }
    return { userId, score, rank };
  });
}

function applySnapshot(frame) {
  const page = frame.page || {};
  board.period = page.period || null;
  board.members = page.members || 0;
  board.entries = new Map((page.entries || []).map((entry) => [entry.userId, entry.score]));
  board.sequence = frame.sequence;
  render(new Set());
}

function applyUpdate(frame) {
  const update = frame.update || {};
  // A new period (a new day, week or month) is a new board: start it afresh.
  if (board.period !== null && update.period && update.period !== board.period) {
    board.entries = new Map();
    board.members = 0;
  }
  if (update.period) board.period = update.period;
  const changed = new Set();
  // Frames carry a board's changed members; a push gateway from before coalescing sent one member per frame.
  const members = update.members || (update.userId ? [{ userId: update.userId, total: update.total, rank: update.rank }] : []);
  for (const member of members) {
    if (member.removed) {
      // Off the board (a ban): its row goes, everyone below moves up.
      if (board.entries.delete(member.userId)) board.members = Math.max(0, board.members - 1);
      continue;
    }
    if (!board.entries.has(member.userId)) board.members += 1;
    board.entries.set(member.userId, member.total);
    changed.add(member.userId);
  }
  board.sequence = frame.sequence;
  // Keep only the top: members below it come back through their own updates if they climb.
  const kept = ranked(board.entries).slice(0, TOP * 2);
  board.entries = new Map(kept.map((entry) => [entry.userId, entry.score]));
  activity.record(changed.size);
  render(changed);
}

function render(changed) {
  const rows = ranked(board.entries).slice(0, TOP);
  const body = document.querySelector("#leaderboard tbody");
  const fragment = document.createDocumentFragment();
  for (const entry of rows) {
    const row = document.createElement("tr");
    row.dataset.userId = entry.userId;
    row.dataset.rank = String(entry.rank);
    row.dataset.score = String(entry.score);
    const before = board.previousRanks.get(entry.userId);
    let arrow = "";
    if (before !== undefined && before > entry.rank) { row.classList.add("moved-up"); arrow = "▲" + (before - entry.rank); }
    if (before !== undefined && before < entry.rank) { row.classList.add("moved-down"); arrow = "▼" + (entry.rank - before); }
    if (before === undefined && board.previousRanks.size > 0) { row.classList.add("moved-up"); arrow = "new"; }
    if (changed.has(entry.userId)) row.classList.add("changed");
    row.append(cell(String(entry.rank)), cell(entry.userId), cell(entry.score.toLocaleString("en"), "number"),
               cell(arrow, arrow.startsWith("▼") ? "arrow-down" : "arrow-up"));
    fragment.append(row);
  }
  body.replaceChildren(fragment);
  board.previousRanks = new Map(rows.map((entry) => [entry.userId, entry.rank]));
  document.getElementById("board-name").textContent = board.stream + (board.period ? " · " + board.period : "");
  document.getElementById("board-members").textContent = String(board.members);
  document.getElementById("board-sequence").textContent = board.sequence === null ? "–" : String(board.sequence);
  document.getElementById("leaderboard").dataset.sequence = board.sequence === null ? "" : String(board.sequence);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// ---- The stream ----

let source = null;

function follow(window, dimension, value) {
  if (source) source.close();
  board.stream = [window, dimension, value].filter(Boolean).join(":");
  board.period = null;
  board.entries = new Map();
  board.previousRanks = new Map();
  board.sequence = null;
  board.members = 0;
  render(new Set());
  setProblem(null);
  setConnection("connecting");
  source = new EventSource(boardPath(window, dimension, value));
  wire(source, window, dimension, value);
}

/** Handles one EventSource: its frames, its drops, and a refusal. */
function wire(opened, window, dimension, value) {
  opened.onopen = () => { setConnection("live"); setProblem(null); retryDelay = 1000; };
  opened.addEventListener("snapshot", (event) => applySnapshot(JSON.parse(event.data)));
  opened.addEventListener("update", (event) => applyUpdate(JSON.parse(event.data)));
  // The server drops a client too far behind, or ends streams when it shuts down: EventSource reconnects by
  // itself with Last-Event-ID, and the server answers with what was missed or a fresh snapshot.
  opened.addEventListener("overflow", () => setConnection("reconnecting"));
  opened.addEventListener("end", () => setConnection("reconnecting"));
  opened.onerror = () => {
    if (opened.readyState !== EventSource.CLOSED) { setConnection("reconnecting"); return; }
    // Refused (an answer other than 200): the browser does not retry by itself. A busy or unavailable server (429,
    // 503) is tried again after a pause, resuming from the last sequence; a bad board is shown and left alone.
    problemOf(boardPath(window, dimension, value)).then(({ text, retry }) => {
      if (source !== opened) return;  // another board was picked meanwhile
      setProblem(text);
      if (!retry) { setConnection("closed"); return; }
      setConnection("reconnecting");
      setTimeout(() => { if (source === opened) reopen(window, dimension, value); }, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  };
}

let retryDelay = 1000;

/** Opens the stream again where the page left off (its last sequence), keeping what it shows. */
function reopen(window, dimension, value) {
  const since = board.sequence === null ? "" : "?since=" + board.sequence;
  source = new EventSource(boardPath(window, dimension, value) + since);
  wire(source, window, dimension, value);
}

/** Why the stream was refused, and whether trying again later can help. */
async function problemOf(path) {
  try {
    const response = await fetch(path, { headers: { Accept: "application/problem+json" } });
    if (response.ok) { response.body && response.body.cancel(); return { text: null, retry: true }; }
    const problem = await response.json();
    return { text: (problem.title || "refused") + (problem.detail ? ": " + problem.detail : ""), retry: response.status === 429 || response.status >= 500 };
  } catch (error) {
    return { text: "the push gateway does not answer", retry: true };
  }
}

function setConnection(state) {
  const element = document.getElementById("connection");
  element.dataset.state = state;
  element.textContent = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", closed: "stopped" }[state] || state;
}

function setProblem(text) {
  const element = document.getElementById("board-problem");
  element.hidden = !text;
  element.textContent = text || "";
}

// ---- Activity chart: member changes per second seen by this page, the last five minutes ----

const activity = {
  seconds: [],
  current: 0,
  total: 0,
  record(count) {
    this.current += count;
    this.total += count;
    document.getElementById("activity-chart").dataset.total = String(this.total);
  },
  tick() {
    this.seconds.push(this.current);
    if (this.seconds.length > 300) this.seconds.shift();
    document.getElementById("activity-now").textContent = String(this.current);
    document.getElementById("activity-total").textContent = String(this.total);
    this.current = 0;
    const max = Math.max(1, ...this.seconds);
    const step = 300 / Math.max(1, this.seconds.length - 1);
    const points = this.seconds.map((value, index) => (index * step).toFixed(1) + "," + (100 - (value / max) * 95).toFixed(1)).join(" ");
    const chart = document.getElementById("activity-chart");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points);
    chart.replaceChildren(line);
  },
};
setInterval(() => activity.tick(), 1000);

// ---- Whole-system analytics: the summary stream (one `summary` event a second), drawn as small SVG charts ----

const analytics = {
  eventsPerSecond: [],
  activeUsers: [],
  rejections: [],
  last: null,
  received: 0,
  changes: 0,
  apply(summary) {
    const previous = this.last;
    this.last = summary;
    this.received += 1;
    const day = summary.events ? summary.events.day || 0 : 0;
    // Events/s from two summaries' day totals (what was committed in between); across midnight, the server's own
    // estimate over the last 60 seconds.
    let rate = summary.eventsPerSecond || 0;
    if (previous && previous.events && summary.at > previous.at && day >= (previous.events.day || 0)) {
      rate = (day - (previous.events.day || 0)) / ((summary.at - previous.at) / 1000);
    }
    if (previous && previous.events && (previous.events.day || 0) !== day) this.changes += 1;
    push(this.eventsPerSecond, rate);
    push(this.activeUsers, summary.activeUsers ? summary.activeUsers.minute || 0 : 0);
    draw("events-chart", this.eventsPerSecond);
    draw("active-users-chart", this.activeUsers);
    setText("events-per-second", rate.toFixed(1));
    setText("events-today", day.toLocaleString("en"));
    setText("points-today", summary.points ? (summary.points.day || 0).toLocaleString("en") : "–");
    const active = summary.activeUsers || {};
    setText("active-minute", String(active.minute || 0));
    setText("active-hour", String(active.hour || 0));
    setText("active-day", String(active.day || 0));
    drawBars(summary.pointsByRegionLastHour || {});
    const actions = document.querySelector("#top-actions tbody");
    actions.replaceChildren(...((summary.topActions || {}).hour || []).map((figure) => {
      const row = document.createElement("tr");
      row.dataset.action = figure.action;
      row.append(cell(figure.action), cell(figure.events.toLocaleString("en"), "number"), cell(figure.points.toLocaleString("en"), "number"));
      return row;
    }));
    const lag = summary.lastFiveMinutesLag;
    const ms = (value) => (value === undefined || value === null ? "> last bucket" : "≤ " + value + " ms");
    setText("lag", lag && lag.count ? "p50 " + ms(lag.p50) + " · p90 " + ms(lag.p90) + " · p99 " + ms(lag.p99) + " (" + lag.count + " events)" : "no events");
    // Rejections: the refused requests the workers counted from the rejections topic, and by problem type.
    const rejections = summary.rejections || {};
    push(this.rejections, rejections.minute || 0);
    draw("rejections-chart", this.rejections);
    setText("rejections-minute", String(rejections.minute || 0));
    setText("rejections-hour", String(rejections.hour || 0));
    setText("rejections-day", String(rejections.day || 0));
    drawBars(summary.rejectionsByTypeLastHour || {}, "rejections-chart-by-type", "type");
    // What the browser test reads: the last figures shown, and how often they changed.
    const panel = document.getElementById("analytics-panel");
    panel.dataset.at = String(summary.at);
    panel.dataset.eventsDay = String(day);
    panel.dataset.activeDay = String(active.day || 0);
    panel.dataset.received = String(this.received);
    panel.dataset.changes = String(this.changes);
  },
};

function push(series, value) {
  series.push(value);
  if (series.length > 120) series.shift();
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

/** A polyline of the values, scaled to the chart's height. */
function draw(id, values) {
  const max = Math.max(1, ...values);
  const step = 300 / Math.max(1, values.length - 1);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.map((value, index) => (index * step).toFixed(1) + "," + (80 - (value / max) * 75).toFixed(1)).join(" "));
  document.getElementById(id).replaceChildren(line);
}

/** Horizontal bars of the largest values (points by region, rejections by type), each bar's key in data-<key>. */
function drawBars(byValue, id = "regions-chart", key = "region") {
  const entries = Object.entries(byValue).sort((a, b) => b[1] - a[1]).slice(0, 8);
  const max = Math.max(1, ...entries.map((entry) => entry[1]));
  document.getElementById(id).replaceChildren(...entries.map(([region, points]) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset[key] = region;
    bar.dataset.points = String(points);
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = ((points / max) * 100).toFixed(1) + "%";
    const label = document.createElement("span");
    label.textContent = region;
    const value = document.createElement("span");
    value.className = "number";
    value.textContent = points.toLocaleString("en");
    bar.append(label, fill, value);
    return bar;
  }));
}

function followAnalytics() {
  const state = document.getElementById("analytics-state");
  const stream = new EventSource("/v1/analytics/summary/stream");
  stream.onopen = () => { state.dataset.state = "live"; state.textContent = "live"; };
  stream.addEventListener("summary", (event) => analytics.apply(JSON.parse(event.data)));
  stream.addEventListener("unavailable", () => { state.dataset.state = "unavailable"; state.textContent = "analytics store unavailable"; });
  stream.onerror = () => {
    state.dataset.state = "reconnecting";
    state.textContent = "reconnecting…";
    // Refused (429, 503): the browser does not retry a refused EventSource by itself.
    if (stream.readyState === EventSource.CLOSED) setTimeout(followAnalytics, 2000);
  };
}

// ---- The fraud review feed (admin role only; the server checks the token, the page only hides the panel) ----

let fraudFeed = null;

/** Reads the admin SSE feed with fetch, since EventSource cannot send a bearer token. */
async function followFraudFlags(token) {
  if (fraudFeed) fraudFeed.abort();
  const controller = new AbortController();
  fraudFeed = controller;
  const state = document.getElementById("fraud-state");
  let delay = 1000;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch("/v1/admin/fraud-flags/stream", { headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" }, signal: controller.signal });
      if (response.status === 404) { state.dataset.state = "not-available"; state.textContent = "not available on this server"; return; }
      if (response.status === 401 || response.status === 403) { state.dataset.state = "refused"; state.textContent = "refused: an admin token is needed"; return; }
      if (!response.ok || !response.body) throw new Error("status " + response.status);
      state.dataset.state = "live";
      state.textContent = "live";
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += value;
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          const block = pending.slice(0, end);
          pending = pending.slice(end + 2);
          const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
          if (data) showFlag(data);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    state.dataset.state = "reconnecting";
    state.textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

function showFlag(data) {
  let text = data;
  try {
    const flag = JSON.parse(data);
    if (flag.type === "end" || flag.type === "heartbeat") return;
    const about = flag.flag || flag;
    text = [about.userId, about.rule || about.reason || about.kind, about.score !== undefined ? "score " + about.score : null].filter(Boolean).join(" · ") || data;
  } catch (error) {
    // Not JSON: shown as it came.
  }
  const list = document.getElementById("fraud-flags");
  const item = document.createElement("li");
  item.textContent = new Date().toLocaleTimeString() + " " + text;
  list.prepend(item);
  while (list.children.length > 100) list.lastChild.remove();
}

// ---- Signing in, and the personal channel (WebSocket: a browser's EventSource cannot send a bearer token) ----

let personal = null;
let personalRetry = 1000;

function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
  } catch (error) {
    return null;
  }
}

function signIn(token) {
  const claims = tokenClaims(token);
  const who = document.getElementById("who");
  if (!claims) { who.textContent = "that is not a JWT"; return; }
  sessionStorage.setItem("scoreboard.token", token);
  // What the page shows depends on the role; what the server sends depends on the token it checks.
  who.textContent = "signed in as " + claims.sub + " (" + (claims.role || "player") + ")";
  document.body.dataset.role = claims.role || "player";
  connectPersonal(token);
  const isAdmin = claims.role === "admin";
  document.getElementById("fraud-panel").hidden = !isAdmin;
  if (isAdmin) followFraudFlags(token);
  else if (fraudFeed) fraudFeed.abort();
}

function connectPersonal(token) {
  if (personal) personal.close();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  personal = new WebSocket(scheme + "//" + location.host + "/v1/streams/ws?access_token=" + encodeURIComponent(token));
  personal.onopen = () => { personalRetry = 1000; personal.send(JSON.stringify({ type: "subscribe", personal: true })); };
  personal.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "update") {
      const update = frame.update || {};
      for (const member of update.members || (update.userId ? [update] : [])) {
        if (member.removed) { notify(update.board + ": removed"); continue; }
        notify(update.board + ": " + member.total.toLocaleString("en") + " points" + (member.rank ? ", rank " + member.rank : ""));
      }
    } else if (frame.type === "error") {
      notify("refused: " + frame.problem + (frame.detail ? " (" + frame.detail + ")" : ""));
    }
  };
  personal.onclose = (event) => {
    // 1008: the token expired or was revoked, or a limit was crossed: signing in again is the way back.
    if (event.code === 1008 || sessionStorage.getItem("scoreboard.token") !== token) return;
    setTimeout(() => connectPersonal(token), personalRetry);
    personalRetry = Math.min(personalRetry * 2, 30000);
  };
}

function notify(text) {
  const list = document.getElementById("notifications");
  const item = document.createElement("li");
  item.textContent = new Date().toLocaleTimeString() + " " + text;
  list.prepend(item);
  while (list.children.length > 50) list.lastChild.remove();
}

// ---- Wiring ----

document.getElementById("board-picker").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const dimension = form.get("dimension");
  const value = dimension === "global" ? null : String(form.get("value") || "").trim();
  if (dimension !== "global" && !value) { setProblem("the " + dimension + " dimension needs a value"); return; }
  const params = new URLSearchParams({ window: form.get("window"), dimension });
  if (value) params.set("value", value);
  history.replaceState(null, "", "?" + params.toString());
  follow(form.get("window"), dimension, value);
});

document.querySelector("#board-picker select[name=dimension]").addEventListener("change", (event) => {
  document.querySelector("#board-picker input[name=value]").disabled = event.target.value === "global";
});

document.getElementById("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn(String(new FormData(event.target).get("token") || "").trim());
});

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("scoreboard.token");
  if (personal) personal.close();
  document.getElementById("who").textContent = "not signed in";
  delete document.body.dataset.role;
  document.getElementById("fraud-panel").hidden = true;
  if (fraudFeed) fraudFeed.abort();
});

// The board in the address (?window=&dimension=&value=), else the daily global board.
const query = new URLSearchParams(location.search);
const picker = document.getElementById("board-picker");
for (const name of ["window", "dimension", "value"]) {
  if (query.get(name)) picker.elements[name].value = query.get(name);
}
picker.elements.value.disabled = picker.elements.dimension.value === "global";
follow(picker.elements.window.value, picker.elements.dimension.value, picker.elements.dimension.value === "global" ? null : picker.elements.value.value);
followAnalytics();
const savedToken = sessionStorage.getItem("scoreboard.token");
if (savedToken) signIn(savedToken);
