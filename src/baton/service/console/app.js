/* Baton dispatch console — vanilla JS, no build step.
 *
 * State comes from the API once (users, flows, library, meetings) and is then kept live by the
 * WebSocket event stream: every event message carries the current view of the users it touches
 * and, on flow and ownership events, the flows in progress. Action forms are generated from the
 * flow library's parameter descriptions, so a flow added to the library appears here unchanged.
 * All text is inserted with textContent (never as HTML).
 */
"use strict";

const S = {
  me: null, users: new Map(), flows: [], library: [], meetings: [], groups: [],
  selected: null, sim: false, ws: null, wsRetry: 0, lastSeq: 0, formFlow: null,
  queue: null, mode: null, alarms: [], faults: [], floors: new Map(),
};
const PRIORITIES = [["ROUTINE", 0], ["PRIORITY", 10], ["IMMEDIATE", 20], ["FLASH", 30], ["FLASH_OVERRIDE", 40], ["EMERGENCY", 50]];
// Parameters that usually name the dispatcher acting (prefilled with the logged-in position).
const SELF_PARAMS = new Set(["dispatcher", "caller", "holder", "picker", "transferor"]);

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ------------------------------------------------------------------ API

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) { opts.headers["content-type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let data = null;
  const text = await r.text();
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (!r.ok) {
    const err = (data && data.error) || { id: "http-" + r.status, message: r.statusText, details: {} };
    const e = new Error(err.message); e.status = r.status; e.id = err.id; e.details = err.details;
    if (r.status === 401 && path !== "/api/login") showLogin();
    throw e;
  }
  return data;
}
const enc = encodeURIComponent;

function status(text, kind = "ok") {
  const s = $("#status"); s.textContent = text; s.className = kind;
}

// ------------------------------------------------------------------ login

function showLogin() {
  if (S.ws) { S.ws.onclose = null; S.ws.close(); S.ws = null; }
  $("#app").hidden = true; $("#login").hidden = false; $("#login-user").focus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    await api("POST", "/api/login", { user: $("#login-user").value, password: $("#login-password").value });
    S.password = $("#login-password").value;  // kept in memory only: the browser phone's digest
    $("#login-password").value = "";
    await enter();
  } catch (e) { $("#login-error").textContent = e.message; }
});

$("#logout").addEventListener("click", async () => {
  if (BatonPhone.state !== "off") BatonPhone.stop();
  S.password = null;
  try { await api("POST", "/api/logout"); } catch { /* already gone */ }
  showLogin();
});

async function enter() {
  S.me = await api("GET", "/api/me");
  const [users, flows, library, meetings, groups] = await Promise.all([
    api("GET", "/api/users"), api("GET", "/api/flows"), api("GET", "/api/library"),
    api("GET", "/api/meetings"), api("GET", "/api/groups"),
  ]);
  S.users = new Map(users.map((u) => [u.id, u]));
  S.flows = flows; S.library = library; S.meetings = meetings; S.groups = groups;
  // Which switch: asked of /api/health rather than by probing /api/sim/phones, whose 404 on
  // the SIP switch showed as an error in the browser's console at every login.
  try { S.sim = (await api("GET", "/api/health")).switch === "sim"; } catch { S.sim = false; }
  $("#login").hidden = true; $("#app").hidden = false;
  $("#me").textContent = `${S.me.name} (${S.me.user}) · ${S.me.role} · up to ${S.me.max_priority_name}`;
  const mine = S.users.get(S.me.user);
  setMode(localStorage.getItem("baton.mode") || (mine && mine.position ? "dispatcher" : "flows"));
  $("#audit-panel").hidden = !may("audit");
  $("#directory-panel").hidden = !may("provision");
  if (may("provision")) showDirectory();
  renderAll();
  refreshQueueSoon();
  refreshAlarms();
  connect();
  try { S.phone = await api("GET", "/api/phone"); } catch { S.phone = null; }
  $("#browser-phone").hidden = !S.phone;
}

// ------------------------------------------------------------------ the browser phone

const PHONE_STATES = {
  off: "off: your position's calls ring on your desk phone",
  asking: "waiting for the microphone…",
  "no-mic": "",
  connecting: "connecting…",
  ready: "ready: your calls ring here",
  ringing: "",
  calling: "",
  talking: "",
  failed: "",
};

function renderBrowserPhone(state, detail) {
  const p = $("#bp-state");
  p.dataset.state = state;
  if (state === "talking") p.dataset.peer = detail;
  p.className = state === "no-mic" || state === "failed" ? "error" : state === "ringing" ? "ringing" : "";
  p.textContent = state === "ringing" ? `incoming call from ${detail}`
    : state === "calling" ? `calling ${detail}…`
    : state === "talking" ? browserCallText(detail)
    : (PHONE_STATES[state] || state) + (detail && state !== "connecting" ? (PHONE_STATES[state] ? ` — ${detail}` : detail) : "");
  $("#bp-start").hidden = !["off", "no-mic", "failed"].includes(state);
  $("#bp-stop").hidden = ["off", "no-mic", "failed"].includes(state);
  $("#bp-answer").hidden = state !== "ringing";
  $("#bp-decline").hidden = state !== "ringing";
  $("#bp-hangup").hidden = state !== "talking" && state !== "calling";
  const live = !["off", "no-mic", "failed", "asking"].includes(state);
  if (live && $("#bp-headset").hidden) showHeadset();
  $("#bp-headset").hidden = !live;
  $("#bp-dial").hidden = !live;
  // In a call the dial pad's keys go to the other party (DTMF); otherwise they make a number.
  $("#bp-number-label").textContent = state === "talking" ? "Keys (sent in the call)" : "Number";
  $("#bp-call").hidden = state === "talking";
  $("#bp-erase").hidden = state === "talking";
  $("#bp-number").placeholder = state === "talking" ? "type or click keys" : "e.g. 1001";
  if (state !== "talking") $("#bp-sent").textContent = "";
  renderBrowserHold();
  if (state === "ringing") beep();
}

// Who the page's call is with now, from the position's live view rather than the INVITE's From:
// the SIP call stays the same while Baton puts other parties on it — after a transfer, the next
// queued caller on an always-on line, a conference.
function browserCallText(caller) {
  const me = S.me && S.users.get(S.me.user);
  const holding = S.me ? myHold() : null;
  if (holding) return `talking with ${userName(holding.args.held)} — on hold`;
  if (!me || !me.leg || me.leg.state !== "connected") return `talking with ${caller}`;
  if (me.partner) return `talking with ${userName(me.partner)}`;
  if (me.meeting) {
    const m = S.meetings.find((x) => x.id === me.meeting.id);
    const holder = m && m.holder ? m.holder.name : null;
    if (holder && PTT_FLOWS.has(flowKind(holder))) return `in ${groupTitle(holder)} (push-to-talk)`;
    const others = m ? m.members.map((x) => x.user).filter((u) => u !== me.id).map(userName) : [];
    return others.length ? `in a conference with ${others.join(", ")}` : "in a conference";
  }
  return "your line is open: nobody on it";
}

function renderBrowserHold() {  // Hold / Resume beside Hang up while the page carries the call
  const talking = BatonPhone.state === "talking";
  const me = S.me && S.users.get(S.me.user);
  const holding = S.me ? myHold() : null;
  $("#bp-hold").hidden = !talking || !!holding;
  $("#bp-hold").disabled = !(me && me.partner);
  $("#bp-resume").hidden = !talking || !holding;
}

