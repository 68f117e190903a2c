// The whole client: join with a name, show what the server sends, send what
// you type, and reconnect by itself, keeping the log. What the server sends
// is shown with textContent, never innerHTML: a message is text, not markup.
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log");
let ws = null;          // the current connection
let name = "";          // the name we join with
let joined = false;     // has the server welcomed this connection?
let wasIn = false;      // were we ever welcomed? Then a drop means: rejoin
let retry = 1;          // seconds before the next try, doubled up to 10
let timer = 0;          // the next try
let unread = 0;         // messages that came while the tab was hidden
const queue = [];       // what was typed while disconnected, sent on rejoin
let people = new Set(); // who is in the room, us included
const seen = new Map(); // the last messages shown (as JSON), and how many times
let replay = new Map(); // of those, the ones a rejoin's history may repeat

function connect() {
  clearTimeout(timer);
  ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
  let opened = false;
  setState("connecting…", true);
  ws.onopen = () => { opened = true; send(name); }; // the first frame is our name
  // A frame holds a JSON array: every message waiting when it was sent.
  ws.onmessage = (e) => JSON.parse(e.data).forEach(receive);
  ws.onclose = () => {
    if (joined) note(null, "connection lost", "gap");
    joined = false;
    $("here").classList.add("stale");
    const why = opened ? "disconnected" : "cannot connect to the server";
    setState(`${why}, retrying in ${retry}s`, true);
    if (!wasIn) $("error").textContent = `${why}: trying again in ${retry}s`;
    timer = setTimeout(connect, retry * 1000);
    retry = Math.min(retry * 2, 10);
  };
}

function receive(m) {
  switch (m.event) {
    case "welcome": // m.here lists who else is here; the history follows
      name = m.body;
      joined = true;
      retry = 1;
      replay = new Map(seen);
      people = new Set([name, ...(m.here || [])]);
      showPeople();
      note(m.time, (wasIn ? "back, as " : "you joined as ") + name);
      wasIn = true;
      setState("connected", false);
      $("error").textContent = "";
      showForm("say");
      log.querySelectorAll(".pending").forEach((li) => li.remove());
      queue.splice(0).forEach(send);
      break;
    case "refused": // a bad or taken name: ask again
      $("error").textContent = m.body;
      stop("not connected");
      showForm("join");
      break;
    case "arrived":
      people.add(m.body);
      showPeople();
      note(m.time, m.body + " joined");
      break;
    case "left":
      people.delete(m.body);
      showPeople();
      note(m.time, m.body + " left");
      break;
    case "bye": // the server is about to close the connection, and says why
      note(m.time, "the server closed the connection: " + m.body);
      break;
    default:
      show(m);
  }
}

// show adds a chat message to the log, unless it is one the log already
// has that a rejoin's history repeats.
function show(m) {
  const key = JSON.stringify(m);
  if (replay.get(key) > 0) {
    replay.set(key, replay.get(key) - 1);
    return;
  }
  seen.set(key, (seen.get(key) || 0) + 1);
  // Only the last ones: a history is at most 128 KiB of JSON (maxHistory).
  if (seen.size > 2500) seen.delete(seen.keys().next().value);
  const li = el("li", "", m.author === name ? "msg mine" : "msg");
  li.append(stamp(m.time), " ", el("b", m.author), " ", ...linkify(m.body));
  if (document.hidden && m.author !== name) {
    unread++;
    document.title = `(${unread}) gochat`;
  }
  add(li);
}

// note adds a line from the page or the server, not from a person.
function note(time, text, kind = "notice") {
  const li = el("li", "", kind);
  li.append(stamp(time), " ", text);
  add(li);
}

// el makes an element holding text, as text: never as markup.
function el(tag, text, className = "") {
  return Object.assign(document.createElement(tag), { textContent: text, className });
}

// add appends li to the log, and scrolls to it if the reader was at the
// end. A reader who scrolled back keeps their place, and gets a button.
function add(li) {
  const atEnd = atBottom();
  log.append(li);
  if (atEnd || li.classList.contains("mine")) log.scrollTop = log.scrollHeight;
  else $("newer").hidden = false;
}

const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;

// stamp is the server's time (or, for the page's own notes, now) as hh:mm.
function stamp(time) {
  let d = new Date(time);
  if (!time || isNaN(d)) d = new Date(); // a note of the page's own, or a bad time
  const t = el("time", d.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" }));
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  return t;
}

// linkify returns text as text nodes and links, one per http or https URL:
// the links are built with DOM calls, so no text ever becomes markup, and
// no other scheme (javascript:, data:) ever becomes a link.
function linkify(text) {
  const parts = [];
  let at = 0;
  for (const url of text.matchAll(/https?:\/\/[^\s<>"]*[^\s<>"'.,;:!?)\]]/g)) {
    const a = el("a", url[0]);
    a.href = url[0];
    a.target = "_blank";
    a.rel = "noopener noreferrer"; // the new tab cannot reach this one
    parts.push(text.slice(at, url.index), a);
    at = url.index + url[0].length;
  }
  parts.push(text.slice(at));
  return parts;
}

function showPeople() {
  const names = [...people].sort(new Intl.Collator(undefined, { numeric: true }).compare);
  $("people").replaceChildren(...names.map((p) => el("li", p, p === name ? "me" : "")));
  $("count").textContent = people.size;
  $("here").classList.remove("stale");
}

function setState(text, down) {
  Object.assign($("state"), { textContent: text, className: down ? "down" : "" });
}

function showForm(id) {
  $("join").hidden = id !== "join";
  $("say").hidden = id !== "say";
  $("intro").hidden = wasIn;
  $("here").hidden = !wasIn;
  $(id === "join" ? "name" : "text").focus();
}

// stop closes the connection for good: no retry.
function stop(state) {
  clearTimeout(timer);
  if (ws) { ws.onclose = null; ws.close(); }
  setState(state, true);
}

// leave is our own /quit: the server hears it and hangs up, and the page
// does not rejoin (a dropped connection it would).
function leave() {
  if (joined) send("/quit");
  joined = wasIn = false;
  stop("not connected");
  note(null, "you left");
  showForm("join");
}

const send = (text) => ws.send(JSON.stringify({ body: text }));

$("join").onsubmit = (e) => {
  e.preventDefault();
  stop("not connected");
  name = $("name").value.trim();
  $("error").textContent = "";
  connect();
};

// Sent now, or, while disconnected, shown as waiting and sent on rejoin.
$("say").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (text.trim() === "") return;
  $("text").value = "";
  if (text.trim() === "/quit") return leave();
  if (joined) return send(text);
  queue.push(text);
  note(null, "not sent yet, will be sent once back: " + text, "notice pending");
};

log.onscroll = () => { if (atBottom()) $("newer").hidden = true; };
$("newer").onclick = () => { log.scrollTop = log.scrollHeight; };
document.onvisibilitychange = () => { if (!document.hidden) { unread = 0; document.title = "gochat"; } };
