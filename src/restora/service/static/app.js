// Restora web page: batch upload with a queue, live progress over SSE, history, before/after
// comparison (slider or side by side, zoom and pan), face crops, damage-mask brush, dark mode.
// Plain JS, no build step and no third-party URL, so the page works offline from the server itself.
"use strict";

const $ = (id) => document.getElementById(id);
// Formats every browser shows itself; anything else is compared with the server's preview.
const BROWSER_TYPES = new Set(["image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/bmp"]);
const CONCURRENT = 3;  // jobs in flight at once (see pump)

const state = {
  files: [],          // chosen, not yet submitted
  entries: [],        // queue rows: {key, file, name, tool, status, percent, stage, jobId, result, error}
  shown: null,        // the entry or history job shown in the result panel
  focusedResult: false,
  historyCursor: null,
  holdUntil: 0,       // no upload before this time (the server said it was busy, or was unreachable)
  unreachable: 0,     // uploads in a row that could not reach the server
};
let keySeq = 0;

// ---- small helpers -----------------------------------------------------------------------------
function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(props).forEach(([k, v]) => {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v);
  });
  children.flat().forEach((c) => { if (c !== null && c !== undefined) node.append(c); });
  return node;
}

function announce(text) {
  // Clear first so the same sentence twice is still read out.
  const region = $("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

function apiKey() { return $("api-key").value.trim(); }
function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}
// <img>/<a> cannot send headers: the server also accepts ?api_key= (as for EventSource).
function authUrl(url) {
  const key = apiKey();
  if (!url || !key || !url.startsWith("/")) return url;
  return `${url}${url.includes("?") ? "&" : "?"}api_key=${encodeURIComponent(key)}`;
}
$("api-key").value = localStorage.getItem("restora-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("restora-api-key", $("api-key").value);
  loadHistory();
});

// ---- theme ---------------------------------------------------------------------------------------
function applyTheme(theme) {
  const dark = theme ? theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("theme").setAttribute("aria-pressed", String(dark));
}
$("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("restora-theme", next);
  applyTheme(next);
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(localStorage.getItem("restora-theme")));
applyTheme(localStorage.getItem("restora-theme"));

// ---- file choice -------------------------------------------------------------------------------
function setFiles(list) {
  const files = Array.from(list || []).filter((f) => f && f.size >= 0);
  if (!files.length) return;
  state.files = files;
  const label = files.length === 1 ? `${files[0].name} (${formatBytes(files[0].size)})`
    : `${files.length} files (${formatBytes(files.reduce((n, f) => n + f.size, 0))})`;
  $("file-name").textContent = label;
  $("submit").disabled = false;
  $("submit").textContent = files.length === 1 ? "Restore" : `Restore ${files.length} photos`;
  // A new choice starts a new comparison: the previous result must not look like this one's.
  clearResult();
  $("error-panel").hidden = true;
}

const drop = $("drop");
$("file").addEventListener("change", (e) => setFiles(e.target.files));
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
});
drop.addEventListener("click", (e) => { if (e.target === drop) $("file").click(); });
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => setFiles(e.dataTransfer.files));

// Paste (Ctrl/Cmd+V) anywhere on the page: the clipboard's images are taken as if dropped. In a
// field where paste edits text (the seed, the API key...) it keeps its normal meaning.
const NOT_TEXT = new Set(["button", "checkbox", "color", "file", "hidden", "image", "radio", "range", "reset", "submit"]);
function editsText(node) {
  if (!(node instanceof Element)) return false;
  if (node.isContentEditable || node.tagName === "TEXTAREA") return true;
  return node.tagName === "INPUT" && !NOT_TEXT.has(node.type);
}

// A clipboard image often has no name, or the browser's generic "image.png": named by its type
// instead (pasted-1.png, pasted-2.jpg...), so the queue, history and results read sensibly.
const PASTE_EXT = { jpeg: "jpg", "svg+xml": "svg", tiff: "tif", "x-icon": "ico", "vnd.microsoft.icon": "ico" };
let pasteSeq = 0;
function pastedName(file) {
  if (file.name && !/^image\.[a-z0-9]+$/i.test(file.name)) return file;
  const sub = file.type.split("/")[1] || "png";
  const ext = PASTE_EXT[sub] || sub.replace(/^x-/, "").replace(/[^a-z0-9].*$/i, "") || "png";
  return new File([file], `pasted-${++pasteSeq}.${ext}`, { type: file.type, lastModified: file.lastModified });
}

function clipboardImages(data) {
  if (!data) return [];
  const isImage = (f) => f && f.type.startsWith("image/");
  let files = Array.from(data.files || []).filter(isImage);
  if (!files.length) {
    files = Array.from(data.items || []).filter((it) => it.kind === "file" && it.type.startsWith("image/"))
      .map((it) => it.getAsFile()).filter(isImage);
  }
  return files;
}

// Apple keyboards paste with Cmd+V.
if (/Mac|iPhone|iPad|iPod/.test(navigator.platform || navigator.userAgent)) $("paste-key").textContent = "Cmd+V";

document.addEventListener("paste", (e) => {
  if (editsText(e.target) || editsText(document.activeElement)) return;
  const files = clipboardImages(e.clipboardData);
  if (!files.length) return;  // text or nothing usable: no file, no error
  e.preventDefault();
  setFiles(files.map(pastedName));
});

// ---- parameters --------------------------------------------------------------------------------
function currentTool() {
  return document.querySelector('input[name="tool"]:checked').value;
}

function syncControls() {
  document.querySelectorAll(".params").forEach((fs) => { fs.hidden = fs.dataset.tool !== currentTool(); });
  // A strength slider is only live while its step is on.
  document.querySelectorAll("input[data-controls]").forEach((box) => {
    const slider = box.closest("fieldset").querySelector(`[name="${box.dataset.controls}"]`);
    slider.disabled = !box.checked;
    slider.closest("label").classList.toggle("off", !box.checked);
  });
  const fidelity = $("fidelity-e");
  fidelity.disabled = $("model").value === "gfpgan";  // GFPGAN has no fidelity control
  fidelity.closest("label").classList.toggle("off", fidelity.disabled);
}
document.querySelectorAll('input[name="tool"], input[data-controls], #model').forEach((c) => c.addEventListener("change", syncControls));

document.querySelectorAll('input[type="range"]').forEach((input) => {
  const out = document.querySelector(`output[for="${input.id}"]`);
  input.addEventListener("input", () => { if (out) out.textContent = input.value; });
});

$("reset-settings").addEventListener("click", () => {
  document.querySelectorAll(".params [name]").forEach((c) => {
    if (c.type === "checkbox") c.checked = c.defaultChecked;
    else if (c.tagName === "SELECT") Array.from(c.options).forEach((o) => { o.selected = o.defaultSelected; });
    else c.value = c.defaultValue;
    const out = document.querySelector(`output[for="${c.id}"]`);
    if (out) out.textContent = c.value;
    if (c.type === "number") checkField(c);
  });
  syncControls();
});

