// clip-gaze's page: plain JavaScript over the REST API (no build step, no dependencies).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, last: null, lastKind: null, vocabularies: [], asked: null, explained: {}, selected: null,
  served: [], modelsAnswer: null };
const TOKEN_KEY = "clip-gaze-token";
const DROP_HELP = $("drop-help").textContent;  // the script is deferred: the page is already parsed

// -- API ------------------------------------------------------------------------------------------
async function api(method, path, { json, form, auth } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  const token = $("token").value.trim();  // sent with every request once given: a closed service needs it to read
  if (auth && !token) throw new Error("Type the API key first: changing vocabularies needs it.");
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new Error("The server could not be reached. Is clip-gaze serve still running?");
  }
  let data;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) askForKey(data && data.error);
  if (!resp.ok || !data || data.ok === false) {
    const err = new Error(plainError(resp.status, data));
    err.status = resp.status;
    err.code = data && data.code;
    throw err;
  }
  return data;
}

function plainError(status, data) {
  const msg = data && data.error ? data.error : `the server answered ${status}`;
  const lead = {
    400: "That did not work", 401: "An API key is needed", 429: "Too many requests", 403: "Not allowed", 404: "Not found",
    409: "Conflict", 413: "Too large", 500: "The server failed", 503: "The server is not ready",
  }[status] || "Error";
  return `${lead}: ${msg}`;
}

// The service answered 401 (no key, or one it does not accept): ask for one, then load again with it.
function askForKey(message) {
  $("key-reason").textContent = `This service needs an API key${message ? `: ${message}` : "."}`;
  $("key").value = $("token").value;
  $("key-form").hidden = false;
  $("key").focus();
}

function useKey(e) {
  e.preventDefault();
  $("token").value = $("key").value.trim();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("key-form").hidden = true;
  loadModel();
  loadVocabularies();
}

// -- start ----------------------------------------------------------------------------------------
const modelLabel = (m) => (m.preset ? `${m.preset} (${m.arch})` : `${m.arch}:${m.pretrained}`);
// The project's test instruments (the toy, and any checkpoint of its architecture): their opinions about art mean nothing.
const isToy = (m) => (m.preset || "").startsWith("toy") || m.arch.startsWith("clip-gaze-toy");

async function loadModel() {
  try {
    const [health, models] = await Promise.all([api("GET", "/v1/health"), api("GET", "/v1/models")]);
    state.modelsAnswer = models;
    state.served = models.served || [];
    const select = $("model-select");
    const several = state.served.length > 1;
    if (several && select.options.length !== state.served.length) {
      select.replaceChildren(...state.served.map((s) => {
        const o = document.createElement("option");
        o.value = s.name;
        o.textContent = `${s.name}${s.default ? " (default)" : ""}`;
        return o;
      }));
    }
    for (const s of state.served) {
      const o = [...select.options].find((x) => x.value === s.name);
      if (o) o.title = s.state === "loaded" ? `loaded${s.memory_mb != null ? `, ${s.memory_mb} MB` : ""}` : s.state.replace("_", " ");
    }
    $("model-pick").hidden = $("side-by-side-option").hidden = !several;
    if (!several) $("side-by-side").checked = false;
    showModel();
    $("model-status").textContent = health.status === "ready" ? "" : `(${health.status})`;
  } catch (e) {
    $("model-name").textContent = "unavailable";
    $("model-status").textContent = e.message;
  }
}

async function loadVocabularies() {
  const box = $("vocab-list");
  try {
    const { vocabularies } = await api("GET", "/v1/vocabularies");
    state.vocabularies = vocabularies;
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    const first = box.querySelector("input") === null;
    box.replaceChildren(...vocabularies.map((v) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox"; input.value = v.name; input.name = "vocabulary";
      input.checked = first ? v.default : checked.has(v.name);
      const small = document.createElement("small");
      small.textContent = ` ${v.size.toLocaleString()} phrases${v.builtin ? "" : ", yours"}`;
      label.append(input, ` ${v.name}`, small);
      return label;
    }));
    renderCustom();
  } catch (e) {
    box.textContent = e.message;
  }
}

