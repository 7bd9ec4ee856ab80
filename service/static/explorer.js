// The explorer of one collection: its map (canvas), coloured by a vocabulary, facets that cross-filter,
// search, box and lasso selection and export, a picture's panel. Plain JS, no build step; the view's state is in the URL.
"use strict";

const NAME = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const API = `/v1/collections/${encodeURIComponent(NAME)}`;
const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];

const view = {  // what the URL holds
  vocab: null, colour: "top", phrase: null, filters: [], facets: [], q: "", minCosine: 0.2, sel: [], pic: null,
  zoom: 1, cx: 0.5, cy: 0.5,
};
const data = { points: [], rows: null, scores: null, hits: new Set(), mask: null, thumbs: new Map(), vocabs: [], phrases: [],
  identities: Promise.resolve(true) };

async function getJSON(path, options) {
  const resp = await fetch(path, options);
  const body = await resp.json().catch(() => ({ ok: false, error: `${resp.status} ${resp.statusText}` }));
  if (!resp.ok || body.ok === false) throw new Error(body.error || `HTTP ${resp.status}`);
  body._status = resp.status;
  return body;
}

// The map as Arrow IPC (ArrowStream, /static/arrow.js): its columns and the answer's other fields (the
// schema's metadata); an error answers JSON.
async function getArrow(path) {
  const resp = await fetch(path);
  if (!resp.ok || (resp.headers.get("Content-Type") || "").startsWith("application/json")) {
    const body = await resp.json().catch(() => ({ error: `${resp.status} ${resp.statusText}` }));
    throw new Error(body.error || `HTTP ${resp.status}`);
  }
  const bytes = await resp.arrayBuffer(), arrived = performance.now();
  const table = ArrowStream.readArrowStream(bytes);
  return { ...table.metadata, _status: resp.status, _arrived: arrived, length: table.length, columns: table.columns };
}

function say(text) { $("status").textContent = text; }

// -- the URL ---------------------------------------------------------------------------------------------
function readURL() {
  const p = new URLSearchParams(location.search);
  view.vocab = p.get("vocab");
  view.colour = p.get("colour") === "phrase" ? "phrase" : "top";
  view.phrase = p.get("phrase");
  view.filters = p.getAll("where");
  view.facets = p.getAll("facet");
  view.q = p.get("q") || "";
  view.minCosine = p.has("min_cosine") ? Number(p.get("min_cosine")) : 0.2;
  view.sel = (p.get("sel") || "").split(",").filter(Boolean).map(Number);
  view.pic = p.get("pic");
  const z = (p.get("zoom") || "").split(",").map(Number);
  if (z.length === 3 && z.every(Number.isFinite)) [view.zoom, view.cx, view.cy] = z;
}

function writeURL() {
  const p = new URLSearchParams();
  if (view.vocab) p.set("vocab", view.vocab);
  p.set("colour", view.colour);
  if (view.phrase) p.set("phrase", view.phrase);
  view.filters.forEach((w) => p.append("where", w));
  view.facets.forEach((f) => p.append("facet", f));
  if (view.q) { p.set("q", view.q); p.set("min_cosine", String(view.minCosine)); }
  if (view.sel.length) p.set("sel", view.sel.join(","));
  if (view.pic) p.set("pic", view.pic);
  p.set("zoom", [view.zoom.toFixed(3), view.cx.toFixed(4), view.cy.toFixed(4)].join(","));
  history.replaceState(null, "", `${location.pathname}?${p}`);
}

// -- the map ---------------------------------------------------------------------------------------------
const canvas = $("map");
const ctx = canvas.getContext("2d");
let frameAsked = false;

function fit() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  draw();
}

function side() { return Math.min(canvas.width, canvas.height) * view.zoom; }
function toScreen(x, y) {
  const s = side();
  return [canvas.width / 2 + (x - view.cx) * s, canvas.height / 2 + (y - view.cy) * s];
}
function toMap(px, py) {
  const s = side();
  return [view.cx + (px - canvas.width / 2) / s, view.cy + (py - canvas.height / 2) / s];
}