function collectSettings(tool) {
  const settings = {};
  $(`params-${tool}`).querySelectorAll("[name]").forEach((c) => {
    const kind = c.dataset.kind;
    if (kind === "bool") settings[c.name] = c.checked;
    else if (kind === "number") settings[c.name] = Number(c.value);
    else if (kind === "optional-int") { if (c.value !== "") settings[c.name] = Number(c.value); }
    else settings[c.name] = c.value;
  });
  return settings;
}

// ---- errors and notices ------------------------------------------------------------------------
function errorInfo(body, fallback) {
  if (typeof body === "string") return { message: body || fallback, code: null };
  if (!body || typeof body !== "object") return { message: fallback, code: null };
  const err = typeof body.error === "object" && body.error ? body.error : body;
  let message = err.message || (typeof body.error === "string" ? body.error : null) || body.message;
  if (!message && body.detail) {
    message = Array.isArray(body.detail) ? body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ") : String(body.detail);
  }
  return { message: message || fallback, code: err.code || body.code || null };
}

// kind: "error" (a failure, with the server's reason) or "cancelled" (what the user asked for).
function showNotice(kind, info, name) {
  const panel = $("error-panel");
  panel.hidden = false;
  panel.classList.toggle("error", kind === "error");
  panel.setAttribute("role", kind === "error" ? "alert" : "status");
  $("error-title").textContent = kind === "error"
    ? (name ? `${name} could not be processed` : "Something went wrong")
    : (name ? `${name}: cancelled` : "Cancelled");
  $("error-message").textContent = info.message;
  const hint = $("error-hint");
  const command = (info.message.match(/restora models (?:pull|import)[^`,;\n]*[^`,;.\s]/) || [])[0];
  if (kind === "error" && (info.code === "model_not_installed" || command)) {
    hint.hidden = false;
    hint.textContent = "";
    hint.append("A model this tool needs is not installed on the server. Install it there with ");
    hint.append(el("code", {}, command || "restora models pull upscale-enhance"), ", then try again.");
  } else {
    hint.hidden = true;
  }
  if (kind === "error") announce(`${$("error-title").textContent}. ${info.message}`);
}

// ---- queue -------------------------------------------------------------------------------------
function queueRow(entry) {
  const li = el("li", { class: "job", dataset: { key: entry.key } });
  const thumb = el("img", { class: "thumb", alt: "" });
  if (entry.file && BROWSER_TYPES.has(entry.file.type)) thumb.src = entry.localUrl;
  const bar = el("progress", { max: "100", value: "0", "aria-label": `Progress of ${entry.name}` });
  const status = el("span", { class: "status" }, "waiting");
  const actions = el("span", { class: "actions" });
  li.append(thumb, el("span", { class: "job-main" }, el("span", { class: "job-name" }, entry.name), bar, status), actions);
  entry.row = { li, thumb, bar, status, actions };
  return li;
}

// The server's estimate (the progress frames' `estimate`): what was left when it was made. Later
// frames repeat it until it moves, so it is re-based only when its total changes.
function noteEstimate(entry, est) {
  const remaining = Number(est && est.remainingSeconds);
  if (!Number.isFinite(remaining) || (entry.estimate && entry.estimate.seconds === est.seconds)) return;
  entry.estimate = { seconds: est.seconds, remaining, at: Date.now() };
}

function timeLeft(entry) {
  if (!entry.estimate) return "";
  const left = entry.estimate.remaining - (Date.now() - entry.estimate.at) / 1000;
  if (left >= 90) return `about ${Math.round(left / 60)} min left`;
  if (left >= 20) return `about ${Math.round(left / 5) * 5} s left`;
  return left >= 1 ? `about ${Math.round(left)} s left` : "";
}

function statusText(entry) {
  if (entry.offline && ["queued", "processing", "cancelling"].includes(entry.status)) {
    return `${Math.round(entry.percent)}% · connection to the server lost, reconnecting…`;
  }
  const processing = [`${Math.round(entry.percent)}%`, entry.stage || "working", timeLeft(entry)];
  return {
    waiting: entry.note ? `waiting: ${entry.note}` : "waiting", uploading: entry.uploaded != null ? `uploading ${Math.floor(entry.uploaded * 100)}%` : "uploading…", queued: "queued", processing: processing.filter(Boolean).join(" · "),
    succeeded: "done", failed: `failed: ${entry.error || ""}`, canceled: "cancelled", cancelling: "cancelling…",
  }[entry.status] || entry.status;
}

// The time left counts down between frames (a long step may send none for a while); only the
// status text is rewritten, so a focused Cancel button keeps its focus.
setInterval(() => {
  for (const entry of state.entries) {
    if (entry.status === "processing" && entry.estimate) entry.row.status.textContent = statusText(entry);
  }
}, 5000);

function renderEntry(entry) {
  const { li, bar, status, actions, thumb } = entry.row;
  li.dataset.status = entry.status;
  bar.value = entry.percent;
  status.textContent = statusText(entry);
  actions.textContent = "";
  if (["waiting", "uploading", "queued", "processing"].includes(entry.status)) {
    actions.append(el("button", { type: "button", class: "secondary small-button", onclick: () => cancelEntry(entry) },
      "Cancel", el("span", { class: "visually-hidden" }, ` ${entry.name}`)));
  }
  if (!thumb.getAttribute("src") && entry.jobId && !entry.thumbTried) {
    entry.thumbTried = true;
    // An upload the browser cannot show (TIFF, HEIC, RAW...): the server's preview of it.
    thumb.onerror = () => { thumb.onerror = null; thumb.removeAttribute("src"); };
    thumb.src = authUrl(`/api/v1/jobs/${entry.jobId}/input.webp`);
  }
  if (entry.status === "succeeded" && entry.result) {
    actions.append(
      el("button", { type: "button", class: "secondary small-button", onclick: () => showEntry(entry) },
        "View", el("span", { class: "visually-hidden" }, ` ${entry.name}`)),
      el("a", { class: "button small-button", href: authUrl(entry.result.downloadUrl), download: entry.result.filename || "" },
        "Download", el("span", { class: "visually-hidden" }, ` ${entry.name}`)));
  }
  renderQueueButtons();
}

function renderQueueButtons() {
  const done = state.entries.filter((e) => e.status === "succeeded");
  $("clear-finished").hidden = !state.entries.some((e) => ["succeeded", "failed", "canceled"].includes(e.status));
  $("download-all").hidden = done.length < 2;
  $("download-all").textContent = `Download all (${done.length}, zip)`;
}

// A typed setting the server would refuse (a seed of -5, 1.5, or "e") is said next to its field
// before anything is sent: otherwise every file of the batch would be uploaded to fail the same
// way, and a value the browser cannot read at all would silently become "random".
function fieldError(input) {
  const id = `${input.name}-error`;
  let note = document.getElementById(id);
  if (!note) {
    note = el("span", { id, class: "field-error", hidden: true });
    input.after(note);
    input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
  }
  return note;
}

