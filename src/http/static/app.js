// The worklist page: plain script, no library, every value written as text (never as HTML).
"use strict";

const state = { token: sessionStorage.getItem("triage-token") || "", me: null, cursor: null, timer: null, renew: null, blobs: [], sso: { enabled: false } };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

async function api(path, options) {
  const rsp = await fetch(path, { ...(options || {}), headers: { ...((options || {}).headers || {}), Authorization: "Bearer " + state.token } });
  if (rsp.status === 401) { signOut("Your token was refused: sign in again."); throw new Error("unauthorized"); }
  if (!rsp.ok) {
    let why = rsp.status + " " + rsp.statusText;
    try { why = (await rsp.json()).error || why; } catch (_) {}
    const err = new Error(why); err.status = rsp.status; throw err;
  }
  return rsp;
}

async function picture(url) {
  const blob = await (await api(url)).blob();
  const u = URL.createObjectURL(blob);
  state.blobs.push(u);
  return u;
}

function show(section) {
  for (const id of ["login", "worklist", "study", "aes", "performance"]) $(id).hidden = id !== section;
  $("nav").hidden = section === "login";
}

function signOut(message) {
  sessionStorage.removeItem("triage-token");
  sessionStorage.removeItem("triage-refresh");
  sessionStorage.removeItem("triage-renew-at");
  clearTimeout(state.renew);
  state.token = ""; state.me = null;
  clearInterval(state.timer);
  $("login-error").textContent = message || "";
  $("demo-warning").hidden = true;
  show("login");
}

async function signIn(token) {
  state.token = token.trim();
  try {
    state.me = await (await api("/api/me")).json();
  } catch (e) {
    if (e.message !== "unauthorized") $("login-error").textContent = e.message;
    return;
  }
  sessionStorage.setItem("triage-token", state.token);
  $("who").textContent = state.me.name + " (" + state.me.role + ")";
  $("nav-aes").hidden = state.me.role !== "admin";
  $("nav-performance").hidden = state.me.role !== "admin";
  clearInterval(state.timer);
  state.timer = setInterval(() => { if (!$("worklist").hidden) loadWorklist(false); }, state.me.refresh_seconds * 1000);
  route();
}

// Single sign-on: the authorization code flow with PKCE (S256), as a public client. The node
// exchanges the code (POST /auth/token), so the page talks to its own origin only.
function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function randomText() { return b64url(crypto.getRandomValues(new Uint8Array(32))); }
function redirectUri() { return location.origin + "/"; }

async function ssoConfig() {
  try { const r = await fetch("/auth/config"); return r.ok ? await r.json() : { enabled: false }; } catch (_) { return { enabled: false }; }
}

async function ssoStart() {
  const c = state.sso;
  const verifier = randomText(), st = randomText();
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("triage-pkce", JSON.stringify({ verifier, state: st }));
  const u = new URL(c.authorization_endpoint);
  u.search = new URLSearchParams({ response_type: "code", client_id: c.client_id, redirect_uri: redirectUri(), scope: c.scope,
    state: st, code_challenge: challenge, code_challenge_method: "S256", resource: c.resource }).toString();
  location.assign(u.toString());
}