// A point's position in the collection's order, the order of /scores' columns (the map's `index`, sent
// when the layout does not place every picture: an older one while a newer computes).
function row(i) { return data.rows ? data.rows[i] : i; }

function colourOf(i) {
  const sc = data.scores;
  if (!sc) return "#555";
  const k = row(i);
  if (view.colour === "phrase" && sc.probability) return ramp(sc.probability[k]);
  return PALETTE[sc.rank[sc.top[k]] % PALETTE.length] || "#999";
}

function ramp(t) {  // viridis-like, 0 → dark blue, 1 → yellow
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const u = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const a = stops[Math.floor(u)], b = stops[Math.min(stops.length - 1, Math.floor(u) + 1)], f = u - Math.floor(u);
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
}

function draw() {
  frameAsked = false;
  const w = canvas.width, h = canvas.height, pts = data.points, n = pts.length;
  ctx.fillStyle = "#fbfbf8";
  ctx.fillRect(0, 0, w, h);
  if (!n) return;
  const s = side(), dpr = window.devicePixelRatio || 1;
  const spacing = s / Math.sqrt(n);  // px between neighbours, about
  const thumbSize = Math.min(96 * dpr, spacing * 0.9);
  const showThumbs = thumbSize >= 20 * dpr;
  const r = Math.max(1.5 * dpr, Math.min(5 * dpr, spacing / 4));
  const selected = new Set(view.sel);
  const drawn = [];
  canvas.dataset.kept = String(data.mask ? data.mask.reduce((a, b) => a + b, 0) : n);
  canvas.dataset.hits = String(data.hits.size);
  canvas.dataset.thumbnails = String(showThumbs);
  for (let i = 0; i < n; i++) {
    const [x, y] = toScreen(pts[i].x, pts[i].y);
    if (x < -thumbSize || y < -thumbSize || x > w + thumbSize || y > h + thumbSize) continue;
    const kept = !data.mask || data.mask[i];
    ctx.globalAlpha = kept ? 1 : 0.12;
    if (showThumbs && kept && drawn.length < 600) { drawn.push([i, x, y]); continue; }
    ctx.fillStyle = colourOf(i);
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.globalAlpha = 1;
  if (window.explorerTimings && !window.explorerTimings.firstDraw) window.explorerTimings.pointsDrawn = performance.now();
  for (const [i, x, y] of drawn) {
    const img = pts[i].sha256 && thumb(pts[i].sha256);  // none until the identities arrive
    const t = thumbSize;
    if (img && img.complete && img.naturalWidth) {
      const k = t / Math.max(img.naturalWidth, img.naturalHeight);
      ctx.drawImage(img, x - img.naturalWidth * k / 2, y - img.naturalHeight * k / 2, img.naturalWidth * k, img.naturalHeight * k);
    }
    ctx.strokeStyle = colourOf(i);
    ctx.lineWidth = 3 * dpr;
    ctx.strokeRect(x - t / 2, y - t / 2, t, t);
  }
  for (let i = 0; i < n; i++) {  // hits and the selection on top
    const hit = data.hits.has(i), sel = selected.has(i);
    if (!hit && !sel && pts[i].sha256 !== view.pic) continue;
    const [x, y] = toScreen(pts[i].x, pts[i].y);
    ctx.strokeStyle = pts[i].sha256 === view.pic ? "#000" : hit ? "#e00" : "#06c";
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath();
    ctx.arc(x, y, r + 4 * dpr, 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (box) {
    ctx.strokeStyle = "#06c";
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
    ctx.setLineDash([]);
  }
  if (lasso && lasso.length > 1) {
    ctx.strokeStyle = "#06c";
    ctx.fillStyle = "rgba(0, 102, 204, 0.08)";
    ctx.lineWidth = 2 * dpr;
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    lasso.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.fill();
    ctx.stroke();
    ctx.setLineDash([]);
  }
}

function redraw() { if (!frameAsked) { frameAsked = true; requestAnimationFrame(draw); } }

function thumb(sha) {
  let img = data.thumbs.get(sha);
  if (!img) {
    img = new Image();
    img.onload = redraw;
    img.src = `${API}/pictures/${sha}/thumbnail`;
    data.thumbs.set(sha, img);
  }
  return img;
}

function nearest(px, py, within) {
  let best = -1, bestD = within * within;
  data.points.forEach((p, i) => {
    if (data.mask && !data.mask[i]) return;
    const [x, y] = toScreen(p.x, p.y);
    const d = (x - px) ** 2 + (y - py) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  });
  return best;
}

let drag = null, box = null, lasso = null;
const tool = () => (document.querySelector("input[name=select-tool]:checked") || {}).value || "box";
canvas.addEventListener("pointerdown", (e) => {
  const dpr = window.devicePixelRatio || 1, r = canvas.getBoundingClientRect();
  const px = (e.clientX - r.left) * dpr, py = (e.clientY - r.top) * dpr;
  canvas.setPointerCapture(e.pointerId);
  if (e.shiftKey && tool() === "lasso") lasso = [[px, py]];
  else if (e.shiftKey) box = { x0: px, y0: py, x1: px, y1: py };
  else drag = { px, py, cx: view.cx, cy: view.cy, moved: false };
});
canvas.addEventListener("pointermove", (e) => {
  const dpr = window.devicePixelRatio || 1, r = canvas.getBoundingClientRect();
  const px = (e.clientX - r.left) * dpr, py = (e.clientY - r.top) * dpr;
  if (box) { box.x1 = px; box.y1 = py; redraw(); return; }
  if (lasso) { lasso.push([px, py]); redraw(); return; }
  if (!drag) return;
  if (Math.abs(px - drag.px) + Math.abs(py - drag.py) > 3) drag.moved = true;
  view.cx = drag.cx - (px - drag.px) / side();
  view.cy = drag.cy - (py - drag.py) / side();
  redraw();
});
canvas.addEventListener("pointerup", (e) => {
  const dpr = window.devicePixelRatio || 1, r = canvas.getBoundingClientRect();
  const px = (e.clientX - r.left) * dpr, py = (e.clientY - r.top) * dpr;
  if (box) { selectBox(box); box = null; }
  else if (lasso) { lasso.push([px, py]); selectLasso(lasso); lasso = null; }
  else if (drag && !drag.moved) {
    const i = nearest(px, py, 14 * dpr);
    if (i >= 0) openPoint(i);
  }
  drag = null;
  writeURL();
  redraw();
});
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const dpr = window.devicePixelRatio || 1, r = canvas.getBoundingClientRect();
  const px = (e.clientX - r.left) * dpr, py = (e.clientY - r.top) * dpr;
  const [mx, my] = toMap(px, py);
  zoomBy(Math.exp(-e.deltaY * 0.0015), mx, my);
}, { passive: false });

function zoomBy(f, mx = view.cx, my = view.cy) {
  const z = Math.max(0.5, Math.min(400, view.zoom * f));
  const k = view.zoom / z;
  view.cx = mx - (mx - view.cx) * k;
  view.cy = my - (my - view.cy) * k;
  view.zoom = z;
  writeURL();
  redraw();
}

let keyBox = null;
canvas.addEventListener("keydown", (e) => {
  const step = 0.1 / view.zoom;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (e.key in moves) {
    e.preventDefault();
    if (keyBox) {
      keyBox.x1 += moves[e.key][0] * side(); keyBox.y1 += moves[e.key][1] * side(); box = keyBox; redraw(); return;
    }
    view.cx += moves[e.key][0]; view.cy += moves[e.key][1]; writeURL(); redraw();
  } else if (e.key === "+" || e.key === "=") zoomBy(1.5);
  else if (e.key === "-") zoomBy(1 / 1.5);
  else if (e.key === "0") { view.zoom = 1; view.cx = 0.5; view.cy = 0.5; writeURL(); redraw(); }
  else if (e.key === "b") {
    if (keyBox) { selectBox(keyBox); keyBox = null; box = null; writeURL(); redraw(); }
    else { keyBox = { x0: canvas.width / 2, y0: canvas.height / 2, x1: canvas.width / 2, y1: canvas.height / 2 }; }
  } else if (e.key === "Enter") {
    const i = nearest(canvas.width / 2, canvas.height / 2, Math.max(canvas.width, canvas.height));
    if (i >= 0) openPoint(i);
  } else if (e.key === "Escape") { keyBox = null; box = null; redraw(); }
});

function selectBox(b) {
  const [x0, x1] = [Math.min(b.x0, b.x1), Math.max(b.x0, b.x1)], [y0, y1] = [Math.min(b.y0, b.y1), Math.max(b.y0, b.y1)];
  view.sel = [];
  data.points.forEach((p, i) => {
    if (data.mask && !data.mask[i]) return;
    const [x, y] = toScreen(p.x, p.y);
    if (x >= x0 && x <= x1 && y >= y0 && y <= y1) view.sel.push(i);
  });
  showSelection();
}

// A lasso: the polygon drawn, closed from its last point to its first; a point is inside when a ray from
// it crosses the polygon's edges an odd number of times (even-odd rule, as canvas fills it).
function inside(x, y, poly) {
  let odd = false;
  for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
    const [xa, ya] = poly[a], [xb, yb] = poly[b];
    if ((ya > y) !== (yb > y) && x < xa + (y - ya) * (xb - xa) / (yb - ya)) odd = !odd;
  }
  return odd;
}