function checkField(input) {
  const valid = input.checkValidity();
  if (valid) input.removeAttribute("aria-invalid"); else input.setAttribute("aria-invalid", "true");
  const note = fieldError(input);
  note.textContent = valid ? "" : input.dataset.error || input.validationMessage;
  note.hidden = valid;
  return valid;
}

function invalidSetting(tool) {
  const inputs = [...$(`params-${tool}`).querySelectorAll('input[type="number"]')];
  return inputs.filter((input) => !checkField(input))[0] || null;
}
document.querySelectorAll('.params input[type="number"]').forEach((input) => input.addEventListener("input", () => {
  if (input.hasAttribute("aria-invalid")) checkField(input);
}));

$("job-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!state.files.length) return;
  const tool = currentTool();
  const bad = invalidSetting(tool);
  if (bad) { bad.focus(); announce(fieldError(bad).textContent); return; }
  const settings = collectSettings(tool);
  $("error-panel").hidden = true;
  $("progress-panel").hidden = false;
  state.focusedResult = false;
  const fresh = state.files.map((file) => ({
    key: ++keySeq, file, name: file.name, tool, settings, status: "waiting", percent: 0, stage: "",
    jobId: null, result: null, error: null, extra: null,
    // The page shows the file itself only where the browser can (else the server's preview).
    localUrl: BROWSER_TYPES.has(file.type) ? URL.createObjectURL(file) : null,
    references: tool === "enhance-faces" ? [...$("reference").files] : [],
  }));
  state.files = [];
  $("file").value = "";
  $("file-name").textContent = "";
  $("submit").disabled = true;
  $("submit").textContent = "Restore";
  fresh.forEach((entry) => { state.entries.push(entry); $("queue").append(queueRow(entry)); renderEntry(entry); });
  // On a phone the queue is below the form: bring it into view and move focus there.
  $("queue-title").scrollIntoView({ block: "start", behavior: "instant" });
  $("queue-title").focus({ preventScroll: true });
  announce(fresh.length === 1 ? `${fresh[0].name} submitted.` : `${fresh.length} photos queued.`);
  pump();
});

// Jobs in flight (uploading, queued or running) are capped, so a big batch never overruns the
// server's queue or upload budget; the rest wait here and start as earlier ones finish.
// When the server still says it is busy (429: its queue is full, or this client's byte budget is
// used; 503 while it restarts) or cannot be reached, every upload is held until it said to come
// back (Retry-After) or one of our jobs ends and frees a place: the files wait, they do not fail.
const HOLD_MAX_S = 60;
const DEFER_LIMIT = 30;  // a file refused this many times in a row fails with the server's reason
let pumpTimer = null;

function pump() {
  clearTimeout(pumpTimer);
  const wait = (state.holdUntil || 0) - Date.now();
  if (wait > 0) { pumpTimer = setTimeout(pump, wait); return; }
  const active = state.entries.filter((e) => ["uploading", "queued", "processing", "cancelling"].includes(e.status)).length;
  const next = state.entries.filter((e) => e.status === "waiting").slice(0, Math.max(0, CONCURRENT - active));
  next.forEach(submitEntry);
}

function releaseHold() {
  state.holdUntil = 0;
}

// The server's "come back later": 429, or 502-504 from it or a gateway, except a missing model.
function isBusy(response, info) {
  if (response.status === 429) return true;
  return [502, 503, 504].includes(response.status) && info.code !== "model_not_installed";
}

function retryAfterSeconds(response, body) {
  const given = Number(response.headers.get("Retry-After") || (body && body.retryAfter));
  return Math.max(1, Math.min(HOLD_MAX_S, Number.isFinite(given) && given > 0 ? given : 5));
}

// Back to the waiting list (first in line, as before) with the reason in its row.
function deferEntry(entry, seconds, note, info) {
  entry.deferred = (entry.deferred || 0) + 1;
  if (entry.deferred > DEFER_LIMIT) return failEntry(entry, info);
  entry.status = "waiting";
  entry.note = note;
  state.holdUntil = Math.max(state.holdUntil || 0, Date.now() + seconds * 1000);
  renderEntry(entry);
  pump();
}

// XMLHttpRequest, not fetch: only it reports how much of an upload has gone (a 50 MB scan over
// Wi-Fi takes a while), and Cancel can stop it midway. Answers like fetch's Response, as far as
// submitEntry reads one.
function postForm(url, form, entry) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    entry.upload = xhr;
    xhr.open("POST", url);
    Object.entries(authHeaders()).forEach(([k, v]) => xhr.setRequestHeader(k, v));
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable || entry.status !== "uploading") return;
      entry.uploaded = e.loaded / e.total;
      entry.row.status.textContent = statusText(entry);  // the text only: a focused Cancel keeps focus
    };
    xhr.onload = () => {
      entry.upload = null;
      resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status,
        headers: { get: (name) => xhr.getResponseHeader(name) }, json: async () => JSON.parse(xhr.responseText) });
    };
    xhr.onerror = () => { entry.upload = null; reject(new Error("the connection failed")); };
    xhr.onabort = () => { entry.upload = null; reject(new Error("upload stopped")); };
    xhr.send(form);
  });
}

async function submitEntry(entry, extraFields = null) {
  entry.status = "uploading";
  entry.uploaded = null;
  entry.note = "";
  renderEntry(entry);
  const form = new FormData();
  form.append("file", entry.file, entry.file.name);
  form.append("settings", JSON.stringify(entry.settings));
  (entry.references || []).forEach((ref) => form.append("reference", ref, ref.name));
  Object.entries(entry.extra || extraFields || {}).forEach(([k, v]) => {
    if (v instanceof Blob) form.append(k, v, `${k}.png`); else form.append(k, v);
  });
  let response;
  try {
    response = await postForm(`/api/v1/tools/${entry.tool}`, form, entry);
  } catch (err) {
    if (entry.status === "cancelling") { entry.status = "canceled"; renderEntry(entry); pump(); return undefined; }
    state.unreachable = (state.unreachable || 0) + 1;
    return deferEntry(entry, Math.min(30, 2 ** state.unreachable), "the server cannot be reached, trying again",
      { message: `Could not reach the server: ${err.message}`, code: null });
  }
  state.unreachable = 0;
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || !body.jobId) {
    const info = errorInfo(body, `The server answered ${response.status}.`);
    if (entry.status === "cancelling") { entry.status = "canceled"; renderEntry(entry); pump(); return undefined; }
    if (isBusy(response, info)) return deferEntry(entry, retryAfterSeconds(response, body), "the server is busy, trying again shortly", info);
    return failEntry(entry, info);
  }
  entry.jobId = body.jobId;
  saveQueue();
  if (entry.status === "cancelling") {  // cancelled while uploading
    cancelEntry(entry);
  } else {
    entry.status = "queued";
  }
  renderEntry(entry);
  pump();
  followProgress(entry);
  return undefined;
}

