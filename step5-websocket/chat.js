// The whole client: join with a name, show what the server sends, send
// what you type, and reconnect (waiting longer each time) if the
// connection drops. Everything from the server is shown with textContent,
// never innerHTML, so a message is always text, never markup.
const $ = (id) => document.getElementById(id);
let ws = null;       // the current connection
let name = "";       // the name we asked for
let joined = false;  // has the server welcomed us?
let retryDelay = 1;  // seconds before the next reconnect

function show(author, body, notice) {
  const li = document.createElement("li");
  if (notice) {
    li.className = "notice";
    li.textContent = body;
  } else {
    const who = document.createElement("b");
    who.textContent = author;
    li.append(who, body);
  }
  $("log").append(li);
  li.scrollIntoView();
}

function setState(text, down) {
  $("state").textContent = text;
  $("state").className = down ? "down" : "";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/ws");
  setState("connecting…", true);
  ws.onopen = () => {
    setState("connected", false);
    ws.send(JSON.stringify({ body: name }));  // the first frame is our name
  };
  ws.onmessage = (e) => {
    // A frame holds a JSON array: every message waiting when it was sent.
    for (const m of JSON.parse(e.data)) {
      switch (m.event) {
        case "welcome":           // history follows: start a fresh log
          joined = true;
          retryDelay = 1;
          $("log").replaceChildren();
          $("error").textContent = "";
          $("join").hidden = true;
          $("say").hidden = false;
          $("text").focus();
          show("", "you joined as " + m.body, true);
          break;
        case "refused":           // bad or taken name: ask again
          joined = false;
          $("error").textContent = m.body;
          $("join").hidden = false;
          $("say").hidden = true;
          ws.close();
          break;
        case "arrived": show("", m.body + " joined", true); break;
        case "left": show("", m.body + " left", true); break;
        case "bye": show("", m.body, true); break;
        default: show(m.author, m.body, false);
      }
    }
  };
  ws.onclose = () => {
    if (!joined) { setState("not connected", true); return; }
    setState("disconnected, retrying in " + retryDelay + "s", true);
    setTimeout(connect, retryDelay * 1000);
    retryDelay = Math.min(retryDelay * 2, 30);
  };
}

$("join").onsubmit = (e) => {
  e.preventDefault();
  name = $("name").value.trim();
  joined = false;
  connect();
};

$("say").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (text.trim() === "" || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({ body: text }));
  $("text").value = "";
};