function selectLasso(poly) {
  view.sel = [];
  if (poly.length >= 3) {
    const xs = poly.map((p) => p[0]), ys = poly.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    data.points.forEach((p, i) => {
      if (data.mask && !data.mask[i]) return;
      const [x, y] = toScreen(p.x, p.y);
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && inside(x, y, poly)) view.sel.push(i);
    });
  }
  showSelection();
}

function showSelection() {
  const n = view.sel.length;
  $("selection-count").textContent = n ? `${n} pictures selected.` : "Nothing selected.";
  for (const id of ["export-csv", "export-json", "clear-selection"]) $(id).disabled = !n;
}

async function selectionRows() {
  await data.identities;
  const sc = data.scores, rows = [];
  for (const i of view.sel) {
    const p = data.points[i], k = row(i);
    const rec = await getJSON(`${API}/pictures/${p.sha256}`);
    const out = { external_id: p.external_id, source: rec.source, sha256: p.sha256, vocabulary: view.vocab,
      softmax_over: sc ? sc.softmax_over : null, top_phrase: sc ? sc.phrases[sc.top[k]] : null,
      top_probability: sc ? sc.top_probability[k] : null };
    if (sc && sc.probability) { out.phrase = sc.phrase; out.probability = sc.probability[k]; }
    rows.push(out);
  }
  return rows;
}