function failEntry(entry, info) {
  entry.status = "failed";
  entry.error = info.message;
  renderEntry(entry);
  showNotice("error", info, entry.name);
  pump();
  refreshHistorySoon();
}

async function cancelEntry(entry) {
  if (!entry.jobId) {
    if (entry.status === "waiting") { entry.status = "canceled"; renderEntry(entry); return; }
    entry.status = "cancelling"; renderEntry(entry);
    // Stopped while the file is still going up, the server never gets it whole (no job is made);
    // once it is all sent, the job may exist: it is cancelled when its id comes back.
    if (entry.upload && (entry.uploaded ?? 0) < 1) entry.upload.abort();
    return;
  }
  entry.status = "cancelling";
  renderEntry(entry);
  await sendCancel(entry);
}

// A cancel the server did not get (it was away) is sent again as soon as the job's progress
// stream is back, so the job does not run on to the end after all.
async function sendCancel(entry) {
  const response = await fetch(`/api/v1/jobs/${entry.jobId}/cancel`, { method: "POST", headers: authHeaders() }).catch(() => null);
  entry.cancelPending = !response || response.status >= 500;
}

// The server bundles at most archive_max_jobs results per zip (100 unless configured); a
// larger batch becomes several zips. The server's refusal says its limit, so a server set
// lower than the page's guess is followed. Each zip is checked with HEAD (nothing is built),
// then fetched by the browser itself, which streams it to disk: a zip of a hundred large
// results never sits in the page's memory.
let archiveLimit = 100;

$("download-all").addEventListener("click", async () => {
  const ids = state.entries.filter((e) => e.status === "succeeded").map((e) => e.jobId);
  const urls = [];
  for (let start = 0; start < ids.length;) {
    const part = ids.slice(start, start + archiveLimit);
    const url = `/api/v1/archive.zip?jobs=${part.join(",")}`;
    const head = await fetch(url, { method: "HEAD", headers: authHeaders() }).catch(() => null);
    if (head && head.ok) {
      urls.push(url);
      start += part.length;
      continue;
    }
    // the reason is in the body, which HEAD leaves out: ask again (an error is small)
    const response = head && await fetch(url, { headers: authHeaders() }).catch(() => null);
    const body = response && !response.ok ? await response.json().catch(() => null) : null;
    const limit = body && body.field === "jobs" && Number.isInteger(body.limit) ? body.limit : 0;
    if (limit > 0 && limit < part.length) {
      archiveLimit = limit;
      continue;
    }
    showNotice("error", errorInfo(body, "The zip could not be made."));
    return;
  }
  urls.forEach((url, i) => {
    // the server's Content-Disposition names a same-origin download, not the download attribute
    const name = urls.length > 1 ? `restora-results-${i + 1}-of-${urls.length}.zip` : "restora-results.zip";
    const a = el("a", { href: authUrl(`${url}&name=${name}`), download: name });
    document.body.append(a);
    a.click();
    a.remove();
  });
});

$("clear-finished").addEventListener("click", () => {
  const removedUrls = state.entries.map((e) => e.localUrl);
  state.entries = state.entries.filter((e) => {
    const over = ["succeeded", "failed", "canceled"].includes(e.status);
    if (over) e.row.li.remove();
    return !over;
  });
  removedUrls.forEach(releaseUrl);
  $("clear-finished").hidden = true;
  $("download-all").hidden = true;
  if (!state.entries.length) $("progress-panel").hidden = true;
  saveQueue();
  $("drop").focus();
});

// ---- the queue survives a reload ---------------------------------------------------------------
// The jobs the server has (uploaded files) are kept per tab in sessionStorage, so a reload, or a
// tab the browser restores, finds the batch again: finished rows as they ended, running ones
// followed live. Files not yet uploaded exist only in this page: leaving then asks first.
const QUEUE_KEY = "restora-queue";

function saveQueue() {
  const kept = state.entries.filter((e) => e.jobId).map((e) => ({ jobId: e.jobId, name: e.name, tool: e.tool }));
  try { sessionStorage.setItem(QUEUE_KEY, JSON.stringify(kept)); } catch { /* storage off or full: no restore */ }
}

function savedQueue() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(QUEUE_KEY) || "[]");
    return Array.isArray(saved) ? saved.filter((s) => s && typeof s.jobId === "string") : [];
  } catch { return []; }
}

window.addEventListener("beforeunload", (e) => {
  if (!state.entries.some((x) => ["waiting", "uploading"].includes(x.status))) return;
  e.preventDefault();
  e.returnValue = "";  // Chromium asks "Leave site?" only when this is set
});

// A job the server has, as a queue row: finished as it ended, unfinished followed live.
function adoptJob(job, name) {
  const entry = { key: ++keySeq, file: null, name, tool: job.tool, settings: {}, status: job.status,
    percent: (job.progress && job.progress.percent) || 0, stage: (job.progress && job.progress.stage) || "",
    jobId: job.jobId, result: job.status === "succeeded" ? job.result : null,
    error: job.status === "failed" && job.error ? job.error.message : null, localUrl: null };
  state.entries.push(entry);
  $("progress-panel").hidden = false;
  $("queue").append(queueRow(entry));
  renderEntry(entry);
  if (["queued", "processing"].includes(job.status)) followProgress(entry);
  return entry;
}

async function restoreQueue() {
  const saved = savedQueue();
  // One request per job, all at once (no stream held): then the rows in their old order.
  const jobs = await Promise.all(saved.map(async (s) => {
    const response = await fetch(`/api/v1/jobs/${encodeURIComponent(s.jobId)}`, { headers: authHeaders() }).catch(() => null);
    return response && response.ok ? response.json().catch(() => null) : null;
  }));
  jobs.forEach((job, i) => { if (job && job.jobId) adoptJob(job, saved[i].name); });
  // As before the reload: the batch's first result opens by itself unless one was already shown.
  state.focusedResult = new URLSearchParams(location.search).has("job")
    || state.entries.some((e) => e.status === "succeeded");
  saveQueue();
}

// ---- progress over SSE -------------------------------------------------------------------------
// fetch (not EventSource) so an API key header can be sent; reconnects with Last-Event-ID.
// A dropped connection (the server restarting, a proxy timing out, the laptop's Wi-Fi) is
// retried for as long as the page is open, and the row says so: a job never sits silently on
// its last percentage. Once connected again the stream replays what was missed.
const RECONNECT_MAX_MS = 10000;

function reconnectDelay(attempt) {
  return Math.min(RECONNECT_MAX_MS, 500 * 2 ** Math.min(attempt, 5));
}

