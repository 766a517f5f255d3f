// The dashboard: a signed-in wallet's project as it happens. The live table
// follows the service's event stream; the rest (rooms, recordings, webhooks,
// the chart's history) is fetched on sign-in, again when an event says it
// changed, and once a minute.
//
// Whatever the service returns is put on the page as text (textContent, DOM
// attributes), never parsed as HTML: room and peer metadata are whatever the
// room's creator or a peer token's holder wrote. The page's policy (CSP)
// allows no inline script either.
//
// Uses `signin` from signin.js (loaded first, deferred).

const $ = (id) => document.getElementById(id);
const SDK = "/api/v2/sdk";
const SVG = "http://www.w3.org/2000/svg";
const MINUTE = 60_000;
// The stream carries a comment every 15 s: three missed, and the connection
// is taken as dead even if the socket has not noticed (a proxy dropped it, the
// laptop slept), and a new one is made.
const SILENCE_MS = 45_000;
const RETRY_FIRST_MS = 1_000;
const RETRY_MOST_MS = 30_000;
const ROOMS_SHOWN = 20;
const SESSIONS_SHOWN = 5;
const RECORDINGS_SHOWN = 20;

// The account session's token: in memory only, so that nothing else on this
// origin can read it later; a reload asks the wallet again.
let session = null;
// Aborted on sign-out: every fetch, the stream and the timers of a session.
let running = null;
let streamUp = false;
let snapshots = 0; // how many the stream has sent this session
const live = new Map(); // roomId → its item of the live list
const roomViews = new Map(); // roomId → its <details> in the rooms section
const timers = new Map(); // what is due to be reloaded → its timeout
let points = []; // the chart: [{at, peers}], oldest first, the last one now

// --- showing things -------------------------------------------------------

function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : element("td", String(cell)));
  return tr;
}

function when(ms) {
  if (ms === null || ms === undefined) return "—";
  const date = new Date(ms);
  return date.toDateString() === new Date().toDateString() ? date.toLocaleTimeString() : date.toLocaleString();
}

function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function lasted(ms) {
  const minutes = Math.round(ms / MINUTE);
  if (minutes < 1) return `${Math.round(ms / 1000)} s`;
  return minutes < 120 ? `${minutes} min` : `${(ms / 3_600_000).toFixed(1)} h`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

// A download link, but only to http(s): anything else (javascript:, data:)
// is shown as text.
function link(url, text) {
  let parsed = null;
  try {
    parsed = new URL(url, location.href);
  } catch {
    // not a URL at all
  }
  if (!parsed || (parsed.protocol !== "https:" && parsed.protocol !== "http:")) return element("span", text);
  const a = element("a", text);
  a.href = parsed.href;
  a.download = "";
  a.rel = "noopener noreferrer";
  return a;
}

// A peer's metadata is a string its token gave, by convention JSON with a
// displayName; shown as that name, or else as the start of the string.
function peerName(metadata) {
  if (typeof metadata !== "string") return "";
  try {
    const value = JSON.parse(metadata);
    if (value && typeof value.displayName === "string" && value.displayName) return value.displayName;
  } catch {
    // not JSON: shown as it is
  }
  return metadata.length > 60 ? `${metadata.slice(0, 60)}…` : metadata;
}

function roomTitle(room) {
  const title = room.metadata && room.metadata.title;
  return typeof title === "string" ? title : "";
}

// --- talking to the service -------------------------------------------------

async function get(path, signal) {
  try {
    return await signin.api(path, { token: session, signal });
  } catch (error) {
    if (error.status === 401 && !signal.aborted) end("Your sign-in has ended: connect your wallet again.", true);
    throw error;
  }
}

// Runs one of the loaders below; a failure is said, not thrown, and nothing
// is said once the person has signed out.
async function load(loader, what) {
  const signal = running && running.signal;
  if (!signal || signal.aborted) return;
  try {
    await loader(signal);
  } catch (error) {
    if (!signal.aborted) signin.say(`Could not load ${what}: ${error.message}`, true);
  }
}

// Loads `loader` in `ms`, once however often it is asked for meanwhile: a
// burst of events makes one request, not one each.
function soon(key, ms, loader, what) {
  if (timers.has(key)) return;
  timers.set(
    key,
    setTimeout(() => {
      timers.delete(key);
      load(loader, what);
    }, ms),
  );
}

// --- the live table ---------------------------------------------------------

function showLive() {
  const items = [...live.values()].sort((a, b) => a.startTime - b.startTime || a.roomId.localeCompare(b.roomId));
  const rows = document.createDocumentFragment();
  let peers = 0;
  for (const item of items) {
    const tr = row([
      element("td", item.roomId, "room"),
      element("td", when(item.startTime)),
      element("td", String(item.currentPeerCount), "peers"),
      element("td", String(item.recordingCount), "recordings"),
      element("td", String(item.livestreamCount), "livestreams"),
    ]);
    tr.dataset.roomId = item.roomId;
    rows.append(tr);
    peers += item.currentPeerCount;
  }
  $("live-rows").replaceChildren(rows);
  $("live-empty").hidden = items.length > 0;
  $("live-total").textContent = items.length ? `${count(items.length, "room")}, ${count(peers, "peer")}` : "";
  for (const [roomId, view] of roomViews) view.querySelector(".badge").hidden = !live.has(roomId);
  if (streamUp) setNow(peers);
}

// One event of the stream (see the API reference: the live event stream).
function onEvent({ type, data }) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return; // overflow and the like carry no JSON; the stream ends after them
  }
  if (!payload || typeof payload !== "object") return;
  if (type === "snapshot") {
    live.clear();
    for (const item of payload.liveSessions) live.set(item.roomId, item);
    showLive();
    // A snapshot after the first means a gap the service could not replay:
    // anything may have changed meanwhile.
    if (snapshots++ > 0) loadAll();
    return;
  }
  if (type === "live-session:updated" && payload.currentPeerCount > 0) {
    live.set(payload.roomId, payload);
    showLive();
  } else if (type === "live-session:removed" || type === "live-session:updated" || type === "meeting:ended") {
    // Removed: the last peer left, and the room leaves the list at once (its
    // session may still go on if someone comes back within the grace period).
    // A room with nobody in it, or whose session ended, is not live either.
    live.delete(payload.roomId);
    showLive();
  }
  const roomId = payload.roomId;
  if (typeof roomId === "string") {
    if (roomViews.has(roomId)) {
      const view = roomViews.get(roomId);
      if (view.open) soon(`room ${roomId}`, 500, (signal) => loadRoom(view, roomId, signal), `room ${roomId}`);
    } else {
      soon("rooms", 500, loadRooms, "rooms");
    }
  }
  if (type.startsWith("recording:")) soon("recordings", 1000, loadRecordings, "recordings");
  // Events are what webhooks deliver: their last delivery changes soon after.
  soon("webhooks", 2000, loadWebhooks, "webhooks");
}