async function showHeadset() {  // microphone choice and level, once the browser allowed one
  const select = $("#bp-device");
  const mics = await BatonPhone.microphones();
  select.replaceChildren(...mics.map((m) => el("option", { value: m.id, text: m.label })));
  if (BatonPhone.deviceId) select.value = BatonPhone.deviceId;
  const meter = $("#bp-level");
  const tick = () => {
    if ($("#bp-headset").hidden) return;
    meter.value = BatonPhone.level();
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

BatonPhone.onchange = renderBrowserPhone;
$("#bp-start").addEventListener("click", async () => {
  let password = S.password;
  if (!password) {  // a reloaded page: the session lives on, the password was not kept
    password = prompt("Your password, to register this browser as your phone");
    if (!password) return;
    S.password = password;
  }
  await BatonPhone.start({ url: S.phone.url, domain: S.phone.domain, user: S.me.user, password });
});
$("#bp-stop").addEventListener("click", () => BatonPhone.stop());
$("#bp-device").addEventListener("change", async (ev) => {
  try { await BatonPhone.useMic(ev.target.value); status("Microphone changed"); }
  catch (e) { status(`That microphone cannot be used: ${e.message}`, "error"); }
});
$("#bp-answer").addEventListener("click", () => BatonPhone.answer());
$("#bp-decline").addEventListener("click", () => BatonPhone.decline());
$("#bp-hangup").addEventListener("click", () => BatonPhone.hangup());
$("#bp-hold").addEventListener("click", () => holdMyCall());
$("#bp-resume").addEventListener("click", () => resumeMyCall());

// The dial pad: type or click a number and call it; in a call, each key is sent as DTMF.
function dialError(text) {
  $("#bp-dial-error").textContent = text;
  $("#bp-number").setAttribute("aria-invalid", String(!!text));
}
function pressKey(key) {
  if (BatonPhone.state === "talking") {
    try { BatonPhone.dtmf(key); $("#bp-sent").textContent = `sent: ${($("#bp-sent").textContent.replace(/^sent: /, "") + key).slice(-24)}`; dialError(""); }
    catch (e) { dialError(e.message); }
    return;
  }
  const input = $("#bp-number");
  input.value += key;
  dialError("");
}
$("#bp-dial").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (BatonPhone.state === "talking") return;
  const number = $("#bp-number").value.trim();
  dialError("");
  try {
    const call = BatonPhone.call(number);
    if (BatonPhone.state === "calling") $("#bp-number").value = "";
    await call;
    status(`Talking with ${number}`);
  } catch (e) { dialError(e.message); }
});
$("#bp-number").addEventListener("keydown", (ev) => {
  if (BatonPhone.state !== "talking" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (/^[0-9*#]$/.test(ev.key)) { ev.preventDefault(); pressKey(ev.key); }
});
$("#bp-number").addEventListener("input", () => dialError(""));
$("#bp-erase").addEventListener("click", () => { const i = $("#bp-number"); i.value = i.value.slice(0, -1); i.focus(); });
for (const b of document.querySelectorAll("#bp-dial .keys button")) b.addEventListener("click", () => pressKey(b.dataset.key));

// ------------------------------------------------------------------ history, recordings, audit

function when(v) {  // ISO 8601 or seconds since the epoch → the local time, in words
  if (v === null || v === undefined) return "";
  const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
  return isNaN(d) ? String(v) : d.toLocaleString();
}
const may = (perm) => S.me && Array.isArray(S.me.permissions) && (S.me.permissions.includes("*") || S.me.permissions.includes(perm));

async function showHistory() {
  const q = new URLSearchParams({ limit: "50" });
  for (const [key, id] of [["user", "#history-user"], ["name", "#history-name"], ["outcome", "#history-outcome"]]) {
    const v = $(id).value.trim().replaceAll(" ", "_"); if (v) q.set(key, v);
  }
  try {
    const rows = await api("GET", `/api/records/flows?${q}`);
    const body = $("#history tbody"); body.replaceChildren();
    $("#no-history").hidden = rows.length > 0; $("#no-history").textContent = "nothing found";
    for (const r of rows) {
      body.append(el("tr", { dataset: { record: String(r.id) } },
        el("td", { text: when(r.started_at) }),
        el("td", {}, el("strong", { text: flowTitle(r.flow) }), el("div", { class: "muted", text: argsText(r.args, recordName(r)) })),
        el("td", { text: (r.users || []).map(recordName(r)).join(", ") }),
        el("td", { text: r.started_by ? plainName(String(r.started_by).replace(/^phone:/, "")) : "" }),
        el("td", { text: r.outcome || (r.ended_at ? "" : "going on") }),
        el("td", {}, el("button", { type: "button", text: "Trace", onclick: () => openTraceAt(`/api/records/flows/${r.id}/trace`, r.flow) }))));
    }
  } catch (e) { status(e.message, "error"); }
  if (!may("recordings")) return;
  try {
    const q2 = new URLSearchParams({ limit: "20" });
    const user = $("#history-user").value.trim(); if (user) q2.set("user", user);
    const recs = await api("GET", `/api/recordings?${q2}`);
    $("#recordings-box").hidden = recs.length === 0;
    const body = $("#recordings tbody"); body.replaceChildren();
    for (const r of recs) {
      body.append(el("tr", { dataset: { recording: String(r.id) } },
        el("td", { text: when(r.started_at) }),
        el("td", { text: r.user_id ? plainName(r.user_id) : r.meeting || "" }),
        el("td", { text: r.kind === "ptt" ? `talk burst${r.talker ? " — " + plainName(r.talker) : ""}` : r.by && r.by !== "voicelog" ? flowTitle(r.by) : (r.reasons || []).join(", ") }),
        el("td", {}, r.status === "expired" ? el("span", { class: "muted", text: "expired (retention)" }) : r.status === "failed" ? el("span", { class: "muted", text: `failed: ${r.error || ""}` }) : r.available ? el("audio", { controls: true, preload: "none", src: `/api/recordings/${r.id}/download` }) : el("span", { class: "muted", text: "file not available" }))));
    }
  } catch { $("#recordings-box").hidden = true; }
}
$("#history-refresh").addEventListener("click", showHistory);

async function showAudit() {
  const q = new URLSearchParams({ limit: "100" });
  const action = $("#audit-action").value.trim(); if (action) q.set("action", action);
  try {
    const rows = await api("GET", `/api/audit?${q}`);
    const body = $("#audit tbody"); body.replaceChildren();
    for (const r of rows) {
      body.append(el("tr", {}, el("td", { text: when(r.at) }), el("td", { text: r.principal ? userName(r.principal) : "(unknown)" }),
        el("td", { text: r.action }), el("td", { text: r.target || "" }), el("td", { text: r.outcome })));
    }
  } catch (e) { status(e.message, "error"); }
}
$("#audit-refresh").addEventListener("click", showAudit);

// ------------------------------------------------------------------ directory (provisioning)

async function showDirectory() {
  try {
    const [users, groups, roles] = await Promise.all([
      api("GET", "/api/users"), api("GET", "/api/groups"), api("GET", "/api/roles"),
    ]);
    S.users = new Map(users.map((u) => [u.id, u])); S.groups = groups;
    const ub = $("#dir-users tbody"); ub.replaceChildren();
    for (const u of users) {
      ub.append(el("tr", { dataset: { user: u.id } }, el("td", { text: u.id }), el("td", { text: u.name }),
        el("td", { text: (u.numbers || []).join(", ") }), el("td", { text: u.role || "" }),
        el("td", {}, el("button", { type: "button", class: "dir-remove", text: "Remove", onclick: () => removeEntry("users", u.id, u.name) }))));
    }
    const gb = $("#dir-groups tbody"); gb.replaceChildren();
    for (const g of groups) {
      gb.append(el("tr", { dataset: { group: g.id } }, el("td", { text: g.name || g.id }),
        el("td", { text: g.members.map(userName).join(", ") }), el("td", { text: g.number || "" }),
        el("td", { text: g.mode === "ptt" ? "push-to-talk" : "call" }),
        el("td", {}, el("button", { type: "button", class: "dir-remove", text: "Remove", onclick: () => removeEntry("groups", g.id, g.name || g.id) }))));
    }
    const sel = $("#dir-user-role"); const was = sel.value || "field"; sel.replaceChildren();
    for (const r of roles) sel.append(el("option", { value: r.name, text: r.name, selected: r.name === was }));
    renderAll();
  } catch (e) { status(e.message, "error"); }
}

async function removeEntry(kind, id, label) {
  try {
    await api("DELETE", `/api/${kind}/${enc(id)}`);
    status(`${label} removed`);
  } catch (e) { status(e.message, "error"); }  // e.g. "unit2 is in a call (talking) …"
  await showDirectory();
}

$("#dir-user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { id: $("#dir-user-id").value.trim(), password: $("#dir-user-password").value, role: $("#dir-user-role").value };
  const name = $("#dir-user-name").value.trim(); if (name) body.name = name;
  const number = $("#dir-user-number").value.trim(); if (number) body.numbers = [number];
  try {
    await api("POST", "/api/users", body);
    status(`${name || body.id} added`);
    ev.target.reset();
  } catch (e) { status(e.message, "error"); }
  await showDirectory();
});

$("#dir-group-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { id: $("#dir-group-id").value.trim(), mode: $("#dir-group-mode").value,
    members: $("#dir-group-members").value.split(",").map((m) => m.trim()).filter(Boolean) };
  const number = $("#dir-group-number").value.trim(); if (number) body.number = number;
  try {
    await api("POST", "/api/groups", body);
    status(`group ${body.id} added`);
    ev.target.reset();
  } catch (e) { status(e.message, "error"); }
  await showDirectory();
});

