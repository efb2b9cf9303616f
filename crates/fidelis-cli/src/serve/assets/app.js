// The Fidelis page: two tabs over the JSON API of `fidelis serve` (see serve/api.rs).
// No framework and nothing fetched from elsewhere; every text from the server is inserted with
// textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const POLL_MS = 250;
let info = null;

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = { error: `HTTP ${resp.status}` }; }
  if (!resp.ok) throw new Error(data && data.error ? data.error : `HTTP ${resp.status}`);
  return data;
}

// Polls a job until it ends; `onProgress(status)` sees every status.
async function waitJob(id, onProgress) {
  for (;;) {
    const status = await api(`/api/jobs/${id}`);
    onProgress(status);
    if (status.state !== "running") return status;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function showError(box, message) {
  box.hidden = !message;
  box.textContent = message || "";
}

// ---------------------------------------------------------------- tabs

function selectTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  $("panel-context").hidden = name !== "context";
  $("panel-circuit").hidden = name !== "circuit";
}

// ---------------------------------------------------------------- context tab

const ctx = { job: null, result: null, selected: null };

function fillOptions(select, values, chosen) {
  select.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
  if (chosen !== undefined) select.value = chosen;
}

function presetsFor(model) {
  return info.presets.filter((p) => p.model === model);
}

function refreshPresets() {
  const select = $("ctx-preset");
  const list = presetsFor($("ctx-model").value);
  select.replaceChildren(el("option", { value: "" }, "(none)"), ...list.map((p) => el("option", { value: p.id }, p.label)));
}

function applyPreset(id) {
  const preset = info.presets.find((p) => p.id === id);
  if (!preset) return;
  const form = $("ctx-form");
  for (const field of form.elements) {
    if (!field.name || field.name === "model") continue;
    const v = preset.params[field.name];
    if (field.type === "checkbox") field.checked = v === true;
    else field.value = v === undefined || v === null ? "" : String(v);
  }
}

function contextParams() {
  const params = { model: $("ctx-model").value };
  for (const field of $("ctx-form").elements) {
    if (!field.name || field.name === "model") continue;
    if (field.type === "checkbox") { if (field.checked) params[field.name] = true; continue; }
    if (field.value === "") continue;
    params[field.name] = field.type === "number" ? Number(field.value) : field.value;
  }
  return params;
}

function setRunning(prefix, running) {
  $(`${prefix}-run`).disabled = running;
  $(`${prefix}-cancel`).disabled = !running;
}

async function runContext(event) {
  event.preventDefault();
  showError($("ctx-error"), "");
  setRunning("ctx", true);
  $("ctx-status").textContent = "starting…";
  try {
    const { job } = await api("/api/context", contextParams());
    ctx.job = job;
    const status = await waitJob(job, (s) => {
      $("ctx-status").textContent = s.state === "running" ? `${s.stage}… ${(s.elapsed_ms / 1000).toFixed(1)} s` : "";
    });
    if (status.state === "done") renderContext(status);
    else if (status.state === "cancelled") $("ctx-status").textContent = "cancelled";
    else showError($("ctx-error"), status.error);
  } catch (e) {
    showError($("ctx-error"), e.message);
    $("ctx-status").textContent = "";
  } finally {
    setRunning("ctx", false);
  }
}

// Background colour for a score relative to the largest magnitude.
function heat(score, max, rgb) {
  const a = max > 0 ? Math.min(1, Math.abs(score) / max) : 0;
  return `rgba(${rgb}, ${(0.12 + 0.78 * a).toFixed(3)})`;
}

function renderContext(status) {
  const r = status.result;
  const out = r.attribution;
  ctx.result = out;
  ctx.selected = null;
  $("ctx-result").hidden = false;
  $("ctx-status").textContent = `done in ${(status.elapsed_ms / 1000).toFixed(2)} s`;
  $("ctx-time").textContent = `${out.cci_scores.length} context-sensitive of ${out.output_current_tokens.length} tokens · CTI threshold ${out.cti_threshold.toFixed(4)}`;
  const maxCti = Math.max(...out.cci_scores.map((c) => Math.abs(c.cti_score)), 0);
  const output = $("ctx-output");
  output.replaceChildren();
  out.output_current_tokens.forEach((tok, j) => {
    const cci = out.cci_scores.find((c) => c.cti_idx === j);
    const span = el("span", { class: "tok", "data-idx": String(j), title: `CTI ${out.cti_scores[j].toFixed(4)}` }, tok);
    if (cci) {
      span.classList.add("sensitive");
      span.style.background = heat(cci.cti_score, maxCti, "214, 39, 40");
      span.addEventListener("mouseenter", () => showCues(j));
      span.addEventListener("click", () => { ctx.selected = ctx.selected === j ? null : j; showCues(j); });
      span.addEventListener("mouseleave", () => { if (ctx.selected !== null) showCues(ctx.selected); });
    }
    output.appendChild(span);
  });
  $("ctx-download").href = `/api/jobs/${status.id}/files/result.json`;
  $("ctx-export-cli").textContent = r.command;
  $("ctx-export-rust").textContent = r.rust;
  $("ctx-export-inseq").textContent = r.inseq_command;
  $("ctx-export-inseq-python").textContent = r.inseq_python;
  $("ctx-export-inseq-notes").replaceChildren(...r.inseq_notes.map((n) => el("li", {}, n)));
  const first = out.cci_scores[0];
  if (first) { ctx.selected = first.cti_idx; showCues(first.cti_idx); } else showCues(null);
}

function showCues(j) {
  const out = ctx.result;
  const cci = j === null ? null : out.cci_scores.find((c) => c.cti_idx === j);
  for (const span of $("ctx-output").children) span.classList.toggle("selected", Number(span.dataset.idx) === j);
  const box = $("ctx-context");
  box.replaceChildren();
  const scores = cci ? cci.input_context_scores : [];
  const max = Math.max(...scores.map(Math.abs), 0);
  out.input_context_tokens.forEach((tok, i) => {
    const span = el("span", { class: "tok ctx-tok", "data-idx": String(i) }, tok);
    if (cci) {
      span.title = `score ${scores[i].toFixed(4)}`;
      span.style.background = heat(scores[i], max, "26, 127, 55");
      if (cci.input_context_cues.includes(i)) span.classList.add("cue");
    }
    box.appendChild(span);
  });
  // Output-context cues (an output context was given, e.g. the previous translation).
  const outBox = $("ctx-output-context");
  outBox.replaceChildren();
  $("ctx-output-context-box").hidden = !out.output_context_tokens;
  const outScores = cci && cci.output_context_scores ? cci.output_context_scores : [];
  const outMax = Math.max(...outScores.map(Math.abs), 0);
  (out.output_context_tokens || []).forEach((tok, i) => {
    const span = el("span", { class: "tok ctx-tok", "data-idx": String(i) }, tok);
    if (cci && outScores.length) {
      span.title = `score ${outScores[i].toFixed(4)}`;
      span.style.background = heat(outScores[i], outMax, "26, 127, 55");
      if (cci.output_context_cues.includes(i)) span.classList.add("cue");
    }
    outBox.appendChild(span);
  });
  const detail = $("ctx-detail");
  detail.replaceChildren();
  if (!cci) {
    detail.appendChild(el("p", { class: "hint" }, "No token of the answer passed the CTI threshold."));
    return;
  }
  detail.appendChild(el("p", {}, `Token ${JSON.stringify(cci.cti_token)} (CTI ${cci.cti_score.toFixed(4)}); without the context the model would say ${JSON.stringify(cci.contrast_token)}. ${out.info.attributed_fn} = ${cci.target_value.toFixed(4)}; cue threshold ${cci.cci_threshold.toFixed(4)}.`));
  const table = el("table", { id: "ctx-cues" });
  table.appendChild(el("tr")).append(el("th", {}, "cue"), el("th", {}, "position"), el("th", {}, "score"));
  for (const i of cci.input_context_cues) {
    table.appendChild(el("tr")).append(el("td", {}, JSON.stringify(out.input_context_tokens[i])), el("td", {}, String(i)), el("td", {}, scores[i].toFixed(4)));
  }
  for (const i of cci.output_context_cues || []) {
    table.appendChild(el("tr")).append(el("td", {}, JSON.stringify(out.output_context_tokens[i])), el("td", {}, `output ${i}`), el("td", {}, outScores[i].toFixed(4)));
  }
  detail.appendChild(table);
}

// ---------------------------------------------------------------- circuit tab

const circ = { result: null };

function circuitParams() {
  const params = {};
  for (const field of $("circ-form").elements) {
    if (!field.name || field.value === "") continue;
    params[field.name] = field.type === "number" ? Number(field.value) : field.value;
  }
  return params;
}

async function runCircuit(event) {
  event.preventDefault();
  showError($("circ-error"), "");
  setRunning("circ", true);
  const bar = $("circ-progress");
  bar.hidden = false;
  bar.value = 0;
  try {
    const { job } = await api("/api/circuit", circuitParams());
    circ.job = job;
    const status = await waitJob(job, (s) => {
      if (s.total > 0) { bar.max = s.total; bar.value = s.done; } else bar.removeAttribute("value");
      $("circ-status").textContent = s.state === "running" ? `${s.stage}${s.total ? ` ${s.done}/${s.total}` : ""}… ${(s.elapsed_ms / 1000).toFixed(1)} s` : "";
    });
    if (status.state === "done") renderCircuit(status);
    else if (status.state === "cancelled") $("circ-status").textContent = "cancelled";
    else showError($("circ-error"), status.error);
  } catch (e) {
    showError($("circ-error"), e.message);
    $("circ-status").textContent = "";
  } finally {
    bar.hidden = true;
    setRunning("circ", false);
  }
}

function renderCircuit(status) {
  const r = status.result;
  circ.result = r;
  $("circ-result").hidden = false;
  $("circ-status").textContent = `done in ${(status.elapsed_ms / 1000).toFixed(1)} s (scoring ${r.scoring_seconds.toFixed(1)} s)`;
  $("circ-time").textContent = `${r.n_edges} edges · ${r.examples} examples · ${r.method} · CPR ${r.curve.cpr.toFixed(3)} · CMD ${r.curve.cmd.toFixed(3)}`;
  $("circ-download").href = `/api/jobs/${status.id}/files/graph.json`;
  $("circ-export-cli").textContent = r.command;
  const slider = $("circ-slider");
  slider.max = String(r.curve.points.length - 1);
  // Start at the smallest circuit that reaches 0.8, else the largest drawable one.
  let start = r.curve.points.findIndex((p, i) => p.faithfulness >= 0.8 && r.graph.circuits[i] !== null);
  if (start < 0) start = Math.max(0, r.graph.circuits.filter((c) => c !== null).length - 1);
  slider.value = String(start);
  showSize();
}

function showSize() {
  const r = circ.result;
  const i = Number($("circ-slider").value);
  const p = r.curve.points[i];
  $("circ-size-label").textContent = `${p.edges} edges (${(100 * p.fraction).toFixed(2)} %, top ${p.requested_edges} before pruning) · faithfulness ${p.faithfulness.toFixed(3)}`;
  drawCurve(r.curve, i);
  drawGraph(r, i);
}

function drawCurve(curve, selected) {
  const [w, h, left, right, top, bottom] = [460, 300, 48, 14, 14, 40];
  const svg = el("svg:svg", { viewBox: `0 0 ${w} ${h}`, id: "curve-svg" });
  // Circuits pruned to no edge have no place on a log axis: they are drawn apart, left of a
  // dashed break, and not joined to the measured line (as the CLI's pictures do).
  const fr = curve.points.map((p) => p.fraction).filter((f) => f > 0);
  const hasEmpty = curve.points.some((p) => !(p.fraction > 0));
  const axis0 = hasEmpty ? left + 56 : left;
  const lo = Math.floor(Math.log10(Math.min(...fr, 1))), hi = Math.max(0, Math.ceil(Math.log10(Math.max(...fr, 1e-6))));
  const ys = curve.points.map((p) => p.faithfulness);
  const y0 = Math.min(0, ...ys), y1 = Math.max(1.05, ...ys);
  const x = (f) => f > 0 ? axis0 + (Math.log10(Math.max(f, 10 ** lo)) - lo) / Math.max(hi - lo, 1) * (w - axis0 - right) : left + 18;
  const y = (v) => top + (y1 - v) / (y1 - y0) * (h - top - bottom);
  for (let e = lo; e <= hi; e++) {
    svg.appendChild(el("svg:line", { x1: x(10 ** e), x2: x(10 ** e), y1: top, y2: h - bottom, stroke: "#eee" }));
    svg.appendChild(el("svg:text", { x: x(10 ** e), y: h - bottom + 14, "text-anchor": "middle", "font-size": 10 }, `${+(100 * 10 ** e).toPrecision(3)} %`));
  }
  if (hasEmpty) {
    svg.appendChild(el("svg:line", { x1: left + 38, x2: left + 38, y1: top, y2: h - bottom, stroke: "#999", "stroke-dasharray": "3 3" }));
    svg.appendChild(el("svg:text", { x: x(0), y: h - bottom + 14, "text-anchor": "middle", "font-size": 10 }, "empty"));
  }
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(el("svg:line", { x1: left, x2: w - right, y1: y(v), y2: y(v), stroke: v === 1 ? "#bbb" : "#eee", "stroke-dasharray": v === 1 ? "5 3" : "none" }));
    svg.appendChild(el("svg:text", { x: left - 5, y: y(v) + 3, "text-anchor": "end", "font-size": 10 }, v.toFixed(2)));
  }
  svg.appendChild(el("svg:text", { x: (left + w - right) / 2, y: h - 6, "text-anchor": "middle", "font-size": 11 }, "circuit size (% of edges, log scale)"));
  svg.appendChild(el("svg:text", { x: 12, y: (top + h - bottom) / 2, "text-anchor": "middle", "font-size": 11, transform: `rotate(-90 12 ${(top + h - bottom) / 2})` }, "normalized faithfulness"));
  const pts = curve.points.filter((p) => p.fraction > 0).map((p) => `${x(p.fraction).toFixed(1)},${y(p.faithfulness).toFixed(1)}`).join(" ");
  svg.appendChild(el("svg:polyline", { points: pts, fill: "none", stroke: "#2457c5", "stroke-width": 2, class: "curve-line" }));
  curve.points.forEach((p, i) => {
    const dot = el("svg:circle", { cx: x(p.fraction), cy: y(p.faithfulness), r: i === selected ? 5 : 2.5, fill: i === selected ? "#d62728" : "#2457c5" });
    dot.appendChild(el("svg:title", {}, `${p.edges} edges: faithfulness ${p.faithfulness.toFixed(3)}`));
    dot.addEventListener("click", () => { $("circ-slider").value = String(i); showSize(); });
    svg.appendChild(dot);
  });
  // Legend (inside the figure, so that an exported picture keeps it), lower right.
  const legend = el("svg:g", { class: "legend", "font-size": 10 });
  const lx = w - right - 184, ly = h - bottom - 52;
  legend.appendChild(el("svg:rect", { x: lx - 6, y: ly - 10, width: 184, height: 50, fill: "#fff", stroke: "#ddd" }));
  legend.appendChild(el("svg:line", { x1: lx, x2: lx + 18, y1: ly, y2: ly, stroke: "#2457c5", "stroke-width": 2 }));
  legend.appendChild(el("svg:text", { x: lx + 24, y: ly + 3 }, "circuit at each size"));
  legend.appendChild(el("svg:circle", { cx: lx + 9, cy: ly + 14, r: 4, fill: "#d62728" }));
  legend.appendChild(el("svg:text", { x: lx + 24, y: ly + 17 }, "size shown in the graph"));
  legend.appendChild(el("svg:line", { x1: lx, x2: lx + 18, y1: ly + 28, y2: ly + 28, stroke: "#bbb", "stroke-dasharray": "5 3" }));
  legend.appendChild(el("svg:text", { x: lx + 24, y: ly + 31 }, "full model (1)"));
  svg.appendChild(legend);
  $("circ-curve").replaceChildren(svg);
}