function setOffline(entry, offline) {
  if (entry.offline === offline) return;
  entry.offline = offline;
  renderEntry(entry);
  if (offline && !state.entries.some((e) => e !== entry && e.offline)) {
    announce("Lost the connection to the server; reconnecting.");
  }
}

async function followProgress(entry, lastEventId = null, attempt = 0) {
  const headers = { Accept: "text/event-stream", ...authHeaders() };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  let finished = false;
  entry.abort = new AbortController();
  try {
    const response = await fetch(`/api/v1/jobs/${entry.jobId}/progress`, { headers, signal: entry.abort.signal });
    if (!response.ok) {
      // A gateway or a server starting up answers 5xx for a moment: wait for it like for a
      // dropped connection. Anything else (the job deleted or expired, a key refused) is final.
      if (response.status < 500) {
        entry.offline = false;
        failEntry(entry, errorInfo(await response.json().catch(() => null), `Progress stream failed (${response.status}).`));
        return;
      }
      throw new Error(`server answered ${response.status}`);
    }
    setOffline(entry, false);
    attempt = 0;
    if (entry.cancelPending) sendCancel(entry);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" ? 2 : 1));
        if (line === "") {
          if (event.data.length) {
            if (event.id) lastEventId = event.id;
            finished = handleEvent(entry, event.type, event.data.join("\n")) || finished;
          }
          event = { type: "message", data: [], id: null };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event.type = val;
          else if (field === "data") event.data.push(val);
          else if (field === "id") event.id = val;
        }
      }
      if (finished) { entry.abort.abort(); return; }
    }
  } catch (err) {
    if (err.name === "AbortError") return;
  }
  if (finished || ["succeeded", "failed", "canceled"].includes(entry.status)) return;
  // A stream that ends before the job does is a lost connection too (a proxy's idle timeout).
  if (attempt > 0) setOffline(entry, true);
  setTimeout(() => followProgress(entry, lastEventId, attempt + 1), reconnectDelay(attempt));
}

function handleEvent(entry, type, raw) {
  let data;
  try { data = JSON.parse(raw); } catch { return false; }
  if (type === "progress") {
    if (entry.status !== "cancelling") entry.status = data.phase === "queued" ? "queued" : "processing";
    entry.percent = Number(data.percent) || 0;
    entry.stage = data.stage || data.phase || "";
    // The estimate covers the pipeline; saving the result comes after it is done.
    if (["done", "encoding"].includes(data.step)) entry.estimate = null;
    else noteEstimate(entry, data.estimate);
    renderEntry(entry);
    return false;
  }
  if (type === "complete") {
    entry.status = "succeeded";
    entry.percent = 100;
    entry.result = data.result || data;
    renderEntry(entry);
    // The first result of a batch opens by itself; later ones wait in the queue.
    if (!state.focusedResult) { state.focusedResult = true; showEntry(entry, true); }
    else announce(`${entry.name} is ready.`);
    refreshHistorySoon();
    releaseHold();
    pump();
    return true;
  }
  if (type === "failed" || type === "cancelled" || type === "canceled") {
    const cancelled = type !== "failed" || data.status === "canceled" || data.code === "cancelled";
    entry.status = cancelled ? "canceled" : "failed";
    entry.error = cancelled ? null : errorInfo(data, "The job failed.").message;
    renderEntry(entry);
    if (cancelled) {
      showNotice("cancelled", { message: "The job was stopped at your request; nothing was saved." }, entry.name);
      announce(`${entry.name} cancelled.`);
    } else {
      showNotice("error", errorInfo(data, "The job failed."), entry.name);
    }
    refreshHistorySoon();
    releaseHold();
    pump();
    return true;
  }
  return false;
}

// ---- result ------------------------------------------------------------------------------------
// An object URL pins its file in the browser's memory (a 50 MB photo, for the whole session):
// it is let go once no queue row and not the result on show use it any more.
function releaseUrl(url) {
  if (!url) return;
  if (state.entries.some((e) => e.localUrl === url) || (state.shown && state.shown.before === url)) return;
  URL.revokeObjectURL(url);
}

function clearResult() {
  const old = state.shown;
  state.shown = null;
  if (old) releaseUrl(old.before);
  $("result-panel").hidden = true;
  ["after", "before", "side-before", "side-after"].forEach((id) => { $(id).removeAttribute("src"); });
  $("facts").textContent = "";
  $("face-strip").textContent = "";
  $("warnings").textContent = "";
  $("faces").textContent = "";
  setMaskEditing(false);
}

function showEntry(entry, fromJob = false) {
  // A local file the browser can show is the sharpest "before"; otherwise the server's preview.
  const local = entry.file && BROWSER_TYPES.has(entry.file.type) ? entry.localUrl : null;
  showResult(entry.result, { name: entry.name, jobId: entry.jobId, before: local, entry }, fromJob);
}

function showResult(result, info, moveFocus = true) {
  const old = state.shown;
  state.shown = { result, ...info };
  if (old) releaseUrl(old.before);
  history.replaceState(null, "", `?job=${encodeURIComponent(info.jobId)}`);
  $("result-panel").hidden = false;
  $("result-title").textContent = `Result — ${info.name}`;
  const serverBefore = authUrl(`/api/v1/jobs/${info.jobId}/input.webp`);
  const afterUrl = authUrl(result.downloadUrl);
  const before = $("before");
  before.onerror = () => { before.onerror = null; before.src = serverBefore; $("side-before").src = serverBefore; };
  before.onload = () => { drawFaces(); buildFaceStrip(); };
  $("after").onload = () => { applyZoom(); drawFaces(); buildFaceStrip(); };
  $("after").src = afterUrl;
  $("side-after").src = afterUrl;
  before.src = info.before || serverBefore;
  $("side-before").src = info.before || serverBefore;
  $("download").href = afterUrl;
  $("download").setAttribute("download", result.filename || "");
  $("download-preview").href = authUrl(result.previewUrl || result.downloadUrl);
  $("download-preview").hidden = !result.previewUrl;
  setSlider($("slider").value);
  renderWarnings(result);
  renderFacts(result);
  $("show-faces").closest("label").hidden = !(result.faces && result.faces.length);
  drawFaces();
  setupMask(result, info);
  const faces = result.facesDetected ?? result.facesEnhanced;
  announce(`Result ready for ${info.name}.` + (faces !== undefined ? ` ${faces} face${faces === 1 ? "" : "s"} found.` : "")
    + (result.warnings && result.warnings.length ? ` ${result.warnings.length} warning${result.warnings.length === 1 ? "" : "s"}.` : ""));
  if (moveFocus) {
    $("result-title").scrollIntoView({ block: "start", behavior: "instant" });
    $("result-title").focus({ preventScroll: true });
  }
}

function renderWarnings(result) {
  const list = $("warnings");
  list.textContent = "";
  const items = [...(result.warnings || [])];
  if ((result.facesDetected === 0) && !items.length) items.push("No faces were found in this photo, so nothing was changed.");
  items.forEach((w) => list.append(el("li", {}, w)));
  list.hidden = !items.length;
}