// -- picking a picture ----------------------------------------------------------------------------
function setFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    resetPicture();
    showError(`${file.name || "That"} is not a picture.`);
    return;
  }
  state.file = file;
  const img = $("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  img.alt = `The picture to read: ${file.name || "pasted image"}`;
  img.hidden = false;
  $("drop-help").textContent = `${file.name || "Pasted picture"}: drop, paste or press Enter to change it.`;
  $("run").disabled = false;
  run();
}

// Back to "no picture chosen": no preview, the drop zone's own help text, nothing to read.
function resetPicture() {
  state.file = null;
  const img = $("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  img.alt = "";
  img.hidden = true;
  $("drop-help").textContent = DROP_HELP;
  $("file").value = "";
  $("run").disabled = true;
}

function wirePicking() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setFile(e.dataTransfer.files[0]); });
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]));
  // A picture the browser cannot show (a TIFF, or not a picture at all): no broken-image icon. The server
  // may still read it; if it refuses it, run() resets the picture.
  $("preview").addEventListener("error", () => { $("preview").hidden = true; });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) setFile(item.getAsFile());
  });
}

// The model chosen in the header (null: the server's default); side by side reads with every one served.
function selectedModel() { return $("model-pick").hidden ? null : $("model-select").value || null; }
const sideBySide = () => !$("side-by-side-option").hidden && $("side-by-side").checked;

function showModel() {
  const models = state.modelsAnswer;
  if (!models) return;
  const chosen = state.served.find((s) => s.name === selectedModel());
  const m = chosen ? chosen.model : models.model;
  $("model-name").textContent = sideBySide() ? state.served.map((s) => s.name).join(" · ") : modelLabel(m);
  const reading = sideBySide() ? state.served.map((s) => s.model) : [m];
  $("model-caveat").hidden = !reading.some(isToy);  // say so wherever a test instrument reads the picture
  $("side-explain").hidden = !sideBySide();
}

// -- asking ---------------------------------------------------------------------------------------
function mode() { return document.querySelector("input[name=mode]:checked").value; }

async function run() {
  if (!state.file) { showError("Choose a picture first."); return; }
  const form = new FormData();
  form.append("image", state.file, state.file.name || "pasted.png");
  let path = "/v1/analyze";
  let asked;
  const side = sideBySide();
  const model = side ? null : selectedModel();
  if (model) form.append("model", model);
  if (mode() === "compare") {
    const phrases = $("phrases").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (phrases.length < 2) { showError("Type at least two phrases, one per line."); return; }
    form.append("phrases", JSON.stringify(phrases));
    path = "/v1/compare";
    asked = { file: state.file, phrases };
  } else {
    const names = [...document.querySelectorAll("#vocab-list input:checked")].map((i) => i.value);
    if (!names.length) { showError("Choose at least one vocabulary."); return; }
    form.append("vocabularies", names.join(","));
    form.append("top_k", $("top-k").value || "5");
    asked = { file: state.file, topK: $("top-k").value || "5" };
  }
  if (side) {
    path = "/v1/compare-models";
    form.append("models", state.served.map((s) => s.name).join(","));
    if (mode() === "compare") form.append("top_k", String(Math.min(5, asked.phrases.length)));
  }
  asked.model = model;
  closeMap();
  $("reading-error").textContent = "";
  busy(true);
  try {
    const data = await api("POST", path, { form });
    state.last = data; state.lastKind = mode(); state.asked = asked;
    if (side) renderSideBySide(data); else renderCharts(data);
    bringResultsIntoView();
    loadModel();
  } catch (e) {
    if (pictureRefused(e)) resetPicture();
    showError(e.message);
  } finally {
    busy(false);
  }
}

// The server refused the picture itself (not an image, damaged, too large), not the question.
const pictureRefused = (e) => e.status === 413 || /image/.test(e.code || "");

// A reading that did not happen: the error takes the charts' place, and no earlier result stays on
// screen looking current.
function showError(message) {
  state.last = null;
  closeMap();
  $("export-json").disabled = $("export-csv").disabled = true;
  $("reading-error").textContent = message;
  $("charts").replaceChildren();
  if (!state.file) {
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = "Choose another picture to try again.";
    $("charts").append(hint);
  }
  bringResultsIntoView();
}