// Back from the provider: true when the address carried its answer (handled here).
async function ssoReturn() {
  const q = new URLSearchParams(location.search);
  if (!q.has("code") && !q.has("error")) return false;
  const saved = JSON.parse(sessionStorage.getItem("triage-pkce") || "null");
  sessionStorage.removeItem("triage-pkce");
  history.replaceState(null, "", "/" + location.hash);
  show("login");
  if (q.has("error")) { $("login-error").textContent = "Sign-in failed at the identity provider: " + q.get("error"); return true; }
  if (!saved || saved.state !== q.get("state")) { $("login-error").textContent = "Sign-in failed: the answer does not match this page's request."; return true; }
  const rsp = await fetch("/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: q.get("code"), code_verifier: saved.verifier, redirect_uri: redirectUri() }) });
  if (!rsp.ok) {
    let why = rsp.status + " " + rsp.statusText;
    try { why = (await rsp.json()).error || why; } catch (_) {}
    $("login-error").textContent = "Sign-in failed: " + why;
    return true;
  }
  const t = await rsp.json();
  if (t.id_token) sessionStorage.setItem("triage-id-token", t.id_token);
  await signIn(t.access_token);
  ssoKeep(t);
  return true;
}

// Staying signed in: where the provider gave a refresh token, a new access token is fetched
// (through the node's /auth/token) before the current one expires. The tab keeps both; a
// sign-out, or a refresh the provider refuses, forgets them.
function ssoKeep(t) {
  if (t.refresh_token) sessionStorage.setItem("triage-refresh", t.refresh_token);
  const life = Number(t.expires_in) || 0;
  if (life > 0) sessionStorage.setItem("triage-renew-at", String(Date.now() + Math.max(5, Math.min(life - 60, life * 0.8)) * 1000));
  ssoSchedule();
}
function ssoSchedule() {
  clearTimeout(state.renew);
  const at = Number(sessionStorage.getItem("triage-renew-at") || 0);
  if (!sessionStorage.getItem("triage-refresh") || !at) return;
  state.renew = setTimeout(ssoRenew, Math.max(0, at - Date.now()));
}
async function ssoRenew() {
  const refresh = sessionStorage.getItem("triage-refresh");
  if (!refresh || !state.token) return;
  let rsp;
  try {
    rsp = await fetch("/auth/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ refresh_token: refresh }) });
  } catch (_) { state.renew = setTimeout(ssoRenew, 15000); return; }
  if (!rsp.ok) { sessionStorage.removeItem("triage-refresh"); return; }
  const t = await rsp.json();
  state.token = t.access_token;
  sessionStorage.setItem("triage-token", state.token);
  ssoKeep(t);
}

// The user's sign-out: audited by the node, then the provider's session ends too.
async function signOutEverywhere() {
  const idToken = sessionStorage.getItem("triage-id-token");
  try { await fetch("/auth/logout", { method: "POST", headers: { Authorization: "Bearer " + state.token } }); } catch (_) {}
  sessionStorage.removeItem("triage-id-token");
  signOut("");
  if (state.sso.enabled && state.sso.end_session_endpoint && idToken) {
    const u = new URL(state.sso.end_session_endpoint);
    u.search = new URLSearchParams({ id_token_hint: idToken, post_logout_redirect_uri: redirectUri(), client_id: state.sso.client_id }).toString();
    location.assign(u.toString());
  }
}

function fmtTime(ms) { return ms ? new Date(ms).toLocaleString() : ""; }
function fmtSeconds(ms) { return (ms / 1000).toFixed(1) + " s"; }
function pct(p) { return (Math.floor(p * 1000) / 10).toFixed(1) + "%"; }

function filterQuery() {
  const q = new URLSearchParams();
  for (const [key, id] of [["priority", "f-priority"], ["finding", "f-finding"], ["modality", "f-modality"], ["model", "f-model"], ["state", "f-state"], ["sort", "f-sort"]]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

function deliveryText(item) {
  if (!item.deliveries.length) return "nothing sent";
  return item.deliveries.map((d) => d.count + " " + d.kind.toUpperCase() + " " + d.state).join(", ");
}

function notifiedText(item) {
  const n = item.notification;
  if (!n) return "";
  const parts = [];
  if (n.time_to_notification_ms != null) parts.push("called after " + fmtSeconds(n.time_to_notification_ms));
  parts.push(n.acknowledged_at_ms ? "ack " + (n.acknowledged_by || "") + " after " + fmtSeconds(n.time_to_acknowledgement_ms) : "not acknowledged");
  return parts.join("; ");
}

// A detector's finding: how many boxes it kept and the largest.
function boxesText(f) {
  if (!f.boxes) return "";
  const largest = f.largest_box ? ", largest " + f.largest_box.area + (f.largest_box.unit === "mm2" ? " mm²" : " px") : "";
  return " [" + f.boxes + (f.boxes === 1 ? " box" : " boxes") + largest + "]";
}

function row(item) {
  const p = item.priority;
  const tr = el("tr", { class: "row " + p.toLowerCase() + (item.reading.state === "read" ? " read" : ""), "data-study": item.study_id, "data-priority": p });
  tr.addEventListener("click", () => { location.hash = "#/study/" + item.study_id; });
  const positives = item.findings.filter((f) => f.positive);
  const findings = item.reasons.length ? "not analysed: " + item.reasons.join("; ") :
    (positives.length ? positives.map((f) => f.label + " " + pct(f.probability) + " (" + f.tier.replace("_", " ") + ")" + boxesText(f)).join(", ") : "no finding");
  const thumb = el("td", { class: "thumb" });
  const prio = el("td", { class: "priority" }, p.replaceAll("_", " "));
  if (item.lowered_from) prio.append(el("div", { class: "lowered" }, "lowered from " + item.lowered_from));
  if (item.uncertain) prio.append(el("div", { class: "uncertain" }, "uncertain: near the threshold"));
  const models = [...new Set(item.findings.map((f) => f.model + " " + f.model_version))].join(", ") || item.models.join(", ");
  const reading = item.reading.state + (item.reading.reader ? " by " + item.reading.reader : "");
  tr.append(prio, thumb, el("td", {}, (item.patient && item.patient.name) || ""), el("td", {}, (item.patient && item.patient.accession) || ""),
    el("td", {}, findings), el("td", {}, models + (item.demonstration ? " [demo]" : "")), el("td", {}, fmtTime(item.received_at_ms)),
    el("td", {}, fmtSeconds(item.time_to_result_ms)), el("td", {}, deliveryText(item)), el("td", { class: "notified" }, notifiedText(item)),
    el("td", { class: "reading" }, reading));
  if (positives.length) {
    picture("/api/studies/" + item.study_id + "/heatmaps/0?size=thumbnail").then((u) => thumb.append(el("img", { class: "thumb", src: u, alt: "heatmap" }))).catch(() => {});
  }
  return tr;
}

async function loadWorklist(more) {
  const q = filterQuery();
  q.set("limit", "50");
  if (more && state.cursor) q.set("cursor", state.cursor);
  try {
    const page = await (await api("/api/worklist?" + q.toString())).json();
    const body = $("rows").tBodies[0];
    if (!more) {
      for (const u of state.blobs) URL.revokeObjectURL(u);
      state.blobs = [];
      body.replaceChildren();
    }
    for (const item of page.items) body.append(row(item));
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
    $("list-error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    if (page.items.some((i) => i.demonstration)) $("demo-warning").hidden = false;
  } catch (e) {
    if (e.message !== "unauthorized") $("list-error").textContent = e.message;
  }
}

async function readingAction(id, action) {
  try {
    await api("/api/studies/" + id + "/" + action, { method: "POST" });
    await loadStudy(id);
  } catch (e) {
    if (e.message !== "unauthorized") $("study-error").textContent = (e.status === 409 ? "Conflict: " : "") + e.message;
  }
}

// The signed-in reader's verdict on one finding: agree / disagree / not assessable, with an
// optional corrected label and comment; closed once the study is marked read.
function feedbackControl(id, r, f, s) {
  const mine = (s.feedback || []).find((x) => x.model === r.model && x.label === f.label && x.reader === state.me.name);
  const box = el("span", { class: "feedback", "data-label": f.label });
  const closed = s.reading.state === "read";
  const corrected = el("select", { class: "fb-corrected", "aria-label": "corrected finding" }, el("option", { value: "" }, "(same label)"),
    ...[...new Set(r.findings.map((x) => x.label)), "no_finding"].map((l) => el("option", { value: l }, l.replace("_", " "))));
  if (mine && mine.corrected_label) corrected.value = mine.corrected_label;
  const comment = el("input", { class: "fb-comment", type: "text", maxlength: "500", placeholder: "comment (optional)", "aria-label": "comment" });
  if (mine && mine.comment) comment.value = mine.comment;
  const said = el("span", { class: "fb-said" }, mine ? "your verdict: " + mine.verdict.replace("_", " ") : "");
  for (const [verdict, label] of [["agree", "Agree"], ["disagree", "Disagree"], ["not_assessable", "Not assessable"]]) {
    const b = el("button", { type: "button", class: "fb-" + verdict, onclick: async () => {
      try {
        await api("/api/studies/" + id + "/feedback", { method: "PUT", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ model: r.model, label: f.label, verdict, corrected_label: corrected.value || null, comment: comment.value || null }) });
        await loadStudy(id);
      } catch (e) {
        if (e.message !== "unauthorized") $("study-error").textContent = (e.status === 409 ? "Closed: " : "") + e.message;
      }
    } }, label);
    if (closed) b.disabled = true;
    box.append(b, " ");
  }
  box.append(corrected, " ", comment, " ", said);
  return box;
}

async function loadStudy(id) {
  show("study");
  const box = $("study-body");
  try {
    const s = await (await api("/api/studies/" + id)).json();
    box.replaceChildren();
    if (s.demonstration) $("demo-warning").hidden = false;
    const who = s.patient ? [s.patient.name, "ID " + (s.patient.id || "?"), "accession " + (s.patient.accession || "?")].join(" · ") : "";
    box.append(el("h2", { id: "study-title" }, s.priority.replaceAll("_", " ") + " · study " + s.study_id), el("p", {}, who));
    if (s.lowered_from) box.append(el("p", { class: "lowered" }, "A newer analysis lowered this study from " + s.lowered_from + "."));
    if (s.uncertain) box.append(el("p", { class: "uncertain" }, "Uncertain negative: an AI score near the threshold (lowest confidence tier). It is listed before the confident negatives; read it carefully."));
    box.append(el("p", {}, "Received " + fmtTime(s.received_at_ms) + ", result after " + fmtSeconds(s.time_to_result_ms) + ". To the PACS: " + deliveryText(s) + "."));
    box.append(el("p", { id: "study-error", class: "error", role: "alert" }));
    const reading = el("p", {}, "Reading: " + s.reading.state + (s.reading.reader ? " by " + s.reading.reader : "") + " ");
    for (const [action, label] of [["claim", "Claim"], ["read", "Mark read"], ["release", "Release"]]) {
      reading.append(el("button", { type: "button", id: "btn-" + action, onclick: () => readingAction(id, action) }, label), " ");
    }
    box.append(reading);
    if (s.notifications.length) {
      const ack = el("p", { id: "notification" }, "On-call: " + s.notifications.map((n) => n.rule + (n.level ? " (escalation " + n.level + ")" : "") +
        (n.delivered_at_ms ? " reached " + fmtTime(n.delivered_at_ms) : " not reached yet")).join(", ") + ". " + (notifiedText(s) || "") + " ");
      if (!s.notification || !s.notification.acknowledged_at_ms) {
        ack.append(el("button", { type: "button", id: "btn-acknowledge", onclick: () => readingAction(id, "acknowledge") }, "Acknowledge"));
      }
      box.append(ack);
    }
    for (const r of s.results) {
      const sec = el("section", { class: "result" }, el("h3", {}, (r.model || "no model") + " " + r.model_version + " · " + r.state + (r.priority ? " · " + r.priority : "")));
      if (r.demonstration) sec.append(el("p", { class: "warning" }, "Demonstration model, not clinically validated."));
      if (r.error) sec.append(el("p", { class: "error" }, "Not analysed: " + r.error));
      const list = el("ul", { class: "findings" });
      for (const f of r.findings) {
        const li = el("li", {}, f.label + ": " + pct(f.probability) + (f.positive ? (f.urgent ? " URGENT" : " positive") : " negative") + " (" + f.tier.replace("_", " ") + " confidence) ");
        li.append(feedbackControl(id, r, f, s));
        list.append(li);
      }
      sec.append(list);
      for (const f of r.findings.filter((f) => f.heatmap)) {
        const fig = el("figure", {});
        sec.append(fig);
        picture(f.heatmap + "?size=full").then((u) => fig.append(el("img", { class: "full", src: u, alt: "heatmap of " + f.label }))).catch((e) => fig.append(el("p", { class: "error" }, e.message)));
      }
      if (r.intended_use) sec.append(el("p", { class: "muted" }, "Intended use: " + r.intended_use));
      if (r.limits) sec.append(el("p", { class: "muted" }, "Limits: " + r.limits));
      box.append(sec);
    }
    if (s.objects.length) {
      const objs = el("p", {}, "Result objects (de-identified copies): ");
      s.objects.forEach((o, i) => objs.append(el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); download(o.url, "study-" + id + "-" + o.kind + "-" + i + ".dcm"); } }, o.kind.toUpperCase() + " " + (i + 1)), " "));
      box.append(objs);
    }
    similarPanel(id, box);
  } catch (e) {
    if (e.message !== "unauthorized") box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// Similar confirmed cases: earlier studies a reader confirmed, nearest by the model's embedding.
async function similarPanel(id, box) {
  let v;
  try { v = await (await api("/api/studies/" + id + "/similar?k=5")).json(); } catch (e) { return; }
  const models = (v.models || []).filter((m) => m.cases.length);
  if (!models.length) return;
  const sec = el("section", { class: "similar", id: "similar" }, el("h3", {}, "Similar confirmed cases"), el("p", { class: "muted" }, v.meaning));
  for (const m of models) {
    const list = el("ul", {});
    for (const c of m.cases) {
      const li = el("li", {}, el("a", { href: "#/study/" + c.study_id }, "study " + c.study_id), " · " + c.label + " " + pct(c.probability) + ", reader " + c.verdict +
        " · distance " + c.distance.toFixed(3) + " · received " + fmtTime(c.received_at_ms) + " ");
      if (c.heatmap) picture(c.heatmap + "?size=thumbnail").then((u) => li.append(el("img", { class: "thumb", src: u, alt: "heatmap of study " + c.study_id }))).catch(() => {});
      list.append(li);
    }
    sec.append(el("p", {}, m.model + " " + m.model_version + " (" + m.method + " search of " + m.confirmed + " confirmed studies)"), list);
  }
  box.append(sec);
}

async function download(url, name) {
  const u = URL.createObjectURL(await (await api(url)).blob());
  const a = el("a", { href: u, download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(u), 10000);
}

function estimate(e) {
  return e ? pct(e.value) + " (" + pct(e.low) + "-" + pct(e.high) + ", n=" + e.total + ")" : "-";
}

async function loadPerformance() {
  show("performance");
  try {
    const rows = await (await api("/api/performance")).json();
    const body = $("perf-rows").tBodies[0];
    body.replaceChildren();
    for (const m of rows) {
      body.append(el("tr", { "data-model": m.model }, el("td", {}, m.model), el("td", {}, m.model_version), el("td", {}, m.studies), el("td", {}, m.positive),
        el("td", {}, m.urgent), el("td", {}, m.verdicts), el("td", {}, estimate(m.agreement)), el("td", {}, estimate(m.ppv)),
        el("td", {}, estimate(m.sensitivity)), el("td", {}, estimate(m.npv)), el("td", {}, m.turnaround_median_ms == null ? "-" : fmtSeconds(m.turnaround_median_ms))));
    }
    await loadShadows();
    $("perf-error").textContent = "";
  } catch (e) {
    if (e.message !== "unauthorized") $("perf-error").textContent = e.message;
  }
}

function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

// What a shadow comparison says, in plain words.
function shadowWords(c) {
  const name = c.model + " " + c.model_version;
  if (!c.both_triaged) return name + " has no study triaged by both it and " + c.shadow_of + " yet (" + plural(c.studies, "study", "studies") + " compared).";
  const a = c.agreement;
  let s = name + " agreed with " + c.shadow_of + " on " + a.successes + " of " + plural(a.total, "study", "studies") + " (" + pct(a.value) +
    ", 95% interval " + pct(a.low) + " to " + pct(a.high) + ")";
  s += c.score_correlation == null ? "; too few varying scores for a correlation. " : "; their scores correlate with r = " + c.score_correlation.toFixed(2) + ". ";
  s += "Had it been live, " + plural(c.would_raise_to_urgent, "study", "studies") + " would have been made URGENT that " + c.shadow_of + " did not, and " +
    plural(c.would_lower_from_urgent, "study", "studies") + " " + c.shadow_of + " made URGENT would not have been.";
  if (c.shadow_failed) s += " It failed on " + plural(c.shadow_failed, "study", "studies") + " " + c.shadow_of + " did not.";
  return s;
}

async function loadShadows() {
  const rows = await (await api("/api/shadow")).json();
  const body = $("shadow-rows").tBodies[0];
  body.replaceChildren();
  $("shadow-words").replaceChildren();
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "No shadow model has results yet.")));
  for (const c of rows) {
    body.append(el("tr", { "data-model": c.model }, el("td", {}, c.model), el("td", {}, c.model_version), el("td", {}, c.shadow_of),
      el("td", {}, c.studies + " (" + c.both_triaged + ")"), el("td", {}, estimate(c.agreement)),
      el("td", {}, c.score_correlation == null ? "-" : c.score_correlation.toFixed(2)), el("td", {}, c.would_raise_to_urgent),
      el("td", {}, c.would_lower_from_urgent), el("td", {}, c.shadow_failed)));
    $("shadow-words").append(el("li", { "data-model": c.model }, shadowWords(c)));
  }
}