function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function csvCell(v) {
  let s = v === null || v === undefined ? "" : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;  // no spreadsheet runs it as a formula
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

$("export-json").addEventListener("click", async () => {
  download(`${NAME}-selection.json`, JSON.stringify(await selectionRows(), null, 1), "application/json");
});
$("export-csv").addEventListener("click", async () => {
  const rows = await selectionRows();
  const cols = Object.keys(rows[0] || {});
  download(`${NAME}-selection.csv`, [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n", "text/csv");
});
$("clear-selection").addEventListener("click", () => { view.sel = []; showSelection(); writeURL(); redraw(); });

// -- scores, legend and facets ------------------------------------------------------------------------------
function whereParam() { return view.filters.map((w) => `&where=${encodeURIComponent(w)}`).join(""); }

async function loadScores() {
  if (!view.vocab) return;
  const phrase = view.colour === "phrase" && view.phrase ? `&phrase=${encodeURIComponent(view.phrase)}` : "";
  const sc = await getJSON(`${API}/scores?vocabulary=${encodeURIComponent(view.vocab)}${phrase}`);
  const counts = new Map();
  sc.top.forEach((t) => counts.set(t, (counts.get(t) || 0) + 1));
  const order = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a - b);
  sc.rank = {};
  order.forEach((t, k) => { sc.rank[t] = k; });
  sc.counts = counts;
  data.scores = sc;
  $("softmax-over").textContent = sc.softmax_over;
  fillPhrases(sc);
  legend(sc, order);
  redraw();
}

function fillPhrases(sc) {
  const sel = $("phrase");
  if (sel.options.length !== sc.phrases.length) {
    sel.replaceChildren(...sc.phrases.map((p) => new Option(p, p)));
  }
  if (!view.phrase || !sc.phrases.includes(view.phrase)) view.phrase = sc.phrases[0];
  sel.value = view.phrase;
  sel.disabled = view.colour !== "phrase";
}

function legend(sc, order) {
  const el = $("legend");
  el.replaceChildren();
  if (view.colour === "phrase" && sc.probability) {
    const bar = document.createElement("div");
    bar.className = "ramp";
    bar.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(ramp).join(",")})`;
    const labels = document.createElement("div");
    labels.className = "ramp-labels";
    labels.innerHTML = "<span>0%</span><span>50%</span><span>100%</span>";
    const what = document.createElement("p");
    what.textContent = `Probability of “${sc.phrase}” within ${sc.vocabulary} (softmax over ${sc.softmax_over} phrases)`;
    el.append(what, bar, labels);
    return;
  }
  const list = document.createElement("ul");
  for (const t of order.slice(0, PALETTE.length)) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = PALETTE[sc.rank[t]];
    li.append(sw, `${sc.phrases[t]} (${sc.counts.get(t)})`);
    list.append(li);
  }
  if (order.length > PALETTE.length) {
    const li = document.createElement("li");
    li.textContent = `…and ${order.length - PALETTE.length} more phrases (colours repeat)`;
    list.append(li);
  }
  const what = document.createElement("p");
  what.textContent = `Each picture's best phrase of ${sc.vocabulary} (of ${sc.softmax_over})`;
  el.append(what, list);
}

async function loadMask() {
  if (!view.filters.length || !view.vocab) { data.mask = null; return; }
  const sc = await getJSON(`${API}/scores?vocabulary=${encodeURIComponent(view.vocab)}${whereParam()}`);
  const kept = new Uint8Array(sc.size);
  (sc.index || []).forEach((i) => { kept[i] = 1; });
  data.mask = data.points.map((_, i) => kept[row(i)]);
}

async function loadFacets() {
  const box = $("facets");
  box.replaceChildren();
  const filters = $("filters");
  filters.replaceChildren(...view.filters.map((w, k) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "filter";
    b.textContent = `${w} ×`;
    b.setAttribute("aria-label", `Remove the filter ${w}`);
    b.addEventListener("click", () => { view.filters.splice(k, 1); refresh(); });
    return b;
  }));
  const facets = [...new Set([view.vocab && `vocab:${view.vocab}`, ...view.facets].filter(Boolean))];
  for (const f of facets) {
    const [kind, what] = [f.slice(0, f.indexOf(":")), f.slice(f.indexOf(":") + 1)];
    const sec = document.createElement("div");
    sec.className = "facet";
    const h = document.createElement("h3");
    h.textContent = kind === "vocab" ? `Best phrase of ${what}` : `Column ${what}`;
    sec.append(h);
    const list = document.createElement("ul");
    list.setAttribute("aria-label", h.textContent);
    let items = [];
    if (kind === "vocab") {
      const body = await getJSON(`${API}/facets?vocabulary=${encodeURIComponent(what)}${whereParam()}`);
      items = body.facets.map((x) => [x.phrase, x.count, `top:${what}=${x.phrase}`]);
      h.textContent += ` (softmax over ${body.softmax_over})`;
    } else {
      const body = await getJSON(`${API}/facets?column=${encodeURIComponent(what)}&limit=30${whereParam()}`);
      items = body.facets.map((x) => [x.phrase, x.count, `${what}=${x.phrase}`]);
    }
    for (const [label, count, where] of items.slice(0, 30)) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "facet-item";
      b.dataset.where = where;
      b.setAttribute("aria-pressed", String(view.filters.includes(where)));
      b.innerHTML = `<span class="label"></span> <span class="count">${count}</span>`;
      b.querySelector(".label").textContent = label;
      b.addEventListener("click", () => {
        const k = view.filters.indexOf(where);
        if (k >= 0) view.filters.splice(k, 1); else view.filters.push(where);
        refresh();
      });
      li.append(b);
      list.append(li);
    }
    sec.append(list);
    box.append(sec);
  }
}