// On a narrow screen the results sit below the whole picture panel, out of sight: scroll them up
// when a reading ends (at once for those who ask for reduced motion).
const NARROW = window.matchMedia("(max-width: 760px)");  // as in style.css
const REDUCED_MOTION = window.matchMedia("(prefers-reduced-motion: reduce)");

function bringResultsIntoView() {
  if (!NARROW.matches) return;
  $("results").scrollIntoView({ behavior: REDUCED_MOTION.matches ? "auto" : "smooth", block: "start" });
}

function busy(on) {
  $("results").setAttribute("aria-busy", String(on));
  $("busy").hidden = !on;
  $("run").disabled = on || !state.file;
  $("run").textContent = on ? "Reading…" : "Read the picture";
}

// -- charts ---------------------------------------------------------------------------------------
const pct = (p) => (p >= 0.0005 ? `${(100 * p).toFixed(1)}%` : "<0.1%");

function chartHead(name, res) {
  const section = document.createElement("section");
  section.className = "chart";
  section.setAttribute("aria-label", `${name}: relative to ${res.softmax_over} phrases`);
  const h = document.createElement("h3");
  h.textContent = name === "compare" ? "Your phrases" : name;
  const rel = document.createElement("p");
  rel.className = "relative";
  rel.textContent = `Relative to ${res.softmax_over.toLocaleString()} phrase${res.softmax_over === 1 ? "" : "s"}` +
    (res.matches.length < res.softmax_over ? `; the best ${res.matches.length} shown.` : ".");
  if (res.matches.some((m) => m.sigmoid != null)) {
    // A sigmoid-trained model (SigLIP): each phrase's own probability, beside the share within the list.
    rel.textContent += " Bars: the share within the list (sums to 1). Sigmoid: the model's own probability " +
      "of each phrase, not relative: the list does not change it, and several phrases or none can be likely.";
  }
  section.append(h, rel);
  return section;
}

function renderCharts(data) {
  const charts = Object.entries(data.results).map(([name, res]) => {
    const section = chartHead(name, res);
    section.append(bars(name, res, state.asked ? state.asked.model : null));
    return section;
  });
  $("charts").replaceChildren(...charts);
  $("export-json").disabled = $("export-csv").disabled = false;
}

// One column per model, each its own reading of the list; above them, how far each pair agrees.
function renderSideBySide(data) {
  const lists = Object.keys(data.models[0].results);
  const charts = lists.map((name) => {
    const section = chartHead(name, data.models[0].results[name]);
    section.classList.add("side");
    for (const pair of data.agreement[name] || []) {
      const p = document.createElement("p");
      p.className = "agreement";
      const rho = pair.spearman === null ? "n/a" : pair.spearman.toFixed(3);
      p.textContent = `${pair.models[0]} and ${pair.models[1]}: Spearman's ρ ${rho} over the whole list; ` +
        `top-${pair.k} overlap ${pair.shared.length} of ${pair.k}` + (pair.shared.length ? ` (${pair.shared.join(", ")})` : "");
      section.append(p);
    }
    const columns = document.createElement("div");
    columns.className = "columns";
    for (const reading of data.models) {
      const col = document.createElement("div");
      col.className = "column";
      const h = document.createElement("h4");
      h.textContent = reading.name;
      h.title = modelLabel(reading.model);
      col.append(h, bars(name, reading.results[name], reading.name));
      columns.append(col);
    }
    section.append(columns);
    return section;
  });
  $("charts").replaceChildren(...charts);
  $("export-json").disabled = $("export-csv").disabled = false;
}