async function loadAes() {
  show("aes");
  try {
    const aes = await (await api("/api/aes")).json();
    const body = $("ae-rows").tBodies[0];
    body.replaceChildren();
    for (const a of aes) {
      const actions = el("td", {});
      const act = async (method, path, what) => {
        try {
          const rsp = await api("/api/aes/" + encodeURIComponent(a.ae_title) + path, { method });
          if (what === "echo") { const o = await rsp.json(); $("ae-error").textContent = "C-ECHO " + o.ae_title + ": " + (o.success ? "success" : "failed: " + o.error); }
          else { $("ae-error").textContent = ""; }
          if (what !== "echo") loadAes();
        } catch (e) { if (e.message !== "unauthorized") $("ae-error").textContent = e.message; }
      };
      actions.append(el("button", { type: "button", onclick: () => act("POST", "/echo", "echo") }, "Echo"), " ",
        el("button", { type: "button", onclick: () => act("POST", a.enabled ? "/disable" : "/enable", "toggle") }, a.enabled ? "Disable" : "Enable"), " ",
        el("button", { type: "button", onclick: () => { if (confirm("Remove " + a.ae_title + "?")) act("DELETE", "", "remove"); } }, "Remove"), " ",
        el("button", { type: "button", onclick: () => { $("ae-title").value = a.ae_title; $("ae-role").value = a.role; $("ae-host").value = a.host || ""; $("ae-port").value = a.port || ""; $("ae-enabled").checked = a.enabled; } }, "Edit"));
      body.append(el("tr", { "data-ae": a.ae_title }, el("td", {}, a.ae_title), el("td", {}, a.role), el("td", {}, a.host || ""), el("td", {}, a.port || ""), el("td", {}, a.enabled ? "yes" : "no"), actions));
    }
  } catch (e) {
    if (e.message !== "unauthorized") $("ae-error").textContent = e.message;
  }
}