async function loadColumns() {  // the metadata columns of the first pictures, offered for facets
  const page = await getJSON(`${API}?limit=200`);
  const columns = new Set();
  page.pictures.forEach((p) => Object.keys(p.metadata || {}).forEach((c) => columns.add(c)));
  $("columns").replaceChildren(...[...columns].map((c) => new Option(c)));
}

// -- search ------------------------------------------------------------------------------------------------
async function search(form) {
  data.hits = new Set();
  const hits = $("hits");
  hits.replaceChildren();
  let body;
  if (form) {
    const resp = await fetch("/v1/collections/" + encodeURIComponent(NAME) + "/search", { method: "POST", body: form });
    body = await resp.json();
    if (!body.ok) throw new Error(body.error);
  } else if (view.q) {
    body = await getJSON(`${API}/search?q=${encodeURIComponent(view.q)}&top_k=100&min_cosine=${view.minCosine}`);
  } else { redraw(); return; }
  await data.identities;
  const at = new Map(data.points.map((p, i) => [p.sha256, i]));
  for (const h of body.hits) {
    if (at.has(h.sha256)) data.hits.add(at.get(h.sha256));
    const b = document.createElement("button");
    b.type = "button";
    b.className = "hit";
    b.title = `${h.external_id || h.source} · cosine ${h.cosine.toFixed(3)}`;
    const img = document.createElement("img");
    img.src = `${API}/pictures/${h.sha256}/thumbnail`;
    img.alt = h.external_id || h.source;
    b.append(img);
    b.addEventListener("click", () => openPicture(h.sha256));
    hits.append(b);
  }
  const p = document.createElement("p");
  p.className = "hits-count";
  p.textContent = `${body.hits.length} pictures with cosine ≥ ${view.minCosine} (of ${body.searched})`;
  hits.prepend(p);
  redraw();
}

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  view.q = $("q").value.trim();
  view.minCosine = Number($("min-cosine").value);
  writeURL();
  search().catch((err) => say(`Error: ${err.message}`));
});
$("clear-search").addEventListener("click", () => { view.q = ""; $("q").value = ""; data.hits = new Set(); $("hits").replaceChildren(); writeURL(); redraw(); });