// Node name of an edge end: `a1.h0<q>` → `a1.h0`.
const nodeOf = (end) => end.replace(/<[qkv]>$/, "");

function drawGraph(r, sizeIndex) {
  const g = r.graph;
  const L = r.n_layers, H = r.n_heads;
  let edgeIdx = g.circuits[sizeIndex];
  let note = "";
  if (edgeIdx === null) {
    edgeIdx = g.edges.map((_, i) => i);
    note = `circuit too large to draw; showing the top ${g.edges.length} edges`;
  }
  // Rows from the bottom: input, then per layer the heads and the MLP, then logits.
  const row = (name) => {
    if (name === "input") return 0;
    if (name === "logits") return 2 * L + 1;
    const m = /^([am])(\d+)/.exec(name);
    return m ? 1 + 2 * Number(m[2]) + (m[1] === "m" ? 1 : 0) : 0;
  };
  const rows = 2 * L + 2;
  const legendH = 40;
  const w = 560, rowH = Math.max(22, Math.min(60, 560 / rows)), h = rows * rowH + 20 + legendH;
  const pos = {};
  for (const n of g.nodes) {
    const hm = /^a\d+\.h(\d+)$/.exec(n.name);
    const xPos = hm ? 40 + (Number(hm[1]) + 0.5) * (w - 80) / H : w / 2;
    pos[n.name] = [xPos, h - 10 - (row(n.name) + 0.5) * rowH];
  }
  const svg = el("svg:svg", { viewBox: `0 0 ${w} ${h}`, id: "graph-svg" });
  const used = new Set();
  const maxS = Math.max(...edgeIdx.map((i) => Math.abs(g.edges[i].score)), 1e-12);
  const edgeLayer = el("svg:g", { class: "edges" });
  for (const i of edgeIdx) {
    const e = g.edges[i];
    const [src, dstEnd] = e.name.split("->");
    const dst = nodeOf(dstEnd);
    if (!pos[src] || !pos[dst]) continue;
    used.add(src); used.add(dst);
    const [x1, y1] = pos[src], [x2, y2] = pos[dst];
    const bend = (x2 - x1) * 0.15 + (Math.abs(x2 - x1) < 1 ? 30 : 0);
    const path = el("svg:path", {
      d: `M${x1.toFixed(1)},${y1.toFixed(1)} Q${((x1 + x2) / 2 + bend).toFixed(1)},${((y1 + y2) / 2).toFixed(1)} ${x2.toFixed(1)},${y2.toFixed(1)}`,
      fill: "none", class: "edge", stroke: e.score >= 0 ? "#2457c5" : "#d62728", "stroke-opacity": 0.65,
      "stroke-width": (0.6 + 5 * Math.abs(e.score) / maxS).toFixed(2),
    });
    const label = `${e.name}  score ${e.score.toPrecision(4)}`;
    path.appendChild(el("svg:title", {}, label));
    path.addEventListener("mouseenter", () => { $("circ-hover").textContent = label; });
    edgeLayer.appendChild(path);
  }
  svg.appendChild(edgeLayer);
  for (const n of g.nodes) {
    const [cx, cy] = pos[n.name];
    const active = used.has(n.name);
    const isHead = n.name.startsWith("a");
    const shape = isHead
      ? el("svg:circle", { cx, cy, r: active ? 6 : 3.5 })
      : el("svg:rect", { x: cx - (n.name.startsWith("m") ? 16 : 24), y: cy - 7, width: n.name.startsWith("m") ? 32 : 48, height: 14, rx: 3 });
    shape.setAttribute("class", active ? "node active" : "node");
    shape.setAttribute("fill", active ? (isHead ? "#f59e0b" : "#6b7280") : "#e5e7eb");
    shape.appendChild(el("svg:title", {}, n.name));
    shape.addEventListener("mouseenter", () => { $("circ-hover").textContent = `node ${n.name}`; });
    svg.appendChild(shape);
    if (!isHead) svg.appendChild(el("svg:text", { x: cx, y: cy + 4, "text-anchor": "middle", "font-size": 9, fill: active ? "#fff" : "#555", "pointer-events": "none" }, n.name));
  }
  for (let l = 0; l < L; l++) {
    svg.appendChild(el("svg:text", { x: 4, y: h - 10 - (1 + 2 * l + 0.5) * rowH + 3, "font-size": 9, fill: "#888" }, `L${l}`));
  }
  if (note) svg.appendChild(el("svg:text", { x: w / 2, y: legendH + 12, "text-anchor": "middle", "font-size": 10, fill: "#a00" }, note));
  svg.appendChild(graphLegend(maxS));
  $("circ-graph").replaceChildren(svg);
}

