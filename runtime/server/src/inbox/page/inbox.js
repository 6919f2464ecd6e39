// The approval inbox. The approver's private key is imported as a non-extractable WebCrypto
// key and signs here; the server sees signatures only. Every value from the server is put in
// the page as text, never as markup.
"use strict";

const signedIn = { key: null, publicKey: null, token: null, approver: null };
// What the lists showed last: they are redrawn only when it changes, so that nothing moves
// under the approver's pointer.
let shownLast = "";
const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// A PKCS#8 Ed25519 key (RFC 8410, version 1 or 2, as `warden keygen` writes it), re-encoded as
// version 1 (seed only), which every WebCrypto accepts: the signing key (non-extractable) and
// its public key (`ed25519:<base64url>`, which the sign-in names).
async function importKey(text) {
  const match = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/.exec(text);
  if (!match) throw new Error("this file is not a PEM private key (warden keygen writes one)");
  const der = Uint8Array.from(atob(match[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  const algorithm = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
  const ok = der.length >= 48 && der[0] === 0x30 && der[2] === 0x02 && der[3] === 0x01 &&
    algorithm.every((b, i) => der[5 + i] === b);
  if (!ok) throw new Error("this file is not an Ed25519 private key");
  const v1 = new Uint8Array(48);
  v1.set([0x30, 0x2e, 0x02, 0x01, 0x00, ...algorithm]);
  v1.set(der.subarray(16, 48), 16);
  try {
    // Imported once to read its public half, then again as a key nothing can read back.
    const readable = await crypto.subtle.importKey("pkcs8", v1, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", readable);
    const publicKey = "ed25519:" + jwk.x;
    jwk.d = "";
    const key = await crypto.subtle.importKey("pkcs8", v1, { name: "Ed25519" }, false, ["sign"]);
    return { key, publicKey };
  } finally {
    der.fill(0);
    v1.fill(0);
  }
}

async function sign(text) {
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, signedIn.key, encoder.encode(text));
  return base64url(new Uint8Array(signature));
}

async function api(path, body) {
  const headers = {};
  if (signedIn.token) headers.Authorization = "Bearer " + signedIn.token;
  const init = { method: body ? "POST" : "GET", headers, credentials: "omit", cache: "no-store" };
  if (body) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.error || "the server answered " + response.status);
    error.status = response.status;
    throw error;
  }
  return answer;
}

async function signIn(file) {
  $("sign-in-error").textContent = "";
  try {
    const imported = await importKey(await file.text());
    signedIn.key = imported.key;
    signedIn.publicKey = imported.publicKey;
    const { challenge } = await api("/api/challenge", {});
    const signature = await sign(`warden-inbox-sign-in-v1\n${challenge}\n${location.origin}`);
    const session = await api("/api/sign-in", { challenge, public_key: signedIn.publicKey, signature });
    signedIn.token = session.token;
    signedIn.approver = session.approver;
  } catch (e) {
    signedIn.key = null;
    $("sign-in-error").textContent = e.message;
    return;
  } finally {
    $("key-file").value = "";
  }
  $("who").textContent = "Signed in as " + signedIn.approver;
  $("sign-in").hidden = true;
  $("inbox").hidden = false;
  await refresh();
  setInterval(refresh, 2000);
}

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function left(seconds) {
  if (seconds <= 0) return "expired";
  const m = Math.floor(seconds / 60);
  return m > 0 ? `${m} min ${seconds % 60} s left` : `${seconds} s left`;
}

function card(a, now) {
  const box = element("article", null, "approval");
  box.dataset.approval = a.id;
  box.id = "approval-" + a.id;
  if (location.hash === "#approval=" + a.id) box.classList.add("focused");
  box.append(element("h3", `${a.agent} wants to call ${a.tool}`));
  const facts = element("dl");
  const fact = (name, value, className) => facts.append(element("dt", name), element("dd", value, className));
  fact("Approval", a.id, "digest");
  fact("Status", a.status + (a.approver ? ` (by ${a.approver})` : "") + (a.used_by ? `, by call ${a.used_by}` : ""), "status");
  fact("Agent", a.agent);
  fact("On behalf of", a.user ? `${a.user} (delegation ${a.delegation || "unknown"})` : "nobody (the agent's own call)");
  if (a.session) {
    const taint = a.tainted === null ? "unknown (the session has ended)"
      : a.tainted ? "tainted: " + (a.taint_reason || "by an earlier call") : "clean";
    fact("Session", `${a.session}, ${taint}`);
  }
  fact("Tool", a.tool);
  fact("Tool digest", a.tool_digest, "digest");
  fact("Why it waits", a.reason);
  fact("Asked", new Date(a.created * 1000).toLocaleString());
  fact("Time left", a.status === "pending" ? left(a.expires - now) : "—", "left");
  if (a.status === "pending") facts.querySelector("dd.left").dataset.expires = a.expires;
  box.append(facts, element("h4", "Input"), element("pre", a.input, "input"));
  if (!a.verifiable) {
    box.append(element("p", "Not verifiable: " + a.unverifiable + ". It cannot be approved.", "error unverifiable"));
  }
  if (a.status === "pending") {
    const actions = element("div", null, "actions");
    const approve = element("button", "Approve", "approve");
    const deny = element("button", "Deny", "deny");
    approve.disabled = !a.verifiable;
    // A decision takes two clicks on the same button: one click that lands on a card that
    // has just come under the pointer decides nothing.
    const twice = (button, decision, label) => button.addEventListener("click", () => {
      if (button.classList.contains("armed")) return decide(a, decision, [approve, deny]);
      [approve, deny].forEach((b) => { b.classList.remove("armed"); });
      button.classList.add("armed");
      button.textContent = `${label} ${a.tool} for ${a.agent}? Click again`;
    });
    twice(approve, "approve", "Approve");
    twice(deny, "deny", "Deny");
    actions.append(approve, deny);
    box.append(actions);
  }
  return box;
}

async function decide(a, decision, buttons) {
  buttons.forEach((b) => { b.disabled = true; });
  $("notice").textContent = "";
  try {
    const prefix = decision === "approve" ? "warden-approval-v1" : "warden-approval-deny-v1";
    const signature = await sign(`${prefix}\n${a.id}\n${a.digest}\n${a.expires}`);
    await api("/api/decide", { id: a.id, decision, signature });
  } catch (e) {
    $("notice").textContent = e.message;
  }
  shownLast = "";
  await refresh();
}

async function refresh() {
  let answer;
  try {
    answer = await api("/api/approvals");
  } catch (e) {
    $("notice").textContent = e.message;
    if (e.status === 401) location.reload();
    return;
  }
  const shown = JSON.stringify([answer.pending, answer.decided]);
  if (shown === shownLast) {
    // Only the clock moved.
    for (const cell of document.querySelectorAll("dd.left[data-expires]")) {
      cell.textContent = left(Number(cell.dataset.expires) - answer.now);
    }
    return;
  }
  shownLast = shown;
  $("pending").replaceChildren(...answer.pending.map((a) => card(a, answer.now)));
  $("decided").replaceChildren(...answer.decided.map((a) => card(a, answer.now)));
  $("none-pending").hidden = answer.pending.length > 0;
  const focused = document.querySelector(".approval.focused");
  if (focused && !refresh.scrolled) {
    focused.scrollIntoView({ block: "center" });
    refresh.scrolled = true;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) signIn(file);
  });
});
