// FashionRec web page: vanilla JS over the JSON API (serve_app/api.py). No build step, no dependencies.
"use strict";

const $ = (selector) => document.querySelector(selector);
let attributeSpec = null;  // GET /api/attributes
let requestSerial = 0;     // answers to superseded requests are dropped

class ApiError extends Error {
  constructor(status, body) {
    const code = body && body.error ? body.error : "http_error";
    const detail = body && body.detail ? body.detail : (typeof body === "string" ? body : "no detail");
    super(`${status} ${code}: ${detail}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {headers: {Accept: "application/json"}, ...options});
  } catch (err) {
    throw new Error(`the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON: keep the text */ }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// -- page state: error box, status line, busy buttons -----------------------------------------
function showError(err) {
  const box = $("#error");
  box.replaceChildren(el("strong", {text: "Error "}), document.createTextNode(err.message));
  const problems = err.body && Array.isArray(err.body.problems) ? err.body.problems : [];
  if (problems.length > 1) {
    box.append(el("ul", {}, problems.map((p) => el("li", {text: `${p.field || "body"}: ${p.problem}`}))));
  }
  box.hidden = false;
  box.scrollIntoView({block: "nearest"});
}

function clearError() {
  $("#error").hidden = true;
  $("#error").replaceChildren();
}

function setState(state, message) {
  document.body.dataset.state = state;  // idle | loading | done | error (the e2e test waits on it)
  if (message !== undefined) $("#status").textContent = message;
}

async function run(title, call, queryImage = null) {
  const serial = ++requestSerial;
  clearError();
  setState("loading", `${title}: waiting for the server…`);
  document.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const body = await call();
    if (serial !== requestSerial) return;
    render(title, body, queryImage);
    setState("done");
  } catch (err) {
    if (serial !== requestSerial) return;
    render(title, null, queryImage);
    showError(err);
    setState("error", `${title}: the request was refused (see the message above).`);
  } finally {
    if (serial === requestSerial) document.querySelectorAll("button").forEach((b) => { b.disabled = false; });
  }
}

// -- results ------------------------------------------------------------------------------------
function hitsOf(body) {
  const list = (body && (body.results || body.hits || body.recommendations || body.items)) || [];
  return list.map((hit, n) => {
    const item = hit.item || hit;
    const id = item.item_id ?? hit.item_id;
    return {rank: hit.rank ?? n + 1, score: hit.score, mmrScore: hit.mmr_score, sources: hit.sources, item,
            id, image: item.image_url || `/images/${encodeURIComponent(id)}`};
  });
}

function fmt(value, digits = 4) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function card(hit) {
  const item = hit.item;
  const tags = [item.category, ...(item.styles || [])].filter(Boolean).join(" · ");
  const image = el("img", {src: hit.image, alt: item.title || hit.id, loading: "lazy"});
  image.addEventListener("error", () => { image.replaceWith(el("div", {class: "no-image", text: "no image"})); });
  const similar = el("button", {type: "button", class: "similar-link", text: "More like this"});
  similar.addEventListener("click", () => {
    $("#similar-id").value = hit.id;
    searchSimilar(hit.id);
  });
  let scoreTitle = hit.mmrScore !== undefined && hit.mmrScore !== null
    ? `score ${fmt(hit.score, 6)}; picked by the reranker with ${fmt(hit.mmrScore, 6)}` : "score";
  if (hit.sources) {
    scoreTitle += "; candidate sources: " +
      Object.entries(hit.sources).map(([name, value]) => `${name.replace(/^score_/, "")} ${fmt(value)}`).join(", ");
  }
  return el("article", {class: "card", "data-item-id": hit.id, "data-rank": hit.rank, "data-score": hit.score},
    el("div", {class: "thumb"}, image),
    el("div", {class: "card-body"},
      el("div", {class: "card-line"},
        el("span", {class: "rank", text: `#${hit.rank}`}),
        el("span", {class: "score", title: scoreTitle, text: `score ${fmt(hit.score)}`})),
      el("div", {class: "item-id", title: hit.id, text: hit.id}),
      item.title ? el("div", {class: "item-title", text: item.title}) : null,
      tags ? el("div", {class: "tags", text: tags}) : null,
      item.new ? el("span", {class: "badge", text: "new"}) : null,
      similar));
}

function render(title, body, queryImage) {
  $("#results-title").textContent = title;
  const hits = hitsOf(body);
  $("#results").replaceChildren(...hits.map(card));
  const image = $("#query-image");
  if (queryImage) { image.src = queryImage; image.hidden = false; } else { image.hidden = true; image.removeAttribute("src"); }
  if (!body) {
    $("#results-meta").textContent = "";
    $("#results-note").hidden = true;
    return;
  }
  const took = typeof body.took_ms === "number" ? ` in ${body.took_ms.toFixed(0)} ms` : "";
  $("#status").textContent = `${hits.length} result${hits.length === 1 ? "" : "s"}${took}` +
    (body.scope ? ` (scope: ${body.scope})` : "");
  const meta = [];
  if (body.model) {
    if (body.model.image_encoder_pretrained) meta.push(`image encoder pretrained: ${body.model.image_encoder_pretrained}`);
    if (body.model.json_encoder_run) meta.push(`JSON encoder run ${body.model.json_encoder_run}`);
    if (body.model.embed_run) meta.push(`embed run ${body.model.embed_run}`);
  }
  if (body.reranker && body.reranker.name) {
    const lambda = typeof body.reranker.lambda === "number" ? ` λ=${body.reranker.lambda}` : "";
    meta.push(`order: reranker ${body.reranker.name}${lambda}${body.reranker.fallback ? " (fallback)" : ""}`);
  }
  if (body.user) {
    const history = Array.isArray(body.user.history) ? body.user.history.length : 0;
    const profile = Object.entries(body.user.profile || {}).map(([key, value]) => `${key} ${value}`).join(", ");
    meta.push(`user ${body.user.user_id || "(from request)"}: ${history} past item${history === 1 ? "" : "s"}` +
              (profile ? `, ${profile}` : "") + (body.user.context ? `, context “${body.user.context}”` : ""));
  }
  if (typeof body.candidates === "number") meta.push(`${body.candidates} candidates`);
  if (body.query && body.query.type === "image" && body.query.width) {
    meta.push(`photo ${body.query.width}×${body.query.height}`);
  }
  $("#results-meta").textContent = meta.join(" · ");
  const notes = [];
  if (body.note) notes.push(body.note);
  const unknown = body.unknown_values || {};
  for (const [field, values] of Object.entries(unknown)) {
    if (values && values.length) notes.push(`${field}: ${values.join(", ")} not known to the model (read as UNKNOWN)`);
  }
  $("#results-note").textContent = notes.join(" · ");
  $("#results-note").hidden = notes.length === 0;
}

// -- the attribute form -------------------------------------------------------------------------
function buildAttributeForm(spec) {
  const finite = spec.finite_fields || {};
  const multi = new Set(spec.multi_valued || []);
  const box = $("#attribute-fields");
  box.replaceChildren();
  for (const field of spec.fields || []) {
    let input;
    const name = `attr-${field}`;
    if (finite[field]) {
      input = el("select", {id: name, name, "data-field": field, multiple: multi.has(field),
                            size: multi.has(field) ? Math.min(4, finite[field].length) : null});
      if (!multi.has(field)) input.append(el("option", {value: "", text: "(any)"}));
      for (const value of finite[field]) input.append(el("option", {value, text: value}));
    } else {
      input = el("input", {id: name, name, type: "text", "data-field": field,
                           placeholder: multi.has(field) ? "values, comma-separated" : "any value"});
    }
    box.append(el("label", {class: multi.has(field) ? "field multi" : "field"},
      el("span", {text: field + (multi.has(field) ? " (several)" : "")}), input));
  }
  if (!(spec.fields || []).length) box.replaceChildren(el("p", {class: "muted", text: "the model reads no attribute fields"}));
}

function collectAttributes() {
  const attributes = {};
  const multi = new Set((attributeSpec && attributeSpec.multi_valued) || []);
  document.querySelectorAll("#attribute-fields [data-field]").forEach((input) => {
    const field = input.dataset.field;
    let values;
    if (input.tagName === "SELECT") values = Array.from(input.selectedOptions).map((o) => o.value).filter(Boolean);
    else values = input.value.split(",").map((v) => v.trim()).filter(Boolean);
    if (values.length) attributes[field] = multi.has(field) ? values : values[0];
  });
  return attributes;
}

function numberOrNull(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

async function loadAttributes() {
  try {
    attributeSpec = await api("/api/attributes");
    buildAttributeForm(attributeSpec);
    const v = attributeSpec.version || {};
    const parts = [];
    if (v.json_encoder_run) parts.push(`JSON encoder ${v.json_encoder_run}`);
    if (v.embed_run) parts.push(`embed ${v.embed_run}`);
    if (v.image_encoder_pretrained) parts.push(`image encoder pretrained: ${v.image_encoder_pretrained}`);
    $("#model-info").textContent = parts.join(" · ");
  } catch (err) {
    $("#attribute-fields").replaceChildren(el("p", {class: "muted", text: "attribute fields unavailable"}));
    $("#model-info").textContent = "";
    showError(err);
  }
}

// -- actions ------------------------------------------------------------------------------------
function searchAttributes(event) {
  event.preventDefault();
  const body = {attributes: collectAttributes(), k: numberOrNull($("#search-k")), scope: $("#search-scope").value};
  const text = $("#search-text").value.trim();
  if (text) body.text = text;
  if (!Object.keys(body.attributes).length) delete body.attributes;
  const mmr = numberOrNull($("#search-mmr"));
  if (mmr !== null) body.mmr_lambda = mmr;
  const what = [body.attributes ? JSON.stringify(body.attributes) : "", text ? `“${text}”` : ""].filter(Boolean);
  run(`Search ${what.join(" + ")}`.trim(), () => api("/api/search", {
    method: "POST", headers: {"Content-Type": "application/json", Accept: "application/json"},
    body: JSON.stringify(body)}));
}

function searchPhoto(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  const form = new FormData();
  if (file) form.append("file", file, file.name);
  const k = $("#upload-k").value.trim();
  if (k) form.append("k", k);
  form.append("scope", $("#upload-scope").value);
  const preview = file ? URL.createObjectURL(file) : null;
  run(file ? `Products like ${file.name}` : "Search by photo",
      () => api("/api/recommend/customer_input", {method: "POST", body: form}), preview);
}

function recommendForUser(event) {
  event.preventDefault();
  const user = $("#user-id").value.trim();
  const k = $("#user-k").value.trim();
  const query = k ? `?k=${encodeURIComponent(k)}` : "";
  run(`Recommendations for user ${user}`,
      () => api(`/api/recommend/user/${encodeURIComponent(user)}${query}`));
}

function searchSimilar(itemId) {
  const id = (itemId || "").trim();
  run(`Items similar to ${id}`, () => api(`/api/similar/${encodeURIComponent(id)}`));
}

document.addEventListener("DOMContentLoaded", () => {
  setState("idle");
  $("#search-form").addEventListener("submit", searchAttributes);
  $("#upload-form").addEventListener("submit", searchPhoto);
  $("#user-form").addEventListener("submit", recommendForUser);
  $("#similar-form").addEventListener("submit", (event) => { event.preventDefault(); searchSimilar($("#similar-id").value); });
  loadAttributes().then(() => { document.body.dataset.ready = "true"; });
});