// The circuit picture's legend, a band across the top: colour is the score's sign, width its
// magnitude; heads are circles, other nodes boxes.
function graphLegend(maxScore) {
  const g = el("svg:g", { class: "legend", "font-size": 10 });
  const item = (x, y, mark, text) => { g.appendChild(mark); g.appendChild(el("svg:text", { x: x + 24, y: y + 3 }, text)); };
  item(8, 10, el("svg:line", { x1: 8, x2: 26, y1: 10, y2: 10, stroke: "#2457c5", "stroke-width": 2 }), "positive score");
  item(140, 10, el("svg:line", { x1: 140, x2: 158, y1: 10, y2: 10, stroke: "#d62728", "stroke-width": 2 }), "negative score");
  item(280, 10, el("svg:line", { x1: 280, x2: 298, y1: 10, y2: 10, stroke: "#555", "stroke-width": 5.6 }), `width ∝ |score| (widest ${maxScore.toPrecision(3)})`);
  item(8, 28, el("svg:circle", { cx: 17, cy: 28, r: 6, fill: "#f59e0b" }), "attention head");
  item(140, 28, el("svg:rect", { x: 140, y: 21, width: 18, height: 14, rx: 3, fill: "#6b7280" }), "MLP, input or logits");
  item(280, 28, el("svg:circle", { cx: 289, cy: 28, r: 3.5, fill: "#e5e7eb" }), "not in the circuit");
  return g;
}