// Why a step asked for did not run ("already clean", "already in colour"); steps the user
// turned off are not news.
function skippedReasons(result) {
  return Object.entries(result.reports || {})
    .filter(([, r]) => r && r.skipped && r.reason && !["turned off", "not requested"].includes(r.reason))
    .map(([step, r]) => [step, r.reason]);
}

const STEP_LABELS = {
  "scratch-removal": "Scratch removal", scratch_removal: "Scratch removal", denoise: "Denoise",
  "face-enhancement": "Face enhancement", face_enhancement: "Face enhancement", colorize: "Colorization",
  colorization: "Colorization",
};
function stepLabel(step) { return STEP_LABELS[step] || step; }

function renderFacts(result) {
  const facts = $("facts");
  facts.textContent = "";
  const add = (label, value) => {
    if (value === undefined || value === null || value === "") return;
    facts.append(el("dt", {}, label), el("dd", {}, String(value)));
  };
  const skipped = Object.fromEntries(skippedReasons(result));
  if (result.facesDetected !== undefined) add("Faces detected", result.facesDetected);
  else add("Faces enhanced", result.facesEnhanced);
  const turned = (result.faces || []).filter((f) => f.rotation);
  if (turned.length) {
    const all = turned.length === (result.faces || []).length && turned.every((f) => f.rotation === turned[0].rotation);
    add("Faces turned", all ? `${turned.length} (photo lying ${turned[0].rotation}° clockwise: restored the right way up)`
      : `${turned.length} of ${result.faces.length} (${turned.map((f) => `${f.rotation}°`).join(", ")} clockwise: restored the right way up)`);
  }
  add("Model", result.model);
  add("Why this model", result.reason);
  if (Array.isArray(result.steps)) add("Steps", result.steps.map(stepLabel).join(", ") || "none needed");
  if (result.scratchCoverage !== undefined) add("Scratch coverage", `${Number(result.scratchCoverage).toFixed(2)}%`);
  if (result.isGrayscale !== undefined) add("Monochrome", result.isGrayscale ? "yes" : "no");
  else if (result.tone) add("Monochrome", result.tone === "gray" ? "yes: faces kept gray" : "yes: faces take the photo's tone");
  if (result.colorized !== undefined) {
    const why = skipped.colorize || skipped.colorization;
    add("Colorized", result.colorized ? "yes" : why ? `no: ${why}` : "no");
  }
  const notDone = Object.entries(skipped).filter(([step]) => !["colorize", "colorization"].includes(step));
  if (notDone.length) add("Skipped", notDone.map(([step, why]) => `${stepLabel(step)}: ${why}`).join(" · "));
  if (result.originalWidth && result.width) add("Size", `${result.originalWidth} × ${result.originalHeight} → ${result.width} × ${result.height}`);
  else if (result.width) add("Size", `${result.width} × ${result.height}`);
  add("Format", result.format ? result.format.toUpperCase() : null);
  if (result.originalSize !== undefined && result.processedSize !== undefined) {
    add("File size", `${formatBytes(result.originalSize)} → ${formatBytes(result.processedSize)}`);
  }
  if (result.timings && typeof result.timings === "object") {
    add("Timings", Object.entries(result.timings).map(([k, v]) => `${k} ${Number(v).toFixed(2)} s`).join(" · "));
  }
}

// ---- comparison: slider, side by side, zoom and pan ---------------------------------------------
function setSlider(value) {
  $("before-clip").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("divider").style.left = `${value}%`;
}
$("slider").addEventListener("input", (e) => setSlider(e.target.value));

document.querySelectorAll('input[name="view"]').forEach((r) => r.addEventListener("change", () => {
  const mode = document.querySelector('input[name="view"]:checked').value;
  $("viewport").dataset.mode = mode;
  if (mode === "side") { $("viewport").scrollTop = 0; $("viewport").scrollLeft = 0; }  // panes pan instead
  $("slider").closest("label").hidden = mode !== "slider";  // the split only exists in slider mode
  applyZoom();
}));

function applyZoom() {
  const zoom = $("zoom").value;
  const vp = $("viewport");
  vp.dataset.zoom = zoom;
  const after = $("after");
  const w = after.naturalWidth;
  // "Fit" never enlarges a small image; 100 % and more show real pixels and allow panning.
  const width = zoom === "fit" ? "" : `${Math.round(w * Number(zoom))}px`;
  $("compare").style.width = width;
  document.querySelectorAll("#side img").forEach((img) => { img.style.width = width; });
  vp.tabIndex = zoom === "fit" ? -1 : 0;  // focusable when scrollable: arrow keys pan
}
$("zoom").addEventListener("change", applyZoom);

// One pointer handler for mouse, pen and touch: drag moves the split, or pans when zoomed.
(() => {
  const vp = $("viewport");
  let drag = null;
  vp.addEventListener("pointerdown", (e) => {
    if (state.mask && state.mask.editing) return;
    const onHandle = e.target.closest(".divider");
    const zoomed = vp.dataset.zoom !== "fit";
    // Side by side: both panes pan together; the slider view scrolls the viewport itself.
    const scroller = vp.dataset.mode === "side" ? document.querySelector("#side .pane") : vp;
    drag = { pan: zoomed && !onHandle, x: e.clientX, y: e.clientY, left: scroller.scrollLeft, top: scroller.scrollTop, id: e.pointerId };
    if (!drag.pan && vp.dataset.mode === "slider") moveSplit(e.clientX);
    try { vp.setPointerCapture(e.pointerId); } catch { /* pointer already gone */ }
    e.preventDefault();
  });
  vp.addEventListener("pointermove", (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    if (drag.pan) {
      const targets = vp.dataset.mode === "side" ? document.querySelectorAll("#side .pane") : [vp];
      targets.forEach((t) => {
        t.scrollLeft = drag.left - (e.clientX - drag.x);
        t.scrollTop = drag.top - (e.clientY - drag.y);
      });
    } else if (vp.dataset.mode === "slider") {
      moveSplit(e.clientX);
    }
  });
  const end = () => { drag = null; };
  vp.addEventListener("pointerup", end);
  vp.addEventListener("pointercancel", end);
})();

function moveSplit(clientX) {
  const rect = $("compare").getBoundingClientRect();
  const v = Math.round(((clientX - rect.left) / rect.width) * 100);
  $("slider").value = Math.max(0, Math.min(100, v));
  setSlider($("slider").value);
}

// ---- faces: numbered boxes and before/after crops ------------------------------------------------
$("show-faces").addEventListener("change", (e) => $("faces").toggleAttribute("hidden", !e.target.checked));

function inputSize(result) {
  const w = result.originalWidth || result.width;
  const h = result.originalHeight || result.height;
  return [w, h];
}