function showStream(up, text = up ? "● live" : "reconnecting…") {
  streamUp = up;
  $("stream-state").hidden = false;
  $("stream-state").textContent = text;
  $("stream-state").className = up ? "stream up" : "stream down";
}

// The events of one response body: {type, data, id}, as an EventSource would
// dispatch them (https://html.spec.whatwg.org/multipage/server-sent-events.html).
// EventSource itself cannot send the Authorization header, hence this.
async function* readEvents(body, heard) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let type = "";
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      heard();
      buffer += decoder.decode(value, { stream: true });
      let end;
      // A line ends at \n, \r\n or \r; a \r last in the buffer waits for
      // the next chunk, which may begin with its \n.
      while ((end = buffer.search(/\r\n|\n|\r(?!$)/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { type: type || "message", data: data.join("\n"), id };
          type = "";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "event") type = text;
          else if (field === "data") data.push(text);
          else if (field === "id" && !text.includes("\0")) id = text;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Follows the live event stream until sign-out, reconnecting after a drop
// with Last-Event-ID, so that the service replays what was missed (or sends
// a fresh snapshot when it cannot).
async function follow(signal) {
  let lastEventId = null;
  let retry = RETRY_FIRST_MS;
  while (!signal.aborted) {
    const connection = new AbortController();
    const drop = () => connection.abort();
    signal.addEventListener("abort", drop);
    let silence = null;
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(drop, SILENCE_MS);
    };
    try {
      const headers = { authorization: `Bearer ${session}`, accept: "text/event-stream" };
      if (lastEventId !== null) headers["last-event-id"] = lastEventId;
      heard();
      const response = await fetch(`${SDK}/live-sessions/events`, {
        headers,
        signal: connection.signal,
        cache: "no-store",
      });
      if (response.status === 401) {
        end("Your sign-in has ended: connect your wallet again.", true);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      showStream(true);
      for await (const event of readEvents(response.body, heard)) {
        if (event.id !== null) lastEventId = event.id;
        // Reset only once events flow: a stream that is cut as soon as it
        // opens is retried ever more slowly.
        retry = RETRY_FIRST_MS;
        onEvent(event);
      }
    } catch {
      // Dropped, silent too long, refused, or signed out: see below.
    } finally {
      clearTimeout(silence);
      signal.removeEventListener("abort", drop);
    }
    if (signal.aborted) return;
    showStream(false);
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, retry);
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
    retry = Math.min(retry * 2, RETRY_MOST_MS);
  }
}

// --- the chart ----------------------------------------------------------------

async function loadChart(signal) {
  const answer = await get(`${SDK}/metrics/concurrent-peers`, signal);
  points = answer.points.map((point) => ({ ...point }));
  if (streamUp && points.length) {
    // The stream knows now better than a request that may have crossed an event.
    points[points.length - 1].peers = [...live.values()].reduce((sum, item) => sum + item.currentPeerCount, 0);
  }
  drawChart();
}

function setNow(peers) {
  if (!points.length) return;
  points[points.length - 1].peers = peers;
  drawChart();
}

function svg(tag, attributes, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.textContent = text;
  return node;
}

// Drawn by hand in SVG: no chart library, nothing fetched from elsewhere.
function drawChart() {
  const [width, height, left, right, top, bottom] = [640, 180, 40, 12, 12, 26];
  if (!points.length) return;
  const peak = Math.max(0, ...points.map((point) => point.peers));
  const most = Math.max(2, peak + (peak % 2)); // even, so that its half is a whole number
  const first = points[0].at;
  const span = Math.max(points[points.length - 1].at - first, 1);
  const x = (at) => (left + ((at - first) / span) * (width - left - right)).toFixed(1);
  const y = (peers) => (top + (1 - peers / most) * (height - top - bottom)).toFixed(1);
  const line = points.map((point) => `${x(point.at)},${y(point.peers)}`).join(" ");
  $("chart-line").setAttribute("points", line);
  $("chart-area").setAttribute("points", `${x(first)},${y(0)} ${line} ${x(first + span)},${y(0)}`);
  const grid = document.createDocumentFragment();
  for (const peers of [0, most / 2, most]) {
    grid.append(svg("line", { x1: left, x2: width - right, y1: y(peers), y2: y(peers), class: "rule" }));
    grid.append(svg("text", { x: left - 6, y: y(peers), class: "tick y" }, String(peers)));
  }
  for (const [at, label] of [
    [first, "1 h ago"],
    [first + span / 2, "30 min ago"],
    [first + span, "now"],
  ]) {
    grid.append(svg("text", { x: x(at), y: height - 6, class: "tick x" }, label));
  }
  $("chart-grid").replaceChildren(grid);
  $("peers-chart").dataset.points = String(points.length);
  $("chart-summary").textContent = `now ${points[points.length - 1].peers}, most ${peak}`;
}

// --- rooms, their sessions and who took part -----------------------------------

async function loadRooms(signal) {
  const { rooms } = await get(`${SDK}/rooms/get-rooms?limit=${ROOMS_SHOWN}`, signal);
  if (signal.aborted) return;
  const list = document.createDocumentFragment();
  const shown = new Set();
  for (const room of rooms) {
    shown.add(room.roomId);
    // An open room stays open, with what it shows, across reloads.
    let view = roomViews.get(room.roomId);
    if (!view) {
      view = roomView(room);
      roomViews.set(room.roomId, view);
    }
    view.querySelector(".title").textContent = roomTitle(room);
    view.querySelector(".badge").hidden = !live.has(room.roomId);
    list.append(view);
  }
  for (const roomId of [...roomViews.keys()]) if (!shown.has(roomId)) roomViews.delete(roomId);
  $("room-list").replaceChildren(list);
  $("rooms-empty").hidden = rooms.length > 0;
}

function roomView(room) {
  const view = document.createElement("details");
  view.dataset.roomId = room.roomId;
  const summary = document.createElement("summary");
  summary.append(
    element("code", room.roomId),
    " ",
    element("span", "", "title"),
    " ",
    element("span", "live", "badge"),
    " ",
    element("small", `created ${when(room.createdAt)}`),
  );
  view.append(summary, element("div", "Loading…", "sessions"));
  view.addEventListener("toggle", () => {
    if (view.open) load((signal) => loadRoom(view, room.roomId, signal), `room ${room.roomId}`);
  });
  return view;
}

async function loadRoom(view, roomId, signal) {
  const query = new URLSearchParams({ roomId, limit: String(SESSIONS_SHOWN) });
  const { sessions } = await get(`${SDK}/rooms/session-details?${query}`, signal);
  const lists = await Promise.all(
    sessions.map((s) => get(`${SDK}/rooms/participant-list?sessionId=${encodeURIComponent(s.sessionId)}`, signal)),
  );
  if (signal.aborted) return;
  const shown = document.createDocumentFragment();
  if (!sessions.length) shown.append(element("p", "No sessions yet.", "empty"));
  sessions.forEach((s, i) => {
    const ended = s.endTime === null ? "still going" : `ended ${when(s.endTime)}, ${lasted(s.endTime - s.startTime)}`;
    shown.append(element("h3", `Session from ${when(s.startTime)}, ${ended}`));
    const table = document.createElement("table");
    const head = row([element("th", "Peer"), element("th", "Name"), element("th", "Joined"), element("th", "Left")]);
    const body = document.createElement("tbody");
    for (const p of lists[i].participants) {
      const left = p.exitTime === undefined ? "still in" : when(p.exitTime);
      body.append(row([element("td", p.peerId, "peer"), peerName(p.metadata) || "—", when(p.joinTime), left]));
    }
    const thead = document.createElement("thead");
    thead.append(head);
    table.append(thead, body);
    shown.append(table);
  });
  view.querySelector(".sessions").replaceChildren(shown);
}

// --- recordings and webhooks ---------------------------------------------------

async function loadRecordings(signal) {
  const { recordings } = await get(`${SDK}/recordings?limit=${RECORDINGS_SHOWN}`, signal);
  if (signal.aborted) return;
  const rows = document.createDocumentFragment();
  for (const recording of recordings) {
    const links = element("td");
    links.append(link(recording.recordingUrl, "timeline"));
    if (recording.mediaUrl) links.append(" · ", link(recording.mediaUrl, "media"));
    if (recording.failedReason) links.append(element("span", ` (ended early: ${recording.failedReason})`, "error"));
    let size = bytes(recording.recordingSize);
    if (recording.mediaSize) size += ` + ${bytes(recording.mediaSize)}`;
    rows.append(row([element("td", recording.id, "recording"), size, links]));
  }
  $("recording-rows").replaceChildren(rows);
  $("recordings-empty").hidden = recordings.length > 0;
}

function lastDelivery(delivery) {
  if (!delivery) return "none yet";
  const outcome = delivery.error ? `failed: ${delivery.error}` : `HTTP ${delivery.responseStatus}`;
  return `${when(delivery.at)}, ${outcome}`;
}

async function loadWebhooks(signal) {
  const { webhooks } = await get(`${SDK}/webhooks`, signal);
  if (signal.aborted) return;
  const rows = document.createDocumentFragment();
  for (const hook of webhooks) {
    const events = Array.isArray(hook.events) && hook.events.length ? hook.events.join(", ") : "all";
    const tr = row([
      hook.name || "—",
      element("td", hook.url, "url"),
      events,
      element("td", hook.status, `status ${hook.status}`),
      String(hook.pending),
      element("td", lastDelivery(hook.lastDelivery), "delivery"),
    ]);
    tr.dataset.webhookId = hook.id;
    rows.append(tr);
  }
  $("webhook-rows").replaceChildren(rows);
  $("webhooks-empty").hidden = webhooks.length > 0;
}

// --- signing in and out ----------------------------------------------------------

function loadAll() {
  load(loadChart, "the chart");
  load(loadRooms, "rooms");
  load(loadRecordings, "recordings");
  load(loadWebhooks, "webhooks");
}

async function connect() {
  const result = await signin.signIn();
  if (!result) return;
  session = result.token;
  running = new AbortController();
  $("project").textContent = `Project ${result.projectId}`;
  $("connect").hidden = true;
  $("sign-out").hidden = false;
  $("intro").hidden = true;
  $("dashboard").hidden = false;
  showStream(false, "connecting…");
  follow(running.signal);
  loadAll();
  // The chart's minutes move on, recordings finish and deliveries happen
  // with no event to say so.
  const minutely = setInterval(loadAll, MINUTE);
  running.signal.addEventListener("abort", () => clearInterval(minutely));
}

function end(message, isError = false) {
  if (running) running.abort();
  running = null;
  session = null;
  for (const timer of timers.values()) clearTimeout(timer);
  timers.clear();
  live.clear();
  roomViews.clear();
  points = [];
  streamUp = false;
  snapshots = 0;
  $("chart-line").setAttribute("points", "");
  $("chart-area").setAttribute("points", "");
  for (const id of ["live-rows", "room-list", "recording-rows", "webhook-rows", "chart-grid"]) $(id).replaceChildren();
  $("dashboard").hidden = true;
  $("stream-state").hidden = true;
  $("sign-out").hidden = true;
  $("connect").hidden = false;
  $("intro").hidden = false;
  $("project").textContent = "";
  signin.say(message, isError);
}

$("connect").addEventListener("click", connect);
$("sign-out").addEventListener("click", async () => {
  const token = session;
  end("Signed out. Your API keys keep working until you revoke them.");
  await signin.signOut(token);
});