// ---------------------------------------------------------------- figure export

// A figure as a standalone SVG document: its own size, a white background and fonts named,
// so that it opens alike in a browser, Inkscape or a LaTeX toolchain.
function svgDocument(svg) {
  const copy = svg.cloneNode(true);
  const [, , w, h] = svg.getAttribute("viewBox").split(/\s+/).map(Number);
  copy.setAttribute("xmlns", SVG_NS);
  copy.setAttribute("width", String(w));
  copy.setAttribute("height", String(h));
  copy.setAttribute("font-family", "DejaVu Sans, Helvetica, Arial, sans-serif");
  copy.insertBefore(el("svg:rect", { x: 0, y: 0, width: w, height: h, fill: "#fff" }), copy.firstChild);
  return { text: '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(copy), w, h };
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// PNG pixels per SVG unit: 3 gives about 300 dpi for a figure printed at its on-screen size.
const PNG_SCALE = 3;

async function saveFigure(id, name, format) {
  const svg = $(id);
  if (!svg) return;
  const doc = svgDocument(svg);
  if (format === "svg") { saveBlob(new Blob([doc.text], { type: "image/svg+xml" }), `${name}.svg`); return; }
  const url = URL.createObjectURL(new Blob([doc.text], { type: "image/svg+xml" }));
  try {
    const img = new Image();
    await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = () => reject(new Error("the browser could not draw the SVG")); img.src = url; });
    const canvas = el("canvas", { width: String(doc.w * PNG_SCALE), height: String(doc.h * PNG_SCALE) });
    const c2d = canvas.getContext("2d");
    c2d.scale(PNG_SCALE, PNG_SCALE);
    c2d.drawImage(img, 0, 0, doc.w, doc.h);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    saveBlob(blob, `${name}.png`);
  } finally {
    URL.revokeObjectURL(url);
  }
}