function searchByFile(file) {
  const form = new FormData();
  form.append("image", file, file.name || "picture");
  form.append("top_k", "100");
  form.append("min_cosine", String(Number($("min-cosine").value)));
  search(form).catch((err) => say(`Error: ${err.message}`));
}
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) searchByFile(e.dataTransfer.files[0]); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("drop-file").click(); } });
drop.addEventListener("click", () => $("drop-file").click());
$("drop-file").addEventListener("change", (e) => { if (e.target.files[0]) searchByFile(e.target.files[0]); });

// -- a picture's panel -------------------------------------------------------------------------------------
let osd = null;
async function openPicture(sha) {
  view.pic = sha;
  writeURL();
  redraw();
  const vocabs = [...new Set([view.vocab, ...view.facets.filter((f) => f.startsWith("vocab:")).map((f) => f.slice(6))].filter(Boolean))];
  const rec = await getJSON(`${API}/pictures/${sha}?top_k=5${vocabs.length ? `&vocabularies=${vocabs.join(",")}` : ""}`);
  const panel = $("panel");
  panel.hidden = false;
  $("panel-title").textContent = rec.external_id || rec.source.split("/").pop();
  const img = $("panel-image");
  img.src = rec.thumbnail || "";
  img.alt = `The picture ${rec.external_id || rec.source}`;
  const dz = $("deep-zoom");
  if (rec.image_service && window.OpenSeadragon) {
    dz.hidden = false;
    img.hidden = true;
    if (osd) osd.destroy();
    osd = OpenSeadragon({ element: dz, tileSources: [`${rec.image_service}/info.json`], showNavigationControl: false });
  } else { dz.hidden = true; img.hidden = false; }
  const meta = $("panel-meta");
  meta.replaceChildren();
  const rows = [["source", rec.source], ["external_id", rec.external_id], ["size", rec.width ? `${rec.width}×${rec.height}` : ""],
    ["manifest", rec.manifest], ["IIIF service", rec.image_service], ...Object.entries(rec.metadata || {})];
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === "") continue;
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    meta.append(dt, dd);
  }
  const res = $("panel-results");
  res.replaceChildren();
  for (const [vocab, r] of Object.entries(rec.results || {})) {
    const h = document.createElement("h3");
    h.textContent = `${vocab}: relative to ${r.softmax_over} phrases`;
    const ol = document.createElement("ol");
    for (const m of r.matches) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="share"></span> <span class="bar"><span></span></span> <span class="phrase"></span>`;
      li.querySelector(".share").textContent = `${(m.probability * 100).toFixed(1)}%`;
      li.querySelector(".bar span").style.width = `${(m.probability * 100).toFixed(1)}%`;
      li.querySelector(".phrase").textContent = m.phrase;
      ol.append(li);
    }
    res.append(h, ol);
  }
  $("explain-image").hidden = true;
}

$("close-panel").addEventListener("click", () => { $("panel").hidden = true; view.pic = null; writeURL(); redraw(); canvas.focus(); });
$("explain").addEventListener("click", async () => {
  if (!view.pic) return;
  say("Computing the explanation map…");
  const resp = await fetch(`${API}/pictures/${view.pic}/explain?format=png&top_k=1&vocabularies=${encodeURIComponent(view.vocab || "")}`);
  if (!resp.ok) { say(`Error: ${(await resp.json()).error}`); return; }
  const from = resp.headers.get("X-Clip-Gaze-Explained-From") || "thumbnail";
  const out = $("explain-image");
  out.src = URL.createObjectURL(await resp.blob());
  out.alt = `Where CLIP draws its best phrase of ${view.vocab} from, over the ${from === "source" ? "picture" : "thumbnail"}`;
  out.dataset.explainedFrom = from;
  out.hidden = false;
  say(from === "source" ? "Explanation: the best phrase's map, computed from the picture's source at the model's input size."
    : "Explanation: the best phrase's map over the thumbnail (the source could not be read again).");
});

// -- wiring ------------------------------------------------------------------------------------------------
async function refresh() {
  writeURL();
  try {
    await loadMask();
    await loadFacets();
    redraw();
  } catch (err) { say(`Error: ${err.message}`); }
}

// The map in its compact form first, Arrow of index, x and y (9 bytes a picture: what the first render
// needs), then the points' identities, sha256 and external_id (thumbnails, a picture's panel, search hits,
// export), a second Arrow answer of the same layout that does not hold up the first render.
const MAP_COMPACT = "index,x,y", MAP_IDENTITIES = "sha256,external_id";
const layoutOf = (b) => [b.version, b.current_version, b.method, b.size, b.length].join("|");

async function loadMap() {
  for (;;) {
    const body = await getArrow(`${API}/map?format=arrow&fields=${MAP_COMPACT}`);
    $("model-name").textContent = body.model;
    $("model-caveat").hidden = !String(body.model).startsWith("toy");
    if (body.length || !body.job) {
      const { x, y, index } = body.columns;
      data.points = Array.from(x, (v, i) => ({ x: v, y: y[i], sha256: null, external_id: null }));
      data.rows = index;
      data.identities = loadIdentities(layoutOf(body));
      window.explorerTimings = { mapArrived: body._arrived, mapRead: performance.now() };
      say(`${body.size} pictures, ${body.method || "no layout"}` + (body.job ? " (a newer layout is being computed)" : ""));
      return body;
    }
    say(`Computing the map (job ${body.job.id})…`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function loadIdentities(layout) {
  const body = await getArrow(`${API}/map?format=arrow&fields=${MAP_IDENTITIES}`);
  if (layoutOf(body) !== layout) {  // a newer layout came between the two: both again
    await loadMap();
    return data.identities;
  }
  const { sha256, external_id } = body.columns;
  data.points.forEach((p, i) => { p.sha256 = ArrowStream.hex(sha256[i]); p.external_id = external_id[i]; });
  redraw();
  return true;
}

async function openPoint(i) {
  await data.identities;
  return openPicture(data.points[i].sha256);
}

async function start() {
  readURL();
  $("collection-name").textContent = NAME;
  document.title = `${NAME} · clip-gaze explorer`;
  const vocabs = await getJSON("/v1/vocabularies");
  data.vocabs = vocabs.vocabularies.map((v) => v.name);
  if (!view.vocab) view.vocab = data.vocabs.includes("movements") ? "movements" : data.vocabs[0];
  $("vocab").replaceChildren(...data.vocabs.map((n) => new Option(n, n)));
  $("vocab").value = view.vocab;
  $("facet-vocab").append(...data.vocabs.map((n) => new Option(n, n)));
  document.querySelector(`input[name=colour][value=${view.colour}]`).checked = true;
  $("q").value = view.q;
  $("min-cosine").value = view.minCosine;
  fit();
  await loadMap();
  await loadColumns();
  await loadScores();
  await refresh();
  showSelection();
  if (view.q) await search();
  if (view.pic) await openPicture(view.pic);
  draw();
  if (window.explorerTimings) window.explorerTimings.firstDraw = performance.now();
  await data.identities;
  if (window.explorerTimings) window.explorerTimings.identities = performance.now();
  document.body.dataset.ready = "true";
}

$("vocab").addEventListener("change", async (e) => { view.vocab = e.target.value; view.phrase = null; await loadScores(); refresh(); });
$("phrase").addEventListener("change", async (e) => { view.phrase = e.target.value; await loadScores(); writeURL(); });
document.querySelectorAll("input[name=colour]").forEach((r) => r.addEventListener("change", async (e) => {
  view.colour = e.target.value;
  await loadScores();
  writeURL();
}));
$("facet-vocab").addEventListener("change", (e) => {
  if (e.target.value && !view.facets.includes(`vocab:${e.target.value}`)) view.facets.push(`vocab:${e.target.value}`);
  e.target.value = "";
  refresh();
});
$("facet-column").addEventListener("change", (e) => {
  const c = e.target.value.trim();
  if (c && !view.facets.includes(`column:${c}`)) view.facets.push(`column:${c}`);
  e.target.value = "";
  refresh();
});
window.addEventListener("resize", fit);
start().catch((err) => say(`Error: ${err.message}`));