function drawFaces() {
  const svg = $("faces");
  const shown = state.shown;
  if (!shown) return;
  const [w, h] = inputSize(shown.result);
  if (!w || !h) return;
  // Face boxes are in input-image pixels: draw in those units, stretched over the view.
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.textContent = "";
  const ns = "http://www.w3.org/2000/svg";
  (shown.result.faces || []).forEach((f, i) => {
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x: f.x, y: f.y, width: f.w, height: f.h }).forEach(([k, v]) => rect.setAttribute(k, v));
    rect.dataset.face = String(i + 1);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", f.x + 2);
    label.setAttribute("y", Math.max(f.y - 4, 12 * w / 600));
    label.setAttribute("font-size", String(Math.max(12, w / 40)));
    label.textContent = String(i + 1);
    svg.append(rect, label);
  });
}

function crop(img, box, scale, size) {
  const canvas = el("canvas", { width: size, height: size });
  const ctx = canvas.getContext("2d");
  const pad = 0.15 * Math.max(box.w, box.h);
  const side = Math.max(box.w, box.h) + 2 * pad;
  const cx = box.x + box.w / 2;
  const cy = box.y + box.h / 2;
  try {
    ctx.drawImage(img, (cx - side / 2) * scale.x, (cy - side / 2) * scale.y, side * scale.x, side * scale.y, 0, 0, size, size);
  } catch { /* image not decoded yet: left blank and redrawn on load */ }
  return canvas;
}

const VERDICT = { same: "Same person", uncertain: "Identity uncertain", changed: "Identity changed" };

function buildFaceStrip() {
  const shown = state.shown;
  const strip = $("face-strip");
  strip.textContent = "";
  const faces = (shown && shown.result.faces) || [];
  $("face-strip-section").hidden = !faces.length;
  const before = $("before");
  const after = $("after");
  if (!faces.length || !before.naturalWidth || !after.naturalWidth) return;
  const [w, h] = inputSize(shown.result);
  const sb = { x: before.naturalWidth / w, y: before.naturalHeight / h };
  const sa = { x: after.naturalWidth / w, y: after.naturalHeight / h };
  faces.forEach((f, i) => {
    const b = crop(before, f, sb, 112);
    const a = crop(after, f, sa, 112);
    b.setAttribute("role", "img"); b.setAttribute("aria-label", `Face ${i + 1} before`);
    a.setAttribute("role", "img"); a.setAttribute("aria-label", `Face ${i + 1} after`);
    const caption = el("figcaption", {}, el("span", { class: "num" }, String(i + 1)), ` score ${Number(f.score).toFixed(2)}`);
    if (f.identity && f.identity.verdict) {
      const verdict = f.identity.verdict;
      const text = VERDICT[verdict] || verdict;
      const title = [f.identity.reason, f.identity.distance !== undefined ? `distance ${Number(f.identity.distance).toFixed(3)}` : null,
        f.identity.model].filter(Boolean).join(" · ");
      caption.append(" ", el("span", { class: `badge badge-${verdict}`, title }, text));
    }
    strip.append(el("li", {}, el("figure", { class: "face" }, el("div", { class: "pair" }, b, a), caption)));
  });
}

// ---- damage mask: overlay, paint/erase brush, re-run -----------------------------------------
state.mask = null;

function setupMask(result, info) {
  const section = $("mask-section");
  state.mask = null;
  setMaskEditing(false);
  if (!result.maskUrl) { section.hidden = true; return; }
  section.hidden = false;
  const canvas = $("mask-canvas");
  const img = new Image();
  img.onload = () => {
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, 0, 0);
    // White-on-black becomes opaque red where damaged, transparent elsewhere.
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < data.data.length; i += 4) {
      const on = data.data[i] > 127;
      data.data[i] = 255; data.data[i + 1] = data.data[i + 2] = 48;
      data.data[i + 3] = on ? 255 : 0;
    }
    ctx.putImageData(data, 0, 0);
    state.mask = { editing: false, info, painted: false };
  };
  img.src = authUrl(result.maskUrl);
  const entry = info.entry;
  $("mask-rerun").disabled = !(entry && entry.file);
  $("mask-note").hidden = !!(entry && entry.file);
  $("mask-note").textContent = "Running again needs the original file: choose it again to re-run from history.";
}

function setMaskEditing(on) {
  $("mask-show").checked = on;
  $("mask-canvas").hidden = !on;
  $("viewport").classList.toggle("editing", on);
  if (state.mask) state.mask.editing = on;
  if (on) { $("slider").value = 100; setSlider(100); }
}
$("mask-show").addEventListener("change", (e) => setMaskEditing(e.target.checked));
$("brush-size").addEventListener("input", (e) => {
  document.querySelector('output[for="brush-size"]').textContent = e.target.value;
});

(() => {
  const canvas = $("mask-canvas");
  let last = null;
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return { x: (e.clientX - r.left) * canvas.width / r.width, y: (e.clientY - r.top) * canvas.height / r.height, k: canvas.width / r.width };
  };
  const stroke = (p) => {
    const ctx = canvas.getContext("2d");
    const erase = document.querySelector('input[name="brush"]:checked').value === "erase";
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    ctx.strokeStyle = "#ff3030";
    ctx.lineWidth = Number($("brush-size").value) * p.k;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo((last || p).x, (last || p).y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
    state.mask.painted = true;
  };
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.mask || !state.mask.editing) return;
    try { canvas.setPointerCapture(e.pointerId); } catch { /* pointer already gone */ }
    last = null;
    stroke(point(e));
    e.preventDefault();
  });
  canvas.addEventListener("pointermove", (e) => { if (last && state.mask) stroke(point(e)); });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
})();