// ---------------------------------------------------------------- start

async function cancel(which) {
  const job = which === "ctx" ? ctx.job : circ.job;
  if (job) await api(`/api/jobs/${job}/cancel`, {}).catch(() => {});
}

async function init() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  info = await api("/api/info");
  const names = info.models.map((m) => m.name);
  $("server-info").textContent = `${names.join(", ")} on ${info.device}`;
  fillOptions($("ctx-model"), names);
  // Circuits need a decoder-only model.
  fillOptions($("circ-model"), info.models.filter((m) => m.kind !== "encoder-decoder").map((m) => m.name));
  fillOptions($("circ-task"), info.tasks, "ioi");
  fillOptions($("circ-method"), info.circuit_methods, "eap-ig-inputs");
  refreshPresets();
  $("ctx-model").addEventListener("change", refreshPresets);
  $("ctx-preset").addEventListener("change", (e) => applyPreset(e.target.value));
  const first = presetsFor(names[0])[0];
  if (first) { $("ctx-preset").value = first.id; applyPreset(first.id); }
  $("ctx-form").addEventListener("submit", runContext);
  $("circ-form").addEventListener("submit", runCircuit);
  $("ctx-cancel").addEventListener("click", () => cancel("ctx"));
  $("circ-cancel").addEventListener("click", () => cancel("circ"));
  $("circ-slider").addEventListener("input", showSize);
  for (const [button, id, name, format] of [
    ["curve-save-svg", "curve-svg", "faithfulness-curve", "svg"], ["curve-save-png", "curve-svg", "faithfulness-curve", "png"],
    ["graph-save-svg", "graph-svg", "circuit", "svg"], ["graph-save-png", "graph-svg", "circuit", "png"],
  ]) $(button).addEventListener("click", () => saveFigure(id, name, format).catch((e) => showError($("circ-error"), e.message)));
  document.body.dataset.ready = "true";
}

init().catch((e) => showError($("ctx-error"), `cannot reach the server: ${e.message}`));