async function openTraceAt(url, name) {
  try {
    const trace = await api("GET", url);
    $("#trace-title").textContent = `${flowTitle(trace.flow || name)} — ${trace.steps.length} steps${trace.ended ? " (ended)" : ""}`;
    $("#trace-body").replaceChildren(drawTrace(trace));
    $("#trace").showModal();
  } catch (e) { status(`${name}: ${e.message}`, "error"); }
}

// ------------------------------------------------------------------ push-to-talk groups

const PTT_FLOWS = new Set(["ptt_group", "ptt_dial_in"]);

function onFloor(ev) {  // the floor events of a PTT group (its flow's name is the group)
  const f = S.floors.get(ev.group) || { talker: null, queue: [], notice: null };
  const mine = S.me && ev.user === S.me.user;
  if (ev.kind === "floor.granted") {
    f.talker = ev.user;
    f.queue = f.queue.filter((u) => u !== ev.user);
    if (mine) f.notice = null;
  } else if (ev.kind === "floor.released" || ev.kind === "floor.revoked" || ev.kind === "floor.idle") {
    if (ev.kind === "floor.idle" || f.talker === ev.user) f.talker = null;
    if (mine && ev.kind === "floor.revoked") f.notice = { state: "revoked", text: `The floor was taken from you: ${ev.reason}` };
  } else if (ev.kind === "floor.queued") f.queue = ev.queue.map(([u]) => u);
  else if (ev.kind === "floor.denied" && mine) f.notice = { state: "denied", text: `Denied: ${ev.reason}` };
  S.floors.set(ev.group, f);
  renderPtt();
}

const ordinal = (n) => `${n}${n === 1 ? "st" : n === 2 ? "nd" : n === 3 ? "rd" : "th"}`;

// Where you stand on a group's floor: [state, words]. The states (the card's data-floor):
// talking, queued (floor busy, your request waits), denied / revoked (until you press again),
// busy (someone else talks), idle.
function myFloor(floor) {
  const me = S.me.user;
  if (floor.talker === me) return ["talking", "You have the floor: talk"];
  const at = floor.queue.indexOf(me);
  const who = floor.talker ? `: ${userName(floor.talker)} talks` : "";
  if (at >= 0) return ["queued", `Floor busy${who} — you are ${ordinal(at + 1)} in line`];
  if (floor.notice) return [floor.notice.state, floor.notice.text];
  if (floor.talker) return ["busy", `Floor busy${who}`];
  return ["idle", "Floor free"];
}

// One card per open group, updated in place: a Talk button being held must stay the same
// element (pointer capture, keyboard focus) while floor events re-render the card.
function renderPtt() {
  const box = $("#ptt");
  const groups = S.flows.filter((f) => PTT_FLOWS.has(flowKind(f.name)));
  const open = new Set(groups.map((f) => f.name));
  for (const card of [...box.children]) if (!open.has(card.dataset.flow)) card.remove();
  if (!groups.length) { box.replaceChildren(el("p", { class: "muted", text: "none open" })); return; }
  for (const f of groups) {
    const card = [...box.children].find((c) => c.dataset.flow === f.name) || box.appendChild(pttCard(f.name));
    const floor = S.floors.get(f.name) || { talker: null, queue: [], notice: null };
    const member = f.users.includes(S.me.user);
    const talking = floor.talker === S.me.user;
    const [state, words] = member ? myFloor(floor) : ["none", "Join to listen and talk"];
    card.dataset.floor = state;
    card.querySelector(".title").textContent = groupTitle(f.name);
    card.querySelector(".who").textContent = ` — ${f.users.map(userName).join(", ")}`;
    const waiting = floor.queue.length ? ` · waiting: ${floor.queue.map(userName).join(", ")}` : "";
    card.querySelector(".talker").textContent = (floor.talker ? `${userName(floor.talker)} talks` : "floor idle") + waiting;
    card.querySelector(".mine").textContent = words;
    const button = card.querySelector("button");
    const held = !!(S.talk && S.talk.name === f.name);
    button.dataset.action = !member ? "join" : talking ? "release" : "talk";
    button.textContent = !member ? "Join" : talking ? "Talking…" : held ? "Waiting…" : "Talk";
    button.classList.toggle("talk", member);
    button.setAttribute("aria-pressed", String(member && (held || talking)));
    button.title = member ? "hold to talk (or hold the space bar); let go to release" : "ring me into this group";
  }
}

function pttCard(name) {
  const button = el("button", { type: "button" });
  // Press and hold, like a radio's button: pointer (mouse, touch) or Space/Enter on the button.
  button.addEventListener("pointerdown", (ev) => {
    if (button.dataset.action === "join" || ev.button !== 0) return;
    ev.preventDefault();
    button.setPointerCapture(ev.pointerId);
    startTalk(name, "pointer");
  });
  for (const kind of ["pointerup", "pointercancel", "lostpointercapture"]) button.addEventListener(kind, () => stopTalk("pointer"));
  button.addEventListener("keydown", (ev) => {
    if ((ev.key !== " " && ev.key !== "Enter") || button.dataset.action === "join") return;
    ev.preventDefault();
    if (!ev.repeat) startTalk(name, "key");
  });
  button.addEventListener("keyup", (ev) => {
    if ((ev.key === " " || ev.key === "Enter") && button.dataset.action !== "join") { ev.preventDefault(); stopTalk("key"); }
  });
  button.addEventListener("click", (ev) => {
    const f = S.flows.find((x) => x.name === name);
    if (!f) return;
    if (button.dataset.action === "join") { ptt(f, "add"); return; }
    // A click with no press before it (assistive technology, detail 0) toggles the floor.
    if (ev.detail !== 0 || S.talk) return;
    const floor = S.floors.get(name) || { talker: null, queue: [] };
    ptt(f, floor.talker === S.me.user || floor.queue.includes(S.me.user) ? "release" : "request");
  });
  return el("div", { class: "ptt", dataset: { flow: name } },
    el("div", {}, el("strong", { class: "title", text: groupTitle(name) }), el("span", { class: "muted who" })),
    el("div", { class: "talker" }),
    el("div", { class: "mine", role: "status" }),
    el("div", { class: "buttons" }, button));
}

function startTalk(name, how) {
  const f = S.flows.find((x) => x.name === name);
  if (!f || S.talk) return;
  S.talk = { name, how };
  const floor = S.floors.get(name);
  if (floor) floor.notice = null;  // a new press: the last denial is old news
  renderPtt();
  ptt(f, "request");
}

function stopTalk(how) {
  if (!S.talk || S.talk.how !== how) return;
  const f = S.flows.find((x) => x.name === S.talk.name);
  S.talk = null;
  renderPtt();
  if (f) ptt(f, "release");  // also withdraws a request still waiting in the queue
}

// Hold the space bar to talk in your PTT group (the first you are a member of), as on a radio.
function myPttGroup() {
  return S.flows.find((f) => PTT_FLOWS.has(flowKind(f.name)) && f.users.includes(S.me.user)) || null;
}
document.addEventListener("keydown", (ev) => {
  const tag = (document.activeElement && document.activeElement.tagName) || "";
  if (ev.code !== "Space" || ev.repeat || ["INPUT", "TEXTAREA", "SELECT", "BUTTON"].includes(tag)) return;
  const f = S.me ? myPttGroup() : null;
  if (!f) return;
  ev.preventDefault();
  startTalk(f.name, "space");
});
document.addEventListener("keyup", (ev) => {
  if (ev.code !== "Space" || !S.talk || S.talk.how !== "space") return;
  ev.preventDefault();
  stopTalk("space");
});