async function saveAe(ev) {
  ev.preventDefault();
  const title = $("ae-title").value.trim();
  const body = { role: $("ae-role").value, host: $("ae-host").value.trim() || null, port: $("ae-port").value ? Number($("ae-port").value) : null, enabled: $("ae-enabled").checked };
  try {
    const exists = [...$("ae-rows").tBodies[0].rows].some((r) => r.dataset.ae === title);
    await api(exists ? "/api/aes/" + encodeURIComponent(title) : "/api/aes", { method: exists ? "PUT" : "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(exists ? body : { ae_title: title, ...body }) });
    $("ae-error").textContent = "";
    loadAes();
  } catch (e) {
    if (e.message !== "unauthorized") $("ae-error").textContent = e.message;
  }
}

function route() {
  if (!state.me) return show("login");
  const h = location.hash;
  const m = h.match(/^#\/study\/(\d+)$/);
  if (m) return loadStudy(Number(m[1]));
  if (h === "#/aes" && state.me.role === "admin") return loadAes();
  if (h === "#/performance" && state.me.role === "admin") return loadPerformance();
  show("worklist");
  loadWorklist(false);
}

window.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value); });
  $("signout").addEventListener("click", () => signOutEverywhere());
  $("sso-signin").addEventListener("click", () => ssoStart());
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadWorklist(false); });
  $("more").addEventListener("click", () => loadWorklist(true));
  $("ae-form").addEventListener("submit", saveAe);
  window.addEventListener("hashchange", route);
  state.sso = await ssoConfig();
  $("sso").hidden = !state.sso.enabled;
  if (await ssoReturn()) return;
  if (state.token) { signIn(state.token); ssoSchedule(); } else show("login");
});
