"""The chat page served at ``/`` by ``rlft serve``: plain HTML and JavaScript, no external assets.

Sign in with a token (kept in ``sessionStorage`` for the tab, as the annotation page does),
consent, chat; rate the latest answer with a thumb, or ask for another answer and pick the
better of the two (sent as pairwise feedback). Model text is always inserted with
``textContent``, never as HTML.
"""

from rlft.feedback.page import with_shared_parts

CHAT_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rlft chat</title>
<style>
@@BASE_CSS@@  body { font-family: system-ui, sans-serif; max-width: 900px; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  pre { white-space: pre-wrap; word-wrap: break-word; background: #f6f6f6; padding: .7rem; border-radius: 6px; margin: .2rem 0 .6rem; }
  .user pre { background: #e8f0fe; }
  .role { font-weight: 600; font-size: .85rem; color: #555; }
  .row { display: flex; gap: 1rem; }
  .col { flex: 1; min-width: 0; }
  button { font-size: 1rem; padding: .45rem .9rem; margin: .3rem .4rem 0 0; cursor: pointer; }
  textarea { width: 100%; min-height: 4rem; font: inherit; margin-top: .6rem; }
</style>
</head>
<body>
<h1>rlft chat</h1>
<div id="who"></div>

@@LOGIN_SECTION@@

<section id="consent" class="hidden">
  <p id="consent-text"></p>
  <button id="agree">I agree</button>
  <button id="skip">Chat without storing anything (no feedback)</button>
</section>

<section id="chat" class="hidden">
  <div id="transcript"></div>
  <div id="answer-bar" class="hidden">
    <button id="up" title="A good answer">&#128077; Good</button>
    <button id="down" title="A bad answer">&#128078; Bad</button>
    <button id="again">Another answer</button>
  </div>
  <div id="compare" class="hidden">
    <p>Which answer is better?</p>
    <div class="row">
      <div class="col"><div class="role">Answer 1</div><pre id="first"></pre><button data-pick="0">Answer 1 is better</button></div>
      <div class="col"><div class="role">Answer 2</div><pre id="second"></pre><button data-pick="1">Answer 2 is better</button></div>
    </div>
  </div>
  <textarea id="message" placeholder="Your message (Ctrl+Enter sends)"></textarea>
  <button id="send">Send</button>
</section>
<div id="status" role="status"></div>

<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("rlft_serve_token") || "";
let model = "";
let consented = false;
let history = [];        // the conversation sent to the model
let current = null;      // {id, text} of the latest answer, not yet in history
let pair = null;         // [answer, answer] while the user compares two
let busy = false;

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function show(section) {
  for (const id of ["login", "consent", "chat"]) $(id).classList.toggle("hidden", id !== section);
}

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    sessionStorage.removeItem("rlft_serve_token");
    show("login");
    throw new Error("Unknown token: check it and sign in again.");
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return res.status === 204 ? null : res.json();
}

async function signIn() {
  token = $("token").value.trim() || token;
  try {
    const me = await api("GET", "/v1/me");
    sessionStorage.setItem("rlft_serve_token", token);
    model = me.model;
    consented = me.consented;
    $("who").textContent = "Signed in as " + me.name + " - model " + me.model + " v" + me.model_version +
      (me.adapter ? " with your personal adapter" : "");
    if (!consented) { $("consent-text").textContent = me.consent_text; show("consent"); return; }
    show("chat");
  } catch (err) { status(err.message, true); }
}

async function agree() {
  try { await api("POST", "/v1/consent"); consented = true; show("chat"); status(""); }
  catch (err) { status(err.message, true); }
}

function render() {
  const box = $("transcript");
  box.textContent = "";
  const shown = current ? history.concat([{ role: "assistant", content: current.text }]) : history;
  for (const m of shown) {
    const div = document.createElement("div");
    div.className = m.role;
    const label = document.createElement("div");
    label.className = "role";
    label.textContent = m.role === "user" ? "You" : "Model";
    const pre = document.createElement("pre");
    pre.textContent = m.content;
    div.append(label, pre);
    box.append(div);
  }
  $("answer-bar").classList.toggle("hidden", !current || pair !== null);
  for (const id of ["up", "down", "again"]) $(id).disabled = !consented;
  $("compare").classList.toggle("hidden", pair === null);
  if (pair) { $("first").textContent = pair[0].text; $("second").textContent = pair[1].text; }
}

async function ask() {
  const data = await api("POST", "/v1/chat/completions", { model: model, messages: history });
  return { id: data.id, text: data.choices[0].message.content, version: data.model_version };
}

async function guarded(work) {
  if (busy) return;
  busy = true;
  try { await work(); } catch (err) { status(err.message, true); } finally { busy = false; render(); }
}

function send() {
  const text = $("message").value.trim();
  if (!text) return;
  return guarded(async () => {
    if (current) history.push({ role: "assistant", content: current.text });
    history.push({ role: "user", content: text });
    current = null;
    pair = null;
    $("message").value = "";
    render();
    status("Thinking...");
    try { current = await ask(); }
    catch (err) { history.pop(); $("message").value = text; throw err; }
    status("Answered by model version " + current.version + ".");
  });
}

function rate(rating) {
  return guarded(async () => {
    const res = await api("POST", "/v1/feedback", { response_id: current.id, rating: rating });
    status((rating === "up" ? "Thanks: marked good." : "Thanks: marked bad.") + (res.replaced ? " (vote changed)" : ""));
  });
}

function again() {
  return guarded(async () => {
    status("Asking again...");
    const other = await ask();
    pair = [current, other];
    status("Pick the better answer.");
  });
}

function pick(which) {
  return guarded(async () => {
    const chosen = pair[which];
    await api("POST", "/v1/feedback", { response_ids: [pair[0].id, pair[1].id], preferred: chosen.id });
    current = chosen;
    pair = null;
    status("Thanks: answer " + (which + 1) + " kept.");
  });
}

$("signin").addEventListener("click", signIn);
$("token").addEventListener("keydown", (ev) => { if (ev.key === "Enter") signIn(); });
$("agree").addEventListener("click", agree);
$("skip").addEventListener("click", () => { show("chat"); render(); });
$("send").addEventListener("click", send);
$("message").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(); });
$("up").addEventListener("click", () => rate("up"));
$("down").addEventListener("click", () => rate("down"));
$("again").addEventListener("click", again);
for (const b of document.querySelectorAll("[data-pick]")) b.addEventListener("click", () => pick(Number(b.dataset.pick)));
if (token) signIn();
</script>
</body>
</html>
"""
CHAT_PAGE = with_shared_parts(CHAT_PAGE)
