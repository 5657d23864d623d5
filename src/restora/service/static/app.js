// Restora web page: upload, live progress over SSE, before/after slider, face boxes.
// Plain JS, no build step and no third-party URL, so the page works offline from the server itself.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, beforeUrl: null, jobId: null, abort: null, result: null };

// ---- file choice -------------------------------------------------------------------------------
function setFile(file) {
  if (!file) return;
  state.file = file;
  $("file-name").textContent = `${file.name} (${formatBytes(file.size)})`;
  $("submit").disabled = false;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const drop = $("drop");
$("file").addEventListener("change", (e) => setFile(e.target.files[0]));
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
drop.addEventListener("drop", (e) => setFile(e.dataTransfer.files[0]));

// ---- parameters --------------------------------------------------------------------------------
function currentTool() {
  return document.querySelector('input[name="tool"]:checked').value;
}

document.querySelectorAll('input[name="tool"]').forEach((radio) => radio.addEventListener("change", () => {
  document.querySelectorAll(".params").forEach((fs) => { fs.hidden = fs.dataset.tool !== currentTool(); });
}));

document.querySelectorAll('input[type="range"][name]').forEach((input) => {
  const out = document.querySelector(`output[for="${input.id}"]`);
  input.addEventListener("input", () => { if (out) out.textContent = input.value; });
});

function collectSettings(tool) {
  const settings = {};
  $(`params-${tool}`).querySelectorAll("[name]").forEach((el) => {
    if (el.dataset.kind === "bool") settings[el.name] = el.checked;
    else if (el.dataset.kind === "number") settings[el.name] = Number(el.value);
    else settings[el.name] = el.value;
  });
  return settings;
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}
$("api-key").value = localStorage.getItem("restora-api-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("restora-api-key", $("api-key").value));

// ---- errors ------------------------------------------------------------------------------------
function errorInfo(body, fallback) {
  if (!body || typeof body !== "object") return { message: fallback, code: null };
  const err = typeof body.error === "object" && body.error ? body.error : body;
  let message = err.message || body.message || (typeof body.error === "string" ? body.error : null);
  if (!message && body.detail) {
    message = Array.isArray(body.detail) ? body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ") : String(body.detail);
  }
  return { message: message || fallback, code: err.code || body.code || null };
}

function showError(info) {
  $("progress-panel").hidden = true;
  $("error-panel").hidden = false;
  $("error-message").textContent = info.message;
  const hint = $("error-hint");
  const command = (info.message.match(/restora models (?:pull|import)[^`,;\n]*[^`,;.\s]/) || [])[0];
  if (info.code === "model_not_installed" || command) {
    hint.hidden = false;
    hint.textContent = "";
    hint.append("A model this tool needs is not installed on the server. Install it there with ");
    const code = document.createElement("code");
    code.textContent = command || "restora models pull upscale-enhance";
    hint.append(code, ", then try again.");
  } else {
    hint.hidden = true;
  }
  $("submit").disabled = !state.file;
}

// ---- submit and progress -----------------------------------------------------------------------
$("job-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!state.file) return;
  const tool = currentTool();
  $("submit").disabled = true;
  $("error-panel").hidden = true;
  $("result-panel").hidden = true;
  setProgress(0, "uploading");
  $("progress-panel").hidden = false;

  const form = new FormData();
  form.append("file", state.file, state.file.name);
  form.append("settings", JSON.stringify(collectSettings(tool)));
  let response;
  try {
    response = await fetch(`/api/v1/tools/${tool}`, { method: "POST", body: form, headers: authHeaders() });
  } catch (err) {
    showError({ message: `Could not reach the server: ${err.message}`, code: null });
    return;
  }
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || !body.jobId) {
    showError(errorInfo(body, `The server answered ${response.status}.`));
    return;
  }
  state.jobId = body.jobId;
  if (state.beforeUrl) URL.revokeObjectURL(state.beforeUrl);
  state.beforeUrl = URL.createObjectURL(state.file);
  followProgress(body.jobId);
});

function setProgress(percent, stage) {
  const p = Math.max(0, Math.min(100, Math.round(percent)));
  $("progress").value = p;
  $("percent").textContent = `${p}%`;
  $("stage").textContent = stage;
}

// SSE over fetch (not EventSource) so an API key header can be sent; reconnects with Last-Event-ID.
async function followProgress(jobId, lastEventId = null, attempt = 0) {
  state.abort = new AbortController();
  const headers = { Accept: "text/event-stream", ...authHeaders() };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  let finished = false;
  try {
    const response = await fetch(`/api/v1/jobs/${jobId}/progress`, { headers, signal: state.abort.signal });
    if (!response.ok) {
      showError(errorInfo(await response.json().catch(() => null), `Progress stream failed (${response.status}).`));
      return;
    }
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
            finished = handleEvent(event.type, event.data.join("\n")) || finished;
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
      if (finished) { state.abort.abort(); return; }
    }
  } catch (err) {
    if (err.name === "AbortError") return;
  }
  if (!finished && attempt < 20) {
    setTimeout(() => followProgress(jobId, lastEventId, attempt + 1), 500 * Math.min(attempt + 1, 6));
  }
}

