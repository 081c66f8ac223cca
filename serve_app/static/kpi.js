// The KPI dashboard: every value comes from GET /api/kpi (serve_app/routes/dashboard.py).
// Each KPI card keeps the value it shows in data-value (JSON), so a test can compare the page with the API.
"use strict";

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Integers as they are, other numbers with 3 decimals, anything else as text.
function fmt(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (value === null || value === undefined) return "–";
  return String(value);
}

function card(key, label, value) {
  return el("div", {class: "kpi-card", "data-kpi": key, "data-value": JSON.stringify(value === undefined ? null : value)},
            el("div", {class: "kpi-value", text: fmt(value)}), el("div", {class: "kpi-label", text: label}));
}

// The training KPIs shown as cards: [key in the payload (dot path), label].
const TRAINING = [
  ["kpi.json_to_image.full.top5", "JSON → image top-5 (full gallery)"],
  ["kpi.json_to_image.full.mrr", "JSON → image MRR"],
  ["kpi.image_to_json.full.top5", "image → JSON top-5"],
  ["kpi.chance_top5_full", "chance top-5"],
  ["kpi.best_epoch", "best epoch"],
  ["kpi.n_validation", "validation items"],
  ["kpi.train_seconds", "training seconds"],
  ["kpi.image_encoder_pretrained", "image encoder weights"],
];
const SERVING = [
  ["serving.requests", "requests"], ["serving.error_rate", "error rate"],
  ["serving.latency_ms.p50", "latency p50 (ms)"], ["serving.latency_ms.p99", "latency p99 (ms)"],
  ["serving.ingress_replicas", "ingress replicas"], ["serving.catalog.items", "catalog items"],
];

function pick(payload, path) {
  return path.split(".").reduce((value, key) => (value === null || value === undefined ? undefined : value[key]), payload);
}

function curves(history) {
  const box = $("#curves");
  box.replaceChildren();
  if (!history.length) { box.append(el("p", {class: "muted", text: "no training history in the run"})); return; }
  const series = [["train_loss", "#c0392b"], ["val_loss", "#e67e22"], ["val_top5", "#2471a3"], ["val_mrr", "#27ae60"]]
    .filter(([key]) => history.some((h) => typeof h[key] === "number"));
  const width = 640, height = 220, pad = 30;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "curve");
  for (const [key, color] of series) {
    const values = history.map((h) => h[key]).filter((v) => typeof v === "number");
    const low = Math.min(...values), high = Math.max(...values), span = high - low || 1;
    const points = history.filter((h) => typeof h[key] === "number").map((h, n, all) => {
      const x = pad + (all.length > 1 ? n / (all.length - 1) : 0.5) * (width - 2 * pad);
      const y = height - pad - ((h[key] - low) / span) * (height - 2 * pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("data-series", key);
    svg.append(line);
  }
  box.append(svg, el("p", {class: "muted", text: series.map(([key, color]) => `${key} (${color})`).join(" · ") +
                                                  ` — ${history.length} epochs, each series scaled to its own range; ` +
                                                  `val_* are the selection items that chose the best epoch, not the held-out items of the cards`}));
}

function imageGrid(hits) {
  return el("div", {class: "grid"}, ...hits.map((hit) => el("figure", {class: "thumb", "data-item-id": hit.item_id},
    el("img", {src: hit.image_url, alt: hit.item_id, loading: "lazy"}),
    el("figcaption", {text: `#${hit.rank} ${fmt(hit.score)}`}))));
}

function render(payload) {
  const model = payload.model || {};
  $("#model-info").textContent = `JSON encoder ${model.json_encoder_run} · embed ${model.embed_run} · image encoder ` +
    `${model.image_encoder} (pretrained: ${model.image_encoder_pretrained})`;
  $("#kpi-cards").replaceChildren(...TRAINING.map(([key, label]) => card(key, label, pick(payload, key))));
  curves(payload.loss_curve || []);
  $("#top-k").replaceChildren(...(payload.top_k_images || []).map((entry) => el("div", {class: "query"},
    el("div", {class: "muted", text: JSON.stringify(entry.query)}), imageGrid(entry.hits))));
  const augmented = payload.augmented_samples || {};
  $("#augment-note").textContent = augmented.note || "";
  $("#augmented").replaceChildren(...(augmented.samples || []).map((sample) => el("div", {class: "grid"},
    el("figure", {class: "thumb"}, el("img", {src: sample.original, alt: sample.item_id}),
       el("figcaption", {text: `${sample.item_id} (original)`})),
    ...sample.views.map((src, n) => el("figure", {class: "thumb"}, el("img", {src, alt: `view ${n + 1}`}),
                                        el("figcaption", {text: `view ${n + 1}`}))))));
  $("#hyperparams").textContent = JSON.stringify(payload.hyperparams || {}, null, 2);
  renderServing(payload);
}

function renderServing(payload) {
  $("#serving-cards").replaceChildren(...SERVING.map(([key, label]) => card(key, label, pick(payload, key))));
}

async function load() {
  const response = await fetch("/api/kpi", {headers: {Accept: "application/json"}});
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${body.error}: ${body.detail}`);
  return body;
}

async function refresh() {
  try {
    renderServing(await load());
    $("#error").hidden = true;
  } catch (err) {
    $("#error").textContent = `live KPIs: ${err.message}`;
    $("#error").hidden = false;
  }
}

async function start() {
  try {
    render(await load());
    document.body.dataset.ready = "true";
  } catch (err) {
    $("#error").textContent = err.message;
    $("#error").hidden = false;
    document.body.dataset.ready = "error";
  }
  if (!new URLSearchParams(location.search).has("static")) setInterval(refresh, 5000);
}

start();