// Floor commands go one after another: a quick press sends "request" then "release", and two
// requests in flight may arrive in either order; a release that overtook its request would
// leave the dispatcher holding the floor after letting go (an open microphone in the group).
let pttChain = Promise.resolve();
function ptt(f, command) {
  pttChain = pttChain.then(() => sendPtt(f, command));
  return pttChain;
}

async function sendPtt(f, command) {
  try { await api("POST", `/api/flows/${enc(f.name)}/commands`, { command, args: { user: S.me.user } }); }
  catch (e) {
    if (command === "request") {
      const floor = S.floors.get(f.name) || { talker: null, queue: [], notice: null };
      floor.notice = { state: "denied", text: `Denied: ${e.message}` };
      S.floors.set(f.name, floor);
      renderPtt();
    }
    status(e.message, "error");
  }
}

// ------------------------------------------------------------------ emergency alarms

async function refreshAlarms() {
  try { S.alarms = await api("GET", "/api/emergencies"); renderAlarms(); } catch { /* shown by status */ }
  if (!may("audit")) return;  // fault alarms (a recording that failed) are for supervisors
  try { S.faults = await api("GET", "/api/alarms"); renderAlarms(); } catch { /* shown by status */ }
}

let audio = null;
function beep() {  // a two-tone alarm from WebAudio: nothing to download
  try {
    audio = audio || new AudioContext();
    for (const [f, at] of [[880, 0], [660, 0.25]]) {
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = f; g.gain.value = 0.15; o.connect(g); g.connect(audio.destination);
      o.start(audio.currentTime + at); o.stop(audio.currentTime + at + 0.22);
    }
  } catch { /* no audio device: the banner still blinks */ }
}
setInterval(() => { if (S.alarms.some((a) => !a.acknowledged_by) || (S.faults || []).some((a) => !a.acknowledged_by)) beep(); }, 1500);

function renderAlarms() {
  const box = $("#alarms"); box.replaceChildren();
  for (const a of S.alarms) {
    const who = a.users.map((id) => (S.users.get(id) || { name: id }).name).join(", ");
    const acked = !!a.acknowledged_by;
    box.append(el("div", { class: `alarm ${acked ? "acked" : "unacked"}`, dataset: { flow: a.flow } },
      el("span", { text: `⚠ EMERGENCY — ${who || a.flow}` }),
      el("span", { class: "spacer" }),
      a.escalated && !acked ? el("span", { class: "escalated", text: "not acknowledged in time: supervisors called on" }) : null,
      acked
        ? el("span", { class: "acked-by", text: `Acknowledged by ${(S.users.get(a.acknowledged_by) || { name: a.acknowledged_by }).name}` })
        : el("button", { type: "button", text: "Acknowledge", dataset: { action: "ack" }, onclick: () => acknowledge(a.flow) }),
      el("button", { type: "button", text: "Trace", onclick: () => openTrace(a.flow) })));
  }
  for (const f of (S.faults || []).filter((x) => !x.acknowledged_by).slice(0, 5)) {
    box.append(el("div", { class: "alarm unacked fault", dataset: { alarm: f.alarm } },
      el("span", { text: `⚠ ${f.text}` }),
      el("span", { class: "spacer" }),
      el("button", { type: "button", text: "Acknowledge", dataset: { action: "ack" }, onclick: () => acknowledgeFault(f.alarm) })));
  }
}

async function acknowledgeFault(alarm) {
  try { await api("POST", `/api/alarms/${enc(alarm)}/ack`); refreshAlarms(); }
  catch (e) { status(e.message, "error"); refreshAlarms(); }
}

async function acknowledge(flow) {
  try { await api("POST", `/api/emergencies/${enc(flow)}/ack`); refreshAlarms(); }
  catch (e) { status(e.message, "error"); refreshAlarms(); }
}

// ------------------------------------------------------------------ dispatcher mode

function setMode(mode) {
  S.mode = mode === "flows" ? "flows" : "dispatcher";
  document.body.classList.toggle("mode-dispatcher", S.mode === "dispatcher");
  document.body.classList.toggle("mode-flows", S.mode === "flows");
  for (const b of document.querySelectorAll(".modes button")) b.setAttribute("aria-pressed", String(b.dataset.mode === S.mode));
  localStorage.setItem("baton.mode", S.mode);
}
for (const b of document.querySelectorAll(".modes button")) b.addEventListener("click", () => setMode(b.dataset.mode));

function agentBadge(agent) {
  return el("span", { class: `agent ag-${agent.state}`, text: agent.label, title: agent.since ? `since ${new Date(agent.since).toLocaleTimeString()}` : null });
}

function renderPosition() {
  const me = S.users.get(S.me.user);
  const isPosition = !!(me && me.agent);
  $("#position-panel").hidden = !me;
  if (!me) return;
  $("#my-state-buttons").hidden = !isPosition;
  $("#my-state").replaceChildren(isPosition ? agentBadge(me.agent) : el("span", { class: "muted", text: "not a position" }));
  const reg = me.registration || { registered: false, contacts: [] };
  $("#my-phone").textContent = reg.registered
    ? "Phone: " + reg.contacts.map((c) => [c.user_agent, c.transport, c.contact].filter(Boolean).join(" · ")).join("; ")
    : "No phone registered: register your SIP phone to take calls.";
  $("#my-line").replaceChildren(el("div", { class: `line st-${me.state}`, dataset: { state: me.state }, text: me.label.split(" · owned by")[0] }));
  const ringing = me.leg && me.leg.state === "ringing";
  $("#my-answer").disabled = !S.sim || !ringing;
  $("#my-hangup").disabled = !me.leg;
  const holding = myHold();
  $("#my-hold").disabled = !me.partner || !!holding;
  $("#my-resume").disabled = !holding;
  renderBrowserHold();
  if (BatonPhone.state === "talking") renderBrowserPhone("talking", $("#bp-state").dataset.peer || "");
  renderQuick();
  $("#my-answer").title = S.sim ? "answer on your (virtual) phone" : "answer on your SIP phone";
  $("#my-hangup").title = "end your call (the other party is hung up; your line stays up)";
}

function myHold() {
  return S.flows.find((f) => flowKind(f.name) === "hold" && f.args.holder === S.me.user);
}

// One click on a selected unit: the library's flows with you as the dispatcher.
const QUICK = {
  call: (target) => ({ flow: "call", args: { caller: S.me.user, callee: target } }),
  monitor: (target) => ({ flow: "monitor", args: { dispatcher: S.me.user, target } }),
  barge_in: (target) => ({ flow: "barge_in", args: { dispatcher: S.me.user, target } }),
  conference: (target) => {  // my call's party and the selected unit, with me, in one room
    const me = S.users.get(S.me.user);
    return { flow: "conference", args: { dispatcher: S.me.user, members: [me && me.partner, target].filter(Boolean) } };
  },
  blind_transfer: (target) => {
    const me = S.users.get(S.me.user);
    return { flow: "blind_transfer", args: { party: me && me.partner, transferor: S.me.user, target } };
  },
};

function renderQuick() {
  const sel = S.selected && S.selected !== S.me.user ? S.users.get(S.selected) : null;
  const me = S.users.get(S.me.user);
  $("#quick-who").textContent = sel ? `— ${sel.name}: ${sel.label.split(" · owned by")[0]}` : "— click a tile";
  for (const b of document.querySelectorAll("#quick button")) {
    const spec = S.library.find((f) => f.name === b.dataset.quick);
    const allowed = spec ? spec.allowed : false;
    const needsCall = b.dataset.quick === "blind_transfer" || b.dataset.quick === "conference";
    b.disabled = !sel || !allowed || (needsCall && !(me && me.partner));
    b.title = !spec ? "not in the library" : !allowed ? `your role may not (${spec.permission})` : spec.description.replaceAll("``", "");
  }
}

async function startQuick(kind) {
  if (!S.selected) return;
  const body = QUICK[kind](S.selected);
  try { const r = await api("POST", "/api/flows", body); status(`${flowTitle(r.name)} started`); }
  catch (e) { status(e.message, "error"); }
}
for (const b of document.querySelectorAll("#quick button")) b.addEventListener("click", () => startQuick(b.dataset.quick));