function bars(name, res, model) {
    const list = document.createElement("ol");
    list.className = "bars";
    for (const m of res.matches) {
      const li = document.createElement("li");
      li.className = "bar";
      li.tabIndex = 0;
      const detail = `cosine ${m.cosine.toFixed(4)}, logit ${m.logit.toFixed(2)}` +
        (m.sigmoid != null ? `, sigmoid ${pct(m.sigmoid)} (own probability, not relative)` : "") +
        (m.external_id ? `, id ${m.external_id}` : "");
      li.setAttribute("aria-label", `${m.phrase}: ${pct(m.probability)}; ${detail}`);
      li.title = detail;
      // The phrase and its share on one line, the bar on its own track below: nothing covers a thin bar.
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${100 * m.probability}%`;  // style.css keeps even the smallest a few pixels wide
      track.append(fill);
      const text = document.createElement("span");
      text.className = "text";
      const phrase = document.createElement("span");
      phrase.className = "phrase";
      phrase.textContent = m.phrase;
      const p = document.createElement("span");
      p.className = "pct";
      p.textContent = pct(m.probability);
      text.append(phrase, p);
      if (m.sigmoid != null) {
        const sig = document.createElement("span");
        sig.className = "pct sigmoid";
        sig.title = "The model's own probability of this phrase (sigmoid), not a share of the list";
        sig.textContent = `σ ${pct(m.sigmoid)}`;
        text.append(sig);
      }
      const tip = document.createElement("span");
      tip.className = "detail";
      tip.setAttribute("aria-hidden", "true");
      tip.textContent = detail;
      li.append(text, track, tip);
      li.setAttribute("aria-controls", "map-panel");
      const rank = list.children.length;
      li.addEventListener("click", () => selectBar(li, name, res, rank, model));
      li.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); selectBar(li, name, res, rank, model); }
      });
      list.append(li);
    }
    return list;
}

// -- maps: where in the picture a phrase draws its share from -------------------------------------
const MAX_EXPLAIN = 50;  // the most matches /v1/explain maps per list

function closeMap() {
  state.explained = {};
  state.selected = null;
  $("map-panel").hidden = true;
  $("map-status").textContent = "";
}

// One /v1/explain per list, model and reading (a promise, so a second click waits for the first answer).
function explainList(name, model) {
  const key = `${model || ""}\n${name}`;
  if (!state.explained[key]) {
    const form = new FormData();
    const asked = state.asked;
    form.append("image", asked.file, asked.file.name || "pasted.png");
    if (model) form.append("model", model);
    if (name === "compare") {
      form.append("phrases", JSON.stringify(asked.phrases));
      form.append("top_k", String(Math.min(MAX_EXPLAIN, asked.phrases.length)));
    } else {
      form.append("vocabularies", name);
      form.append("top_k", String(Math.min(MAX_EXPLAIN, Number(asked.topK))));
    }
    state.explained[key] = api("POST", "/v1/explain", { form });
    state.explained[key].catch(() => { delete state.explained[key]; });
  }
  return state.explained[key];
}

async function selectBar(li, name, res, rank, model = null) {
  for (const other of document.querySelectorAll(".bar[aria-current]")) other.removeAttribute("aria-current");
  li.setAttribute("aria-current", "true");
  const m = res.matches[rank];
  state.selected = { name, phrase: m.phrase, model };
  const panel = $("map-panel");
  panel.hidden = false;
  $("map-status").textContent = "";
  $("map-title").textContent = `Where “${m.phrase}” draws from`;
  $("map-caption").textContent = "Mapping…";
  if (rank >= MAX_EXPLAIN) { $("map-status").textContent = `Maps are made for the first ${MAX_EXPLAIN} phrases of a list.`; return; }
  try {
    const answer = await explainList(name, model);
    if (!state.selected || state.selected.phrase !== m.phrase || state.selected.name !== name ||
        state.selected.model !== model) return;  // another bar since
    const match = answer.results[name].matches.find((x) => x.phrase === m.phrase);
    if (!match) throw new Error("This phrase has no map in the answer.");
    const list = (name === "compare" ? "your phrases" : name) + (model ? `, under ${model}` : "");
    drawMap(answer, match.heatmap, match.peak,
      `“${m.phrase}”: ${pct(match.probability)} of ${answer.results[name].softmax_over.toLocaleString()} phrases (${list})`,
      match.probability > 0.99 ? " It holds nearly all of its list's share, so little in the picture moves that share and " +
        "the map is faint (see its scale). To see why it wins, contrast it with another phrase below." : "");
  } catch (e) {
    $("map-caption").textContent = "";
    $("map-status").textContent = e.message;
  }
  if (!REDUCED_MOTION.matches) panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
  else panel.scrollIntoView({ block: "nearest" });
}

async function contrast(e) {
  e.preventDefault();
  const versus = $("versus").value.trim();
  if (!state.selected) return;
  if (!versus) { $("map-status").textContent = "Type a phrase to contrast with."; return; }
  const { phrase, model } = state.selected;
  const form = new FormData();
  form.append("image", state.asked.file, state.asked.file.name || "pasted.png");
  if (model) form.append("model", model);
  form.append("phrases", JSON.stringify([phrase]));
  form.append("versus", versus);
  form.append("top_k", "1");
  $("map-status").textContent = "";
  $("map-caption").textContent = "Mapping…";
  try {
    const answer = await api("POST", "/v1/explain", { form });
    const c = answer.contrast;
    $("map-title").textContent = `Why “${c.phrase}” rather than “${c.versus}”`;
    drawMap(answer, c.heatmap, c.peak,
      `“${c.phrase}” rather than “${c.versus}”: logit difference ${c.logit_difference >= 0 ? "+" : ""}${c.logit_difference.toFixed(2)}`);
  } catch (err) {
    $("map-caption").textContent = "";
    $("map-status").textContent = err.message;
  }
}

// Where in the model's input a point lies, in words.
function where(peak, box) {
  const fx = (peak.x - box[0]) / (box[2] - box[0]);
  const fy = (peak.y - box[1]) / (box[3] - box[1]);
  const h = fx < 1 / 3 ? "left" : fx > 2 / 3 ? "right" : "centre";
  const v = fy < 1 / 3 ? "top" : fy > 2 / 3 ? "bottom" : "middle";
  if (h === "centre" && v === "middle") return "in the centre";
  if (v === "middle") return `on the ${h}`;
  if (h === "centre") return `at the ${v}`;
  return `at the ${v} ${h}`;
}

const POSITIVE = [215, 40, 40];
const NEGATIVE = [40, 100, 215];
const short = (v) => String(Number(v.toPrecision(3)));

function drawMap(answer, heat, peak, caption, note = "") {
  const canvas = $("map-canvas");
  const img = $("preview");
  const W0 = answer.image.width, H0 = answer.image.height;
  const room = Math.max(200, Math.min(480, $("map-panel").clientWidth - 26));
  const s = Math.min(room / W0, 400 / H0);
  const w = Math.max(1, Math.round(W0 * s)), h = Math.max(1, Math.round(H0 * s));
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (!img.hidden && img.complete && img.naturalWidth) {  // the picture in light grey, so the map's colours read
    ctx.filter = "grayscale(1)";
    ctx.drawImage(img, 0, 0, w, h);
    ctx.filter = "none";
    ctx.fillStyle = "rgba(235, 235, 235, 0.45)";
    ctx.fillRect(0, 0, w, h);
  } else {
    ctx.fillStyle = "#ddd";
    ctx.fillRect(0, 0, w, h);
  }
  const [x0, y0, x1, y1] = answer.grid.box.map((v) => v * s);
  ctx.fillStyle = "rgba(40, 40, 40, 0.55)";  // what the model's crop left out
  ctx.fillRect(0, 0, w, Math.max(0, y0));
  ctx.fillRect(0, Math.min(h, y1), w, h);
  ctx.fillRect(0, y0, Math.max(0, x0), y1 - y0);
  ctx.fillRect(Math.min(w, x1), y0, w, y1 - y0);
  const rows = heat.length, cols = heat[0].length;
  const vmax = Math.max(...heat.flat().map(Math.abs)) || 1;
  const cells = document.createElement("canvas");
  cells.width = cols; cells.height = rows;
  const cctx = cells.getContext("2d");
  const data = cctx.createImageData(cols, rows);
  heat.forEach((row, r) => row.forEach((v, c) => {
    const colour = v >= 0 ? POSITIVE : NEGATIVE;
    const i = 4 * (r * cols + c);
    data.data.set([...colour, Math.round(255 * 0.78 * Math.min(1, Math.abs(v) / vmax))], i);
  }));
  cctx.putImageData(data, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(cells, x0, y0, x1 - x0, y1 - y0);
  const cx = peak.x * s, cy = peak.y * s;
  const radius = Math.max(4, 0.5 * Math.min((x1 - x0) / cols, (y1 - y0) / rows));
  for (const [colour, width] of [["#000", 4], ["#fff", 2]]) {
    ctx.beginPath(); ctx.arc(cx, cy, radius, 0, 2 * Math.PI); ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.stroke();
  }
  const place = where(peak, answer.grid.box);
  const text = `${caption}. Raised most ${place} of what the model saw (the ringed cell, at ${Math.round(peak.x)}, ` +
    `${Math.round(peak.y)} px).${note}`;
  $("map-caption").textContent = text;
  canvas.setAttribute("aria-label", `Map over the picture, ${rows} by ${cols} cells: ${text} Red raises the share, blue lowers it.`);
  $("legend-low").textContent = `−${short(vmax)}`;
  $("legend-high").textContent = `+${short(vmax)}`;
}

// -- export ---------------------------------------------------------------------------------------
function download(name, type, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

// Text a spreadsheet would run as a formula (=, +, -, @, tab, carriage return first) gets a ' before it
// (OWASP's rule, as every CSV clip-gaze writes: indexer/spreadsheet.py); numbers stay numbers.
const spreadsheetText = (v) => (typeof v === "string" && /^[=+\-@\t\r]/.test(v) ? `'${v}` : v);
const csvCell = (v) => {
  if (v === null || v === undefined) return "";
  const s = String(spreadsheetText(v));
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

function toCsv(data) {
  if (data.models) {  // side by side: a row per model, list and match
    const rows = [["model", "vocabulary", "softmax_over", "rank", "phrase", "term", "probability", "cosine", "logit", "external_id"]];
    for (const r of data.models) {
      for (const [name, res] of Object.entries(r.results)) {
        res.matches.forEach((m, i) => rows.push([r.name, name, res.softmax_over, i + 1, m.phrase, m.term, m.probability, m.cosine, m.logit, m.external_id]));
      }
    }
    return rows.map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
  }
  const rows = [["vocabulary", "softmax_over", "rank", "phrase", "term", "probability", "cosine", "logit", "external_id"]];
  for (const [name, res] of Object.entries(data.results)) {
    res.matches.forEach((m, i) => rows.push([name, res.softmax_over, i + 1, m.phrase, m.term, m.probability, m.cosine, m.logit, m.external_id]));
  }
  return rows.map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
}

// -- custom vocabularies --------------------------------------------------------------------------
function parseCsvLine(line) {
  const out = []; let cur = ""; let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (c === '"') quoted = false; else cur += c;
    } else if (c === '"') quoted = true; else if (c === ",") { out.push(cur); cur = ""; } else cur += c;
  }
  out.push(cur);
  return out.map((s) => s.trim());
}

function parseTerms(text, isCsv) {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  if (!isCsv) return lines;
  const rows = lines.map(parseCsvLine);
  if (rows.length && rows[0][0].toLowerCase() === "term" && (rows[0][1] || "").toLowerCase() === "external_id") rows.shift();
  return rows.map((r) => (r[1] ? { term: r[0], external_id: r[1] } : r[0]));
}

function say(ok, text) {
  $("manage-error").textContent = ok ? "" : text;
  $("manage-ok").textContent = ok ? text : "";
}

async function createVocabulary(e) {
  e.preventDefault();
  const file = $("new-file").files[0];
  let phrases = parseTerms($("new-terms").value, $("new-csv").checked);
  if (file) phrases = phrases.concat(parseTerms(await file.text(), file.name.toLowerCase().endsWith(".csv")));
  const name = $("new-name").value.trim();
  try {
    const res = await api("POST", "/v1/vocabularies", {
      auth: true,
      json: { name, description: $("new-description").value, template: $("new-template").value || "{}", phrases },
    });
    $("create-form").reset();
    $("new-template").value = "{}";
    await loadVocabularies();
    say(true, `Created ${name} with ${res.added} phrases.`);
  } catch (err) { say(false, err.message); }
}

function renderCustom() {
  const mine = state.vocabularies.filter((v) => !v.builtin);
  const list = $("custom-list");
  if (!mine.length) { list.innerHTML = '<p class="hint">No vocabularies of your own yet.</p>'; return; }
  list.replaceChildren(...mine.map((v) => {
    const div = document.createElement("div");
    div.className = "custom";
    const id = (s) => `${s}-${v.name}`;
    div.innerHTML = `<h3></h3><p class="hint"></p>
      <div class="row">
        <div><label for="${id("add")}">Add terms, one per line</label><textarea id="${id("add")}" rows="3"></textarea>
             <button type="button" class="secondary" data-act="add">Add</button></div>
        <div><label for="${id("remove")}">Remove terms, one per line</label><textarea id="${id("remove")}" rows="3"></textarea>
             <button type="button" class="secondary" data-act="remove">Remove</button></div>
      </div>
      <button type="button" class="danger" data-act="delete"></button>`;
    div.querySelector("h3").textContent = v.name;
    div.querySelector(".hint").textContent = `${v.size.toLocaleString()} phrases; template ${v.templates.join(", ")}${v.description ? "; " + v.description : ""}`;
    div.querySelector("[data-act=delete]").textContent = `Delete ${v.name}`;
    div.querySelector("[data-act=add]").addEventListener("click", async () => {
      const text = $(id("add")).value;
      try {
        const r = await api("POST", `/v1/vocabularies/${encodeURIComponent(v.name)}/phrases`, { auth: true, json: { phrases: parseTerms(text, false) } });
        await loadVocabularies();  // first: the list is redrawn, so nothing typed after the message is lost
        say(true, `${v.name}: ${r.added} added, ${r.unchanged} already there.`);
      } catch (err) { say(false, err.message); }
    });
    div.querySelector("[data-act=remove]").addEventListener("click", async () => {
      const terms = $(id("remove")).value.split("\n").map((s) => s.trim()).filter(Boolean);
      try {
        const r = await api("DELETE", `/v1/vocabularies/${encodeURIComponent(v.name)}/phrases`, { auth: true, json: { terms } });
        await loadVocabularies();
        say(true, `${v.name}: ${r.removed} removed.`);
      } catch (err) { say(false, err.message); }
    });
    div.querySelector("[data-act=delete]").addEventListener("click", async () => {
      if (!window.confirm(`Delete ${v.name} and its ${v.size} phrases?`)) return;
      try {
        await api("DELETE", `/v1/vocabularies/${encodeURIComponent(v.name)}`, { auth: true });
        await loadVocabularies();
        say(true, `Deleted ${v.name}.`);
      } catch (err) { say(false, err.message); }
    });
    return div;
  }));
}

// -- wiring ---------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  wirePicking();
  $("run").addEventListener("click", run);
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      $("analyze-options").hidden = mode() !== "analyze";
      $("compare-options").hidden = mode() !== "compare";
    });
  }
  $("export-json").addEventListener("click", () => download("clip-gaze.json", "application/json", JSON.stringify(state.last, null, 2)));
  $("export-csv").addEventListener("click", () => download("clip-gaze.csv", "text/csv", toCsv(state.last)));
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, $("token").value));
  $("create-form").addEventListener("submit", createVocabulary);
  $("key-form").addEventListener("submit", useKey);
  $("versus-form").addEventListener("submit", contrast);
  $("model-select").addEventListener("change", showModel);
  $("side-by-side").addEventListener("change", () => { $("model-select").disabled = $("side-by-side").checked; showModel(); });
  loadModel();
  loadVocabularies();
  loadCollections();
});

async function loadCollections() {
  const list = $("collection-list");
  try {
    const body = await (await fetch("/v1/collections")).json();
    list.replaceChildren(...body.collections.map((c) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/collections/${encodeURIComponent(c.name)}`;
      a.textContent = c.name;
      li.append(a, ` (${c.size} pictures)${c.description ? `: ${c.description}` : ""}`);
      return li;
    }));
    if (!body.collections.length) list.innerHTML = "<li>None yet (<code>clip-gaze collection create</code>).</li>";
  } catch (err) {
    list.innerHTML = "<li>Could not list the collections.</li>";
  }
}