function handleEvent(type, raw) {
  let data;
  try { data = JSON.parse(raw); } catch { return false; }
  if (type === "progress") {
    setProgress(data.percent ?? 0, data.stage || data.phase || "working");
    return false;
  }
  if (type === "complete") {
    setProgress(100, "done");
    showResult(data.result || data);
    return true;
  }
  if (type === "failed" || type === "cancelled" || type === "canceled") {
    showError(errorInfo(data.error || data, type === "failed" ? "The job failed." : "The job was cancelled."));
    return true;
  }
  return false;
}

$("cancel").addEventListener("click", async () => {
  if (!state.jobId) return;
  await fetch(`/api/v1/jobs/${state.jobId}/cancel`, { method: "POST", headers: authHeaders() }).catch(() => null);
  $("stage").textContent = "cancelling…";
});

// ---- result ------------------------------------------------------------------------------------
function showResult(result) {
  state.result = result;
  $("progress-panel").hidden = true;
  $("result-panel").hidden = false;
  $("submit").disabled = false;
  const after = $("after");
  const before = $("before");
  after.src = result.downloadUrl;
  before.onerror = () => { before.onerror = null; before.src = result.previewUrl || result.downloadUrl; };
  before.onload = drawFaces;
  before.src = state.beforeUrl;
  $("download").href = result.downloadUrl;
  $("download-preview").href = result.previewUrl || result.downloadUrl;
  $("download-preview").hidden = !result.previewUrl;
  setSlider($("slider").value);
  renderFacts(result);
  drawFaces();
}

function setSlider(value) {
  $("before-clip").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("divider").style.left = `${value}%`;
}
$("slider").addEventListener("input", (e) => setSlider(e.target.value));

// Dragging on the picture moves the split too (the range input stays the keyboard control).
$("compare").addEventListener("pointermove", (e) => {
  if (!(e.buttons & 1)) return;
  const rect = $("compare").getBoundingClientRect();
  const v = Math.round(((e.clientX - rect.left) / rect.width) * 100);
  $("slider").value = Math.max(0, Math.min(100, v));
  setSlider($("slider").value);
});

$("zoom").addEventListener("change", (e) => $("viewport").classList.toggle("zoomed", e.target.checked));
$("show-faces").addEventListener("change", (e) => $("faces").toggleAttribute("hidden", !e.target.checked));

function drawFaces() {
  const svg = $("faces");
  const result = state.result;
  if (!result) return;
  const before = $("before");
  // Face boxes are in input-image pixels: size the drawing to the input, stretched over the view.
  const w = before.naturalWidth || result.originalWidth || result.width;
  const h = before.naturalHeight || result.originalHeight || result.height;
  if (!w || !h) return;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.textContent = "";
  (result.faces || []).forEach((f, i) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", f.x); rect.setAttribute("y", f.y);
    rect.setAttribute("width", f.w); rect.setAttribute("height", f.h);
    rect.dataset.face = String(i);
    svg.append(rect);
  });
}

function renderFacts(result) {
  const facts = $("facts");
  facts.textContent = "";
  const add = (label, value) => {
    if (value === undefined || value === null || value === "") return;
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = value;
    facts.append(dt, dd);
  };
  add("Faces detected", result.facesDetected ?? result.facesEnhanced);
  add("Model", result.model);
  add("Why this model", result.reason);
  if (Array.isArray(result.steps)) add("Steps", result.steps.join(", ") || "none needed");
  if (result.scratchCoverage !== undefined) add("Scratch coverage", `${Number(result.scratchCoverage).toFixed(2)}%`);
  if (result.isGrayscale !== undefined) add("Monochrome", result.isGrayscale ? "yes" : "no");
  if (result.colorized !== undefined) add("Colorized", result.colorized ? "yes" : "no");
  if (result.width && result.height) add("Size", `${result.width} × ${result.height}`);
  if (result.originalSize !== undefined && result.processedSize !== undefined) {
    add("File size", `${formatBytes(result.originalSize)} → ${formatBytes(result.processedSize)}`);
  }
  if (result.timings && typeof result.timings === "object") {
    add("Timings", Object.entries(result.timings).map(([k, v]) => `${k} ${Number(v).toFixed(2)} s`).join(" · "));
  }
}