async function holdMyCall() {  // the library's hold: the other party hears the hold tone
  const me = S.users.get(S.me.user);
  if (!me || !me.partner) return;
  try { await api("POST", "/api/flows", { flow: "hold", args: { holder: S.me.user, held: me.partner } }); status(`${userName(me.partner)} is on hold`); }
  catch (e) { status(e.message, "error"); }
}
async function resumeMyCall() {
  const f = myHold(); if (!f) return;
  try { await api("POST", `/api/flows/${enc(f.name)}/commands`, { command: "resume", args: {} }); status("Resumed"); }
  catch (e) { status(e.message, "error"); }
}
$("#my-hold").addEventListener("click", holdMyCall);
$("#my-resume").addEventListener("click", resumeMyCall);

async function setMyState(state) {
  const body = { state };
  if (state === "not_ready") body.reason = $("#not-ready-reason").value;
  try {
    const r = await api("PUT", `/api/positions/${enc(S.me.user)}/state`, body);
    const me = S.users.get(S.me.user); if (me) { me.agent = r; renderTile(me); }
    renderPosition(); status(`You are ${r.label.toLowerCase()}`);
  } catch (e) { status(e.message, "error"); }
}
for (const id of ["#go-ready", "#go-not-ready", "#go-logged-out"]) $(id).addEventListener("click", (ev) => setMyState(ev.currentTarget.dataset.state));

async function myPhone(action) {
  try { await api("POST", `/api/sim/phones/${enc(S.me.user)}/${action}`); }
  catch (e) { status(e.message, "error"); }
}
$("#my-answer").addEventListener("click", () => myPhone("answer"));
$("#my-hangup").addEventListener("click", async () => {
  try { await api("POST", `/api/users/${enc(S.me.user)}/hangup`); status("Call ended"); }
  catch (e) { status(e.message, "error"); }
});

let queueTimer = null;
function refreshQueueSoon() {
  if (queueTimer) return;
  queueTimer = setTimeout(async () => {
    queueTimer = null;
    try { S.queue = await api("GET", "/api/queue"); renderQueue(); } catch { /* shown by status */ }
  }, 150);
}
setInterval(() => { if (!$("#app").hidden) refreshQueueSoon(); }, 2000);