// The mask the server takes: white = repair, black = keep, at the image's size.
function maskPng() {
  const src = $("mask-canvas");
  const out = el("canvas", { width: src.width, height: src.height });
  const data = src.getContext("2d").getImageData(0, 0, src.width, src.height);
  for (let i = 0; i < data.data.length; i += 4) {
    const v = data.data[i + 3] > 127 ? 255 : 0;
    data.data[i] = data.data[i + 1] = data.data[i + 2] = v;
    data.data[i + 3] = 255;
  }
  out.getContext("2d").putImageData(data, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

$("mask-rerun").addEventListener("click", async () => {
  const shown = state.shown;
  if (!shown || !shown.entry || !shown.entry.file) return;
  const blob = await maskPng();
  const old = shown.entry;
  const entry = {
    key: ++keySeq, file: old.file, name: `${old.name} (your mask)`, tool: old.tool,
    settings: { ...old.settings, maskMode: $("mask-mode").value }, status: "waiting", percent: 0, stage: "",
    jobId: null, result: null, error: null, localUrl: old.localUrl, extra: { mask: blob },
  };
  state.entries.push(entry);
  $("queue").append(queueRow(entry));
  state.focusedResult = false;
  renderEntry(entry);
  setMaskEditing(false);
  $("queue-title").focus();
  pump();
});

// ---- history -----------------------------------------------------------------------------------
let historyTimer = null;
function refreshHistorySoon() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(loadHistory, 300);
}

async function loadHistory(more = false) {
  const params = new URLSearchParams({ limit: "12" });
  if (more && state.historyCursor) params.set("cursor", state.historyCursor);
  const response = await fetch(`/api/v1/jobs?${params}`, { headers: authHeaders() }).catch(() => null);
  if (!response || !response.ok) {
    $("history-empty").hidden = false;
    $("history-empty").textContent = response && response.status === 401
      ? "Enter the API key (above) to see your jobs." : "History is not available.";
    return;
  }
  const body = await response.json();
  if (!more) $("history").textContent = "";
  body.jobs.forEach((job) => $("history").append(historyRow(job)));
  state.historyCursor = body.nextCursor;
  $("history-more").hidden = !body.nextCursor;
  $("history-empty").hidden = $("history").children.length > 0;
  $("history-empty").textContent = "No jobs yet.";
}

const TOOL_NAMES = { "enhance-faces": "Enhance faces", "restore-photo": "Restore photo" };
const STATUS_NAMES = { queued: "queued", processing: "processing", succeeded: "done", failed: "failed", canceled: "cancelled" };

const historyNames = new Map();  // jobId -> the uploaded file's name, from the history list

function historyRow(job) {
  const name = job.inputName || job.jobId;
  historyNames.set(job.jobId, name);
  const thumb = el("img", { class: "thumb", alt: "", loading: "lazy" });
  if (job.thumbnailUrl) thumb.src = authUrl(job.thumbnailUrl);
  else if (job.status === "failed") {
    // No result to show: the server's preview of the input it kept (gone after retention).
    thumb.onerror = () => { thumb.onerror = null; thumb.removeAttribute("src"); };
    thumb.src = authUrl(`/api/v1/jobs/${job.jobId}/input.webp`);
  }
  const when = job.createdAt ? new Date(job.createdAt).toLocaleString() : "";
  const status = el("span", { class: `status status-${job.status}` }, STATUS_NAMES[job.status] || job.status);
  const li = el("li", { class: "job", dataset: { job: job.jobId, status: job.status } }, thumb,
    el("span", { class: "job-main" }, el("span", { class: "job-name" }, name),
      el("span", { class: "hint" }, `${TOOL_NAMES[job.tool] || job.tool} · ${when} · `, status),
      job.error ? el("span", { class: "hint" }, job.error.message || "") : null));
  const actions = el("span", { class: "actions" });
  const label = (t) => [t, el("span", { class: "visually-hidden" }, ` ${name}`)];
  if (job.status === "succeeded" && job.result) {
    actions.append(
      el("button", { type: "button", class: "secondary small-button", onclick: () => showResult(job.result, { name, jobId: job.jobId }) }, ...label("Open")),
      el("a", { class: "button small-button", href: authUrl(job.result.downloadUrl), download: job.result.filename || "" }, ...label("Download")));
  }
  if (job.status === "failed") {
    // The server kept a failed job's input (until retention): it sends it again itself.
    actions.append(el("button", { type: "button", class: "secondary small-button", onclick: (e) => retryJob(job, name, e.currentTarget) }, ...label("Try again")));
  }
  actions.append(el("button", { type: "button", class: "secondary small-button", onclick: () => deleteJob(job.jobId, li, name) }, ...label("Delete")));
  li.append(actions);
  return li;
}

// A failed job sent again with the same tool, settings and input: a new job in the queue; the
// failed one stays in the history.
async function retryJob(job, name, button) {
  button.disabled = true;
  const response = await fetch(`/api/v1/jobs/${encodeURIComponent(job.jobId)}/retry`, { method: "POST", headers: authHeaders() }).catch(() => null);
  const body = response ? await response.json().catch(() => null) : null;
  button.disabled = false;
  if (!response || !response.ok || !body || !body.jobId) {
    showNotice("error", errorInfo(body, response ? `The server answered ${response.status}.` : "Could not reach the server."), name);
    return;
  }
  $("error-panel").hidden = true;
  state.focusedResult = false;
  const entry = { key: ++keySeq, file: null, name, tool: job.tool, settings: {}, status: body.status || "queued", percent: 0,
    stage: "", jobId: body.jobId, result: null, error: null, localUrl: null };
  state.entries.push(entry);
  saveQueue();
  $("progress-panel").hidden = false;
  $("queue").append(queueRow(entry));
  renderEntry(entry);
  $("queue-title").scrollIntoView({ block: "start", behavior: "instant" });
  $("queue-title").focus({ preventScroll: true });
  announce(`${name} sent again.`);
  refreshHistorySoon();
  followProgress(entry);
}

async function deleteJob(jobId, li, name) {
  const response = await fetch(`/api/v1/jobs/${jobId}`, { method: "DELETE", headers: authHeaders() }).catch(() => null);
  if (!response || (!response.ok && response.status !== 404)) {
    showNotice("error", errorInfo(response && await response.json().catch(() => null), "The job could not be deleted."), name);
    return;
  }
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  // Its queue row, if any, would only lead to a deleted file.
  state.entries.filter((e) => e.jobId === jobId).forEach((e) => e.row.li.remove());
  const gone = state.entries.filter((e) => e.jobId === jobId).map((e) => e.localUrl);
  state.entries = state.entries.filter((e) => e.jobId !== jobId);
  gone.forEach(releaseUrl);
  if (!state.entries.length) $("progress-panel").hidden = true;
  renderQueueButtons();
  saveQueue();
  if (state.shown && state.shown.jobId === jobId) { clearResult(); history.replaceState(null, "", location.pathname); }
  $("history-empty").hidden = $("history").children.length > 0;
  announce(`${name} deleted.`);
  (next && next.querySelector("button") || $("history-title")).focus();
}

$("history-refresh").addEventListener("click", () => loadHistory());
$("history-more").addEventListener("click", () => loadHistory(true));

// A job id in the URL survives a reload: show its result, or follow it if still running.
async function openFromUrl() {
  const jobId = new URLSearchParams(location.search).get("job");
  if (!jobId) return;
  const response = await fetch(`/api/v1/jobs/${encodeURIComponent(jobId)}`, { headers: authHeaders() }).catch(() => null);
  if (!response || !response.ok) {
    showNotice("error", errorInfo(response && await response.json().catch(() => null), "That job is no longer available."));
    return;
  }
  const job = await response.json();
  const name = historyNames.get(jobId) || (job.result && job.result.filename) || jobId;
  if (job.status === "succeeded") { showResult(job.result, { name, jobId }, false); return; }
  if (!state.entries.some((e) => e.jobId === jobId)) adoptJob(job, name);
}

syncControls();
loadHistory().then(restoreQueue).then(openFromUrl);
