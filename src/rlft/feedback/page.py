"""The annotation page: plain HTML and JavaScript, no build step, served at ``/``.

Kept as a Python string so it ships inside the package with no package-data rules. Text from the
database is always inserted with ``textContent``, never as HTML.
"""

# Shared with the chat page (rlft.serving.page): the basic look and the sign-in box.
BASE_CSS = """  h1 { font-size: 1.3rem; margin-bottom: .3rem; }
  .hidden { display: none; }
  #status { margin-top: .8rem; min-height: 1.3rem; color: #555; }
  #status.error { color: #b00020; }
"""
LOGIN_SECTION = """<section id="login">
  <p>Paste the token you were given (<code>rlft feedback add-annotator NAME</code> prints it).</p>
  <input id="token" type="password" size="60" autocomplete="off" aria-label="token">
  <button id="signin">Sign in</button>
</section>"""


def with_shared_parts(page: str) -> str:
    """``page`` with ``@@BASE_CSS@@`` and ``@@LOGIN_SECTION@@`` filled in."""
    return page.replace("@@BASE_CSS@@", BASE_CSS).replace("@@LOGIN_SECTION@@", LOGIN_SECTION)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rlft feedback</title>
<style>
@@BASE_CSS@@  body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  pre { white-space: pre-wrap; word-wrap: break-word; background: #f6f6f6; padding: .8rem; border-radius: 6px; margin: .3rem 0 0; }
  .row { display: flex; gap: 1rem; }
  .col { flex: 1; min-width: 0; }
  .label { font-weight: 600; margin-top: 1rem; }
  button { font-size: 1rem; padding: .5rem 1rem; margin: .6rem .4rem 0 0; cursor: pointer; }
  kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3rem; font-size: .85rem; }
  textarea { width: 100%; min-height: 3rem; margin-top: .8rem; font: inherit; }
</style>
</head>
<body>
<h1>rlft human feedback</h1>
<div id="who"></div>

@@LOGIN_SECTION@@

<section id="consent" class="hidden">
  <p id="consent-text"></p>
  <button id="agree">I agree</button>
</section>

<section id="judge" class="hidden">
  <div class="label">Prompt</div>
  <pre id="prompt"></pre>
  <div class="row" id="pair-view">
    <div class="col"><div class="label">Response 1</div><pre id="left"></pre></div>
    <div class="col"><div class="label">Response 2</div><pre id="right"></pre></div>
  </div>
  <div id="rating-view" class="hidden"><div class="label">Response</div><pre id="single"></pre></div>
  <div id="pair-buttons">
    <button data-pick="0">Response 1 is better <kbd>1</kbd>/<kbd>A</kbd></button>
    <button data-pick="1">Response 2 is better <kbd>2</kbd>/<kbd>B</kbd></button>
    <button data-pick="tie">Tie <kbd>3</kbd>/<kbd>T</kbd></button>
  </div>
  <div id="rating-buttons" class="hidden">
    <button data-rate="up">&#128077; Good <kbd>1</kbd>/<kbd>U</kbd></button>
    <button data-rate="down">&#128078; Bad <kbd>2</kbd>/<kbd>D</kbd></button>
  </div>
  <textarea id="comment" maxlength="2000" placeholder="Optional comment (shortcuts are off while typing here)"></textarea>
</section>
<section id="done" class="hidden"><p>No more items for you. Thank you!</p></section>
<div id="status" role="status"></div>

<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("rlft_token") || "";
let mode = "pair";
let current = null;      // the item on screen
let key = null;          // its idempotency key: one per item shown, reused by every retry
let busy = false;
let saved = 0;

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function show(section) {
  for (const id of ["login", "consent", "judge", "done"]) $(id).classList.toggle("hidden", id !== section);
}

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    sessionStorage.removeItem("rlft_token");
    show("login");
    throw Object.assign(new Error("Unknown token: check it and sign in again."), { final: true });
  }
  return res;
}

async function signIn() {
  token = $("token").value.trim() || token;
  try {
    const res = await api("GET", "/api/me");
    const me = await res.json();
    sessionStorage.setItem("rlft_token", token);
    mode = me.mode;
    $("who").textContent = "Signed in as " + me.name + " (" + (mode === "pair" ? "compare two responses" : "rate a response") + ")";
    if (!me.consented) {
      $("consent-text").textContent = me.consent_text;
      show("consent");
      return;
    }
    await loadNext();
  } catch (err) { status(err.message, true); }
}

async function agree() {
  try { await api("POST", "/api/consent"); await loadNext(); } catch (err) { status(err.message, true); }
}

async function loadNext() {
  const res = await api("GET", "/api/next?kind=" + mode);
  if (res.status === 204) { show("done"); return; }
  current = await res.json();
  key = newKey();
  $("prompt").textContent = current.prompt;
  $("comment").value = "";
  const pair = current.kind === "pair";
  $("pair-view").classList.toggle("hidden", !pair);
  $("pair-buttons").classList.toggle("hidden", !pair);
  $("rating-view").classList.toggle("hidden", pair);
  $("rating-buttons").classList.toggle("hidden", pair);
  if (pair) {
    $("left").textContent = current.options[0].text;
    $("right").textContent = current.options[1].text;
  } else {
    $("single").textContent = current.options[0].text;
  }
  show("judge");
}

async function submit(choice) {
  if (busy || !current) return;   // a double click while a submission is in flight is ignored
  busy = true;
  const body = { item_id: current.item_id, kind: current.kind, choice: choice, idempotency_key: key };
  if (current.kind === "rating") body.side = current.options[0].side;
  const comment = $("comment").value.trim();
  if (comment) body.comment = comment;
  try {
    for (let attempt = 0; ; attempt++) {   // retries reuse the same key, so they store once
      try {
        const res = await api("POST", "/api/judgements", body);
        if (res.ok) break;
        const detail = (await res.json()).detail;
        throw Object.assign(new Error(typeof detail === "string" ? detail : JSON.stringify(detail)), { final: true });
      } catch (err) {
        if (err.final || attempt >= 4) throw err;
        await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
      }
    }
  } catch (err) {
    status("Not saved: " + err.message, true);
    busy = false;
    return;
  }
  saved += 1;
  try {
    await loadNext();
    status("Saved (" + saved + " this session).");
  } catch (err) {
    status("Saved, but the next item did not load: " + err.message, true);
  } finally {
    busy = false;
  }
}

function pick(which) {
  if (which === "tie") return submit("tie");
  return submit(current.options[Number(which)].side);
}

document.addEventListener("keydown", (ev) => {
  if ($("judge").classList.contains("hidden") || ev.target === $("comment") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key.toLowerCase();
  const pair = current && current.kind === "pair";
  const action = pair
    ? { "1": "0", "a": "0", "2": "1", "b": "1", "3": "tie", "t": "tie" }[k]
    : { "1": "up", "u": "up", "2": "down", "d": "down" }[k];
  if (action === undefined) return;
  ev.preventDefault();
  pair ? pick(action) : submit(action);
});
$("signin").addEventListener("click", signIn);
$("token").addEventListener("keydown", (ev) => { if (ev.key === "Enter") signIn(); });
$("agree").addEventListener("click", agree);
for (const b of document.querySelectorAll("[data-pick]")) b.addEventListener("click", () => pick(b.dataset.pick));
for (const b of document.querySelectorAll("[data-rate]")) b.addEventListener("click", () => submit(b.dataset.rate));
if (token) signIn();
</script>
</body>
</html>
"""
PAGE = with_shared_parts(PAGE)