function waited(seconds) {
  const s = Math.round(seconds); return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function renderQueue() {
  const q = S.queue; const body = $("#queue tbody"); body.replaceChildren();
  const callers = q ? q.callers : [];
  $("#no-callers").hidden = callers.length > 0;
  const f = q && q.figures;
  $("#queue-figures").textContent = f
    ? `— ${f.waiting} waiting · longest ${waited(f.longest_wait)} · answered ${f.answered} (${f.answered_within} within ${f.service_level} s)`
    : "";
  const me = S.users.get(S.me.user);
  for (const c of callers) {
    const u = S.users.get(c.caller);
    const pick = el("button", { type: "button", text: "Pick up", dataset: { action: "pickup" },
      disabled: !(me && me.position) || !!c.offered_to, onclick: () => pickUp(c.caller) });
    body.append(el("tr", { dataset: { caller: c.caller } },
      el("td", {}, el("strong", { text: u ? u.name : c.caller }), el("div", { class: "muted", text: c.caller })),
      el("td", { text: waited(c.waited) + (c.offered_to ? ` · ringing ${c.offered_to}` : "") }),
      el("td", {}, el("div", { class: "buttons" }, pick))));
  }
}

async function pickUp(caller) {
  try {
    await api("POST", "/api/flows", { flow: "take_call", args: { dispatcher: S.me.user, queue: "dispatch", caller } });
    status(`Taking ${caller}'s call: your phone rings`); refreshQueueSoon();
  } catch (e) { status(e.message, "error"); }
}

// ------------------------------------------------------------------ event stream

function connect() {
  if (S.ws) return;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/events/stream";
  const ws = new WebSocket(url);
  S.ws = ws;
  ws.onopen = () => { S.wsRetry = 0; $("#conn").textContent = "live"; $("#conn").classList.add("live"); };
  ws.onmessage = (m) => onMessage(JSON.parse(m.data));
  ws.onclose = () => {
    S.ws = null; $("#conn").textContent = "offline"; $("#conn").classList.remove("live");
    const delay = Math.min(10000, 500 * 2 ** S.wsRetry++);
    setTimeout(async () => {
      try { await resync(); connect(); } catch { /* the 401 handler shows the login */ }
    }, delay);
  };
}

async function resync() {
  const [users, flows, meetings] = await Promise.all([api("GET", "/api/users"), api("GET", "/api/flows"), api("GET", "/api/meetings")]);
  S.users = new Map(users.map((u) => [u.id, u])); S.flows = flows; S.meetings = meetings;
  renderAll();
}

async function refreshUserSoon(id) {
  try {
    const u = await api("GET", `/api/users/${enc(id)}`);
    S.users.set(u.id, u); renderTile(u); if (u.id === S.me.user) renderPosition();
  } catch { /* shown by status */ }
}

let meetingsTimer = null;
function refreshMeetingsSoon() {
  if (meetingsTimer) return;
  meetingsTimer = setTimeout(async () => {
    meetingsTimer = null;
    try { S.meetings = await api("GET", "/api/meetings"); renderMeetings(); } catch { /* shown by status */ }
  }, 150);
}

function onMessage(msg) {
  if (msg.type === "hello") { S.lastSeq = msg.seq; return; }
  if (msg.type === "resync") { resync(); return; }
  if (msg.type !== "event") return;
  const ev = msg.event;
  S.lastSeq = ev.seq;
  if (msg.users) for (const u of msg.users) { S.users.set(u.id, u); renderTile(u); }
  if (msg.flows) { S.flows = msg.flows; renderFlows(); renderPosition(); renderPtt(); }
  if (ev.kind.startsWith("floor.")) onFloor(ev);
  if (ev.kind === "media" || ev.kind.startsWith("callinfo.") || ev.kind === "leg.state") refreshMeetingsSoon();
  if (msg.users && S.selected && msg.users.some((u) => u.id === S.selected)) renderPhone();
  if (msg.users && msg.users.some((u) => u.id === S.me.user)) renderPosition();
  if (ev.kind === "agent.state") refreshUserSoon(ev.user);
  if ((ev.kind === "flow.started" && ev.priority >= 50) || ev.kind === "flow.ended" || ev.kind.startsWith("emergency.") || ev.kind.startsWith("alarm.")
      || (ev.kind === "owner.changed" && ev.priority >= 50)) refreshAlarms();
  if (ev.kind.startsWith("flow.") || ev.kind === "owner.changed" || ev.kind === "agent.state") refreshQueueSoon();
  logEvent(ev);
}

const AGENT_LABELS = { logged_out: "logged out", ready: "ready", not_ready: "not ready", wrap_up: "in wrap-up" };
const AGENT_VIA = { phone: "from the phone", console: "from the console", api: "over the API", queue: "by the queue", timer: "after wrap-up" };

// A peer line (a call from another tenant, docs/cluster.md) goes by its caller while the call
// lasts: "2101 (a-unit1, acme)", as a dispatcher would read an outside caller's number.
const callerText = (c) => {
  const more = [c.name, c.tenant].filter(Boolean).join(", ");
  return `${c.number || c.name || "unknown caller"}${c.number && more ? ` (${more})` : ""}`;
};
// A peer line calling out goes by the number it called: "call to 2101".
const lineName = (u) => (u.caller ? callerText(u.caller) : u.dialled ? `call to ${u.dialled}` : u.name);
const userName = (id) => {
  const u = S.users.get(id);
  return !u ? id : lineName(u);
};
// The name alone, for what is not live (history): a line's caller now is not its caller then.
const plainName = (id) => (S.users.get(id) ? S.users.get(id).name : id);
// A record's users by name, a peer line by the caller (or the number dialled) the record kept
// for it: its far end then.
const recordName = (r) => (id) => (r.callers && r.callers[id] ? callerText(r.callers[id])
  : r.dialled && r.dialled[id] ? `call to ${r.dialled[id]}` : plainName(id));
const flowKind = (name) => (name || "").split("#")[0];
const EMERGENCY_FLOWS = new Set(["emergency_call", "emergency_inbound"]);

// The event log in dispatcher mode: what a dispatcher needs, in their words ("Engine 1 was taken
// into an emergency by Dispatcher 1"); the engine's own events (claims, epochs, media commands)
// are left to the flow's trace, one click away. Returns [marker, text, flow] or null.
function forDispatcher(ev) {
  const flowOf = (name) => S.flows.find((f) => f.name === name);
  const byOf = (name) => {
    const f = flowOf(name);
    const who = f && (f.args.dispatcher || f.args.caller || f.started_by);
    return who && !String(who).startsWith("phone:") ? ` by ${userName(who)}` : "";
  };
  switch (ev.kind) {
    case "flow.started": {
      const args = argsText(ev.args);
      return ["▶", `${flowTitle(ev.flow)} started${args ? " — " + args : ""}`, ev.flow];
    }
    case "flow.ended":
      return ["■", `${flowTitle(ev.flow)} ${ev.outcome === "completed" ? "ended" : ev.outcome === "cancelled" ? "was cancelled" : "failed" + (ev.error ? ": " + ev.error.replace(/^\w+: /, "") : "")}`, ev.flow];
    case "flow.note": {
      let text = ev.text.replace(/^[\w#]+: /, "");
      // Flows write their notes with user ids ("disp1 took unit1's call"); a dispatcher reads
      // the names the centre gave ("Dispatcher 1 took Engine 1's call").
      text = text.replace(/[\w-]+(?:\.[\w-]+)*/g, (w) => (S.users.has(w) ? userName(w) : w));
      // A conference runs the group call's steps: say conference, as the dispatcher started it.
      if (flowKind(ev.flow) === "conference") text = text.replaceAll("group call", "conference");
      return ["»", text, ev.flow];
    }
    case "owner.changed":
      if (ev.reason !== "preempted" || !ev.new) return null;
      if (EMERGENCY_FLOWS.has(flowKind(ev.new))) return ["⚠", `${userName(ev.user)} was taken into an emergency${byOf(ev.new)}`, ev.new];
      return ["⇄", `${userName(ev.user)} was taken into ${flowTitle(ev.new)}${byOf(ev.new)}`, ev.new];
    case "leg.state":
      if (ev.state === "ringing") return ["☎", ev.direction === "inbound" ? `${userName(ev.user)} is calling in` : `${userName(ev.user)}'s phone rings`, null];
      if (ev.state === "connected") return ["☎", ev.direction === "inbound" ? `${userName(ev.user)}'s call was answered` : `${userName(ev.user)} answered`, null];
      if (ev.state === "ended") return ["☎", `${userName(ev.user)}'s call ended${ev.cause && ev.cause !== "normal" ? " (" + ev.cause.replaceAll("_", " ") + ")" : ""}`, null];
      return null;
    case "leg.caller":
      return ["☎", `${callerText(ev)} of another tenant is calling in on ${ev.user}`, null];
    case "leg.dialled":
      return ["☎", `Calling ${ev.number} of another tenant on ${ev.user}`, ev.flow];
    case "floor.granted":
      return ["🎙", `${groupTitle(ev.group)}: ${userName(ev.user)} talks`, ev.group];
    case "floor.released":
      return ["🎙", `${groupTitle(ev.group)}: ${userName(ev.user)} released the floor`, ev.group];
    case "floor.revoked":
      return ["🎙", `${groupTitle(ev.group)}: ${userName(ev.user)} lost the floor${ev.by ? " to " + userName(ev.by) : ""}`, ev.group];
    case "callinfo.started":
      return ["═", ev.meeting ? `conference ${ev.meeting}: ${ev.users.map(userName).join(", ")}` : `${ev.users.map(userName).join(" and ")} are talking`, null];
    default:
      return null;
  }
}

function logEvent(ev) {
  if (S.mode === "dispatcher" && !["agent.state", "emergency.acknowledged", "emergency.escalated", "alarm.raised", "alarm.acknowledged"].includes(ev.kind)) {
    const line = forDispatcher(ev);
    if (!line) return;
    [ev.marker, ev.text] = line;
    ev.flow = line[2];
  }
  if (ev.kind === "emergency.acknowledged") {
    const u = S.users.get(ev.by);
    ev.marker = "⚠"; ev.text = `${u ? u.name : ev.by} acknowledged the emergency ${ev.flow}`;
  }
  if (ev.kind === "emergency.escalated") {
    ev.marker = "⚠"; ev.text = `nobody acknowledged the emergency ${ev.flow} within ${ev.after} s: supervisors called on`;
  }
  if (ev.kind === "alarm.raised") { ev.marker = "⚠"; ev.text = ev.message; }
  if (ev.kind === "alarm.acknowledged") { ev.marker = "⚠"; ev.text = `${userName(ev.by)} acknowledged ${ev.alarm}`; }
  if (ev.kind.startsWith("recording.")) {  // the voice logger's events, in words
    const what = ev.what === "ptt" ? `${userName(ev.user)}'s talk burst` : `${userName(ev.user)}'s call`;
    if (ev.kind === "recording.started") { ev.marker = "●"; ev.text = `recording ${what}`; }
    else if (ev.kind === "recording.ended") { ev.marker = "■"; ev.text = `recording of ${what} kept (${Number(ev.seconds).toFixed(0)} s, checksum stored)`; }
    else if (ev.kind === "recording.dropped") { ev.marker = "■"; ev.text = `recording of ${what} dropped: cut as it began, it held nothing`; }
    else if (ev.kind === "recording.expired") { ev.marker = "■"; ev.text = `${ev.count} recording(s) removed by the retention policy`; }
    else ev.text = null;  // a failure is told by its alarm
  }
  if (ev.kind === "agent.state") {  // in the dispatcher's words, not the event's fields
    const u = S.users.get(ev.user);
    const who = u ? u.name : ev.user;
    ev.marker = "◉";
    ev.text = `${who} is ${AGENT_LABELS[ev.state] || ev.state}${ev.reason ? ` (${ev.reason})` : ""}` +
      (ev.by && ev.by !== ev.user && ev.via !== "timer" ? `, set by ${userName(ev.by)}` : "") + (AGENT_VIA[ev.via] ? ` ${AGENT_VIA[ev.via]}` : "");
  }
  if (!ev.text) return;
  const log = $("#log");
  const flow = typeof ev.flow === "string" ? ev.flow : null;
  const li = el("li", { title: flow ? `${ev.text} — click for ${flow}'s trace` : ev.text, dataset: { kind: ev.kind },
    class: flow ? "link" : null, onclick: flow ? () => openTrace(flow) : null },
    el("span", { class: "seq", text: String(ev.seq) }), `${ev.marker || "·"} ${ev.text}`);
  log.prepend(li);
  while (log.children.length > 300) log.lastChild.remove();
}

// ------------------------------------------------------------------ rendering

function renderAll() { renderGrid(); renderFlows(); renderMeetings(); renderActions(); renderPhone(); renderPosition(); renderQueue(); renderPtt(); }

function tileFor(u) {
  const high = u.owner && u.owner.priority >= 30;
  const t = el("div", {
    class: `tile st-${u.state}${high ? " high" : ""}${S.selected === u.id ? " selected" : ""}`,
    dataset: { user: u.id, state: u.state }, tabindex: "0", role: "button",
    title: u.label, onclick: () => select(u.id),
    onkeydown: (e) => { if (e.key === "Enter") select(u.id); },
  },
  el("div", { class: "name", text: lineName(u) }),
  el("div", { class: "id", text: `${u.id}${u.numbers.length ? " · " + u.numbers.join(", ") : ""}${u.position ? " · position" : ""}` }),
  el("div", { class: "label", text: u.owner ? u.label.split(" · owned by")[0] : u.label }),
  u.owner ? el("div", { class: "owner", text: `${u.owner.name} · ${u.owner.priority_name}` }) : null,
  u.agent ? el("div", { class: "agent-line" }, agentBadge(u.agent)) : null,
  presenceLine(u));
  return t;
}

function presenceLine(u) {
  const reg = u.registration;
  if (!reg) return null;
  if (!reg.registered) return el("div", { class: "presence off", text: "○ no phone registered" });
  const c = reg.contacts[0];
  const title = reg.contacts.map((x) => [x.contact, x.transport, x.user_agent, x.registered_at ? `registered ${x.registered_at}` : null].filter(Boolean).join(" · ")).join("\n");
  return el("div", { class: "presence on", title, text: `● ${c.user_agent || c.transport || "phone"}` });
}

function renderGrid() {
  const grid = $("#grid"); grid.replaceChildren();
  for (const u of S.users.values()) grid.append(tileFor(u));
}

function renderTile(u) {
  const old = document.querySelector(`.tile[data-user="${CSS.escape(u.id)}"]`);
  if (old) old.replaceWith(tileFor(u)); else $("#grid").append(tileFor(u));
}

function select(id) {
  S.selected = S.selected === id ? null : id;
  document.querySelectorAll(".tile").forEach((t) => t.classList.toggle("selected", t.dataset.user === S.selected));
  renderActions(); renderPhone(); renderQuick();
}

function prioBadge(p, name) { return el("span", { class: `prio p${p}`, text: name }); }

// A flow as the dispatcher calls it ("conference 2"), and its arguments without Python: unset
// values left out, enums by their value ("OnLeave.END" → "end"), names by the user's name.
// A push-to-talk group by the name the centre gave it ("Engines radio"), not by its flow's
// ("ptt dial in 1"): the flow a dialled-in group runs names the configured group it opened.
function groupTitle(flowName) {
  const f = S.flows.find((x) => x.name === flowName);
  const g = f && f.args && f.args.group ? S.groups.find((x) => x.id === f.args.group) : null;
  return g ? g.name : flowTitle(flowName);
}
function flowTitle(name) {
  const [kind, n] = name.split("#");
  return `${kind.replaceAll("_", " ")}${n ? " " + n : ""}`;
}
function argValue(v, name = plainName) {
  if (v === null || v === undefined || v === "None" || v === "") return null;
  const s = String(v);
  const m = /^[A-Z][A-Za-z]*\.([A-Z_]+)$/.exec(s);
  if (m) return m[1].toLowerCase().replaceAll("_", " ");
  if (s.startsWith("queue ")) return s.slice(6);
  return s.split(",").map(name).join(", ");
}
function argsText(args, name = plainName) {
  return Object.entries(args || {}).map(([k, v]) => [k.replaceAll("_", " "), argValue(v, name)])
    .filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`).join(" · ");
}

function renderFlows() {
  const body = $("#flows tbody"); body.replaceChildren();
  $("#no-flows").hidden = S.flows.length > 0;
  for (const f of S.flows) {
    const buttons = el("div", { class: "buttons" },
      el("button", { type: "button", text: "Trace", dataset: { action: "trace" }, onclick: () => openTrace(f.name) }),
      el("button", { type: "button", class: "danger", text: "Cancel", dataset: { action: "cancel" }, onclick: () => cancelFlow(f.name) }));
    for (const c of f.commands) {
      buttons.append(el("button", { type: "button", text: c.name, title: c.description, dataset: { command: c.name },
        onclick: () => sendCommand(f, c) }));
    }
    body.append(el("tr", { dataset: { flow: f.name } },
      el("td", {}, el("strong", { text: flowTitle(f.name) }), el("div", { class: "muted", text: argsText(f.args) })),
      el("td", {}, prioBadge(f.priority, f.priority_name)),
      el("td", { text: f.users.join(", ") }),
      el("td", { text: f.started_by || "" }),
      el("td", {}, buttons)));
  }
}

function renderMeetings() {
  if (BatonPhone.state === "talking") renderBrowserPhone("talking", $("#bp-state").dataset.peer || "");
  const box = $("#meetings"); box.replaceChildren();
  if (!S.meetings.length) { box.append(el("p", { class: "muted", text: "none" })); return; }
  for (const m of S.meetings) {
    const title = `${m.room ? m.room.name + " (" + m.room.number + ")" : m.id}${m.live ? "" : " — empty"}`;
    const div = el("div", { class: "meeting", dataset: { meeting: m.id } },
      el("div", {}, el("strong", { text: title }), m.holder ? el("span", { class: "muted", text: `  held by ${m.holder.name} at ${m.holder.priority_name}` }) : null));
    for (const mem of m.members) {
      const row = el("div", { class: "member", dataset: { member: mem.user } },
        el("span", { text: mem.user }), el("span", { class: "mode", text: mem.mode }));
      for (const [label, mode] of [["mute", "muted"], ["unmute", "speak"], ["listen", "listen"]]) {
        row.append(el("button", { type: "button", text: label, onclick: () => meetingAction("PUT", `/api/meetings/${enc(m.id)}/members/${enc(mem.user)}`, { mode }) }));
      }
      row.append(el("button", { type: "button", class: "danger", text: "kick", onclick: () => meetingAction("DELETE", `/api/meetings/${enc(m.id)}/members/${enc(mem.user)}`) }));
      div.append(row);
    }
    if (m.live) div.append(el("button", { type: "button", class: "danger", text: "End meeting", onclick: () => meetingAction("DELETE", `/api/meetings/${enc(m.id)}`) }));
    box.append(div);
  }
}

async function meetingAction(method, path, body) {
  try { const r = await api(method, path, body); status(`${r.meeting}: ${r.action} → ${r.reply}`); refreshMeetingsSoon(); }
  catch (e) { status(e.message, "error"); }
}

function renderActions() {
  const box = $("#actions"); box.replaceChildren();
  const sel = S.selected ? S.users.get(S.selected) : null;
  $("#selected").textContent = sel ? `— ${sel.name} (${sel.id}): ${sel.label}` : "— select a user (or start a flow)";
  for (const f of S.library) {
    const why = !f.startable ? "needs arguments the API cannot give" : !f.allowed ? `your role may not (needs ${f.permission}, ${f.priority_name})` : f.description.replaceAll("``", "");
    box.append(el("button", { type: "button", text: f.name.replaceAll("_", " "), title: why,
      dataset: { flow: f.name, allowed: String(f.allowed) }, disabled: !f.startable, onclick: () => openForm(f) }));
  }
}

// ------------------------------------------------------------------ flow forms

function userOptions(select, { empty } = {}) {
  if (empty) select.append(el("option", { value: "", text: empty }));
  for (const u of S.users.values()) select.append(el("option", { value: u.id, text: `${u.id} — ${u.name} (${u.state})` }));
}

function fieldFor(p, prefill) {
  const wrap = el("div", { class: "field", dataset: { param: p.name, kind: p.kind } });
  const label = el("label", { text: p.name + (p.required ? " *" : "") });
  wrap.append(label);
  let input;
  const optional = !p.required;
  if (p.kind === "user") {
    input = el("select", { name: p.name }); userOptions(input, { empty: optional ? "(none)" : undefined });
    if (prefill) input.value = prefill;
  } else if (p.kind === "users") {
    input = el("div", { class: "checks", dataset: { name: p.name } });
    for (const u of S.users.values()) {
      const cb = el("input", { type: "checkbox", value: u.id, checked: prefill === u.id });
      input.append(el("label", {}, cb, ` ${u.id}`));
    }
    const group = el("select", { name: `${p.name}__group` });
    group.append(el("option", { value: "", text: "or a group…" }));
    for (const g of S.groups) group.append(el("option", { value: g.id, text: `${g.name} (${g.members.join(", ")})` }));
    wrap.append(input, group);
    return wrap;
  } else if (p.kind === "meeting") {
    input = el("select", { name: p.name });
    if (optional) input.append(el("option", { value: "", text: "(none)" }));
    for (const m of S.meetings.filter((x) => x.live)) input.append(el("option", { value: m.id, text: m.id }));
  } else if (p.kind === "resource") {
    input = el("select", { name: p.name });
    if (optional) input.append(el("option", { value: "", text: "(none)" }));
    for (const r of (S.formFlow.resources[p.name] || [])) input.append(el("option", { value: r, text: r }));
  } else if (p.kind === "enum" || p.kind === "priority") {
    input = el("select", { name: p.name });
    if (optional && p.default === null) input.append(el("option", { value: "", text: "(default)" }));
    for (const c of p.choices) input.append(el("option", { value: c, text: c, selected: c === p.default }));
  } else if (p.kind === "boolean") {
    input = el("input", { type: "checkbox", name: p.name, checked: p.default === true });
  } else if (p.kind === "integer" || p.kind === "number" || p.kind === "duration") {
    input = el("input", { type: "number", name: p.name, step: p.kind === "integer" ? "1" : "any",
      placeholder: p.default !== null ? String(p.default) : "" });
  } else if (p.kind === "string") {
    input = el("input", { name: p.name, placeholder: p.default !== null ? String(p.default) : "" });
  } else if (p.kind === "prompt") {
    input = el("input", { name: p.name, placeholder: "a recorded prompt's file name" });
  } else {
    return null;  // set by the flow itself: nothing to ask the dispatcher
  }
  wrap.append(input);
  if (p.unit || p.has_default) wrap.append(el("span", { class: "hint", text: [p.unit ? `in ${p.unit === "s" ? "seconds" : p.unit}` : "", p.has_default ? `default ${p.default}` : ""].filter(Boolean).join(" · ") }));
  return wrap;
}

function openForm(f) {
  S.formFlow = f;
  const form = $("#flow-form"); form.hidden = false; form.dataset.flow = f.name;
  $("#flow-form-title").textContent = f.name.replaceAll("_", " ");
  $("#flow-form-desc").textContent = `${f.description.replaceAll("``", "")} — default ${f.priority_name}, needs “${f.permission}”${f.allowed ? "" : " (your role may not)"}`;
  const fields = $("#flow-form-fields"); fields.replaceChildren();
  let selectedUsed = false;
  const meIsUser = S.users.has(S.me.user);
  for (const p of f.params) {
    let prefill = null;
    if (p.kind === "user" || p.kind === "users") {
      if (SELF_PARAMS.has(p.name) && meIsUser) prefill = S.me.user;
      else if (!selectedUsed && S.selected && S.selected !== S.me.user) { prefill = S.selected; selectedUsed = true; }
    }
    const field = fieldFor(p, prefill);
    if (field) fields.append(field);
  }
  const prio = $("#flow-priority"); prio.replaceChildren();
  for (const [name, value] of PRIORITIES) {
    prio.append(el("option", { value: name, text: name + (value > S.me.max_priority ? " (above your cap)" : ""), selected: value === f.priority }));
  }
}

$("#flow-cancel").addEventListener("click", () => { $("#flow-form").hidden = true; S.formFlow = null; });

function collectArgs(f) {
  const args = {};
  for (const p of f.params) {
    const wrap = document.querySelector(`#flow-form-fields .field[data-param="${CSS.escape(p.name)}"]`);
    if (!wrap) continue;
    if (p.kind === "users") {
      const group = wrap.querySelector("select").value;
      const ids = [...wrap.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
      if (group) args[p.name] = group; else if (ids.length || p.required) args[p.name] = ids;
      continue;
    }
    const input = wrap.querySelector("input, select");
    if (!input || input.disabled) continue;
    if (p.kind === "boolean") { if (input.checked !== p.default) args[p.name] = input.checked; continue; }
    const v = input.value;
    if (v === "") continue;  // left empty: the flow's default applies
    if (p.kind === "integer") args[p.name] = parseInt(v, 10);
    else if (p.kind === "number" || p.kind === "duration") args[p.name] = Number(v);
    else if ((p.kind === "enum" || p.kind === "priority") && v === String(p.default)) continue;
    else args[p.name] = v;
  }
  return args;
}

$("#flow-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = S.formFlow; if (!f) return;
  const body = { flow: f.name, args: collectArgs(f) };
  const prio = $("#flow-priority").value;
  if (prio && prio !== f.priority_name) body.priority = prio;
  try {
    const r = await api("POST", "/api/flows", body);
    status(`${r.name} started at ${r.priority_name}`);
  } catch (e) {
    const field = e.details && e.details.field ? ` [${e.details.field}]` : "";
    status(`${f.name}: ${e.message}${field} (${e.status} ${e.id})`, "error");
  }
});

async function cancelFlow(name) {
  try { const r = await api("POST", `/api/flows/${enc(name)}/cancel`, {}); status(`${name}: ${r.result}`); }
  catch (e) { status(`${name}: ${e.message} (${e.status} ${e.id})`, "error"); }
}

async function sendCommand(f, c) {
  const args = {};
  if (c.takes_user) {
    const who = S.selected || window.prompt(`${c.name}: which user? (${c.description})`);
    if (!who) return;
    args.user = who;
  }
  try {
    const r = await api("POST", `/api/flows/${enc(f.name)}/commands`, { command: c.name, args });
    const reply = r.reply === null || r.reply === undefined ? "done" : typeof r.reply === "object" ? argsText(r.reply) || "done" : r.reply;
    status(`${flowTitle(f.name)} — ${c.name}: ${reply}`);
  }
  catch (e) { status(`${f.name} ${c.name}: ${e.message} (${e.status} ${e.id})`, "error"); }
}

// ------------------------------------------------------------------ virtual phones

function renderPhone() {
  const panel = $("#phones-panel");
  panel.hidden = !S.sim || !S.selected;
  if (panel.hidden) return;
  const u = S.users.get(S.selected);
  $("#phone-user").textContent = `— ${u.id}: ${u.label}`;
}

async function phone(action, body) {
  if (!S.selected) return;
  try { await api("POST", `/api/sim/phones/${enc(S.selected)}/${action}`, body); status(`${S.selected}'s phone: ${action}`); }
  catch (e) { status(`${S.selected}'s phone: ${e.message}`, "error"); }
}
$("#phone-dial").addEventListener("click", () => phone("dial", { to: $("#phone-number").value.trim() }));
$("#phone-answer").addEventListener("click", () => phone("answer"));
$("#phone-hangup").addEventListener("click", () => phone("hangup"));
$("#phone-press").addEventListener("click", () => phone("press", { digits: $("#phone-digits").value.trim() }));

// ------------------------------------------------------------------ traces (sequence diagrams)

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawTrace(trace) {
  const colW = 150, left = 70, top = 40, rowH = 26;
  const x = new Map(trace.lifelines.map((n, i) => [n, left + i * colW + colW / 2]));
  const width = left + trace.lifelines.length * colW + 20;
  const height = top + (trace.steps.length + 1) * rowH + 20;
  const root = svg("svg", { class: "seq", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `sequence diagram of ${trace.flow}` });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5aa9ff" }));
  defs.append(marker); root.append(defs);
  for (const [name, cx] of x) {
    root.append(svg("line", { class: "lifeline", x1: cx, x2: cx, y1: top, y2: height - 10 }));
    const head = svg("g", { class: "head" });
    head.append(svg("rect", { x: cx - colW / 2 + 8, y: 6, width: colW - 16, height: 24, rx: 4 }));
    head.append(svg("text", { x: cx, y: 22, "text-anchor": "middle" }, name));
    root.append(head);
  }
  trace.steps.forEach((s, i) => {
    const y = top + (i + 1) * rowH;
    root.append(svg("text", { class: "time", x: 4, y: y + 4 }, `${s.t.toFixed(2)}s`));
    const x1 = x.get(s.from), x2 = x.get(s.to);
    const kind = s.kind === "preemption.started" ? " preempt" : s.kind === "leg.state" ? " leg" : "";
    const g = svg("g", { class: "msg" + kind });
    g.append(svg("title", {}, `#${s.seq} ${s.text}`));
    if (x1 === x2) {
      const note = svg("g", { class: "note" });
      const label = s.label.length > 40 ? s.label.slice(0, 39) + "…" : s.label;
      note.append(svg("rect", { x: x1 + 6, y: y - 12, width: Math.min(7 * label.length + 12, colW * 2), height: 18, rx: 3 }));
      note.append(svg("text", { x: x1 + 12, y: y + 1 }, label));
      g.append(note);
    } else {
      g.append(svg("line", { x1, y1: y, x2: x2 + (x2 > x1 ? -4 : 4), y2: y, "marker-end": "url(#arrow)" }));
      g.append(svg("text", { x: (x1 + x2) / 2, y: y - 4, "text-anchor": "middle" }, s.label));
    }
    root.append(g);
  });
  return root;
}

async function openTrace(name) {
  try {
    const trace = await api("GET", `/api/flows/${enc(name)}/trace`);
    $("#trace-title").textContent = `${trace.flow} — ${trace.steps.length} steps${trace.ended ? " (ended)" : ""}`;
    $("#trace-body").replaceChildren(drawTrace(trace));
    $("#trace").showModal();
  } catch (e) { status(`${name}: ${e.message}`, "error"); }
}
$("#trace-close").addEventListener("click", () => $("#trace").close());

// ------------------------------------------------------------------ start

(async () => {
  try { await enter(); } catch { showLogin(); }
})();
