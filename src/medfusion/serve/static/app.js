// The medfusion page: search, triage and report forms over the service's JSON API.
// Every request carries the bearer token when the server requires one (kept for this tab only).
"use strict";

const TOKEN_KEY = "medfusion-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

const $ = (id) => document.getElementById(id);

function element(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(options)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function describeError(body, response) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return response.statusText || "request failed";
}

async function api(path, options = {}) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (error) { /* not JSON */ }
    if (response.status === 401) askToken("The server needs an access token.");
    throw new Error(`${response.status}: ${describeError(body, response)}`);
  }
  return response;
}

function askToken(message) {
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  $("token").focus();
}

function percent(value) {
  return `${(100 * value).toFixed(value < 0.1 ? 1 : 0)}%`;
}

async function busy(button, work) {
  button.disabled = true;
  try { await work(); } finally { button.disabled = false; }
}

// -- search ---------------------------------------------------------------------------------------

async function showThumbnail(img, url) {
  try {
    const blob = await (await api(url)).blob();
    img.src = URL.createObjectURL(blob);
    img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  } catch (error) {
    img.alt = `thumbnail unavailable (${error.message})`;
  }
}

// Metadata shown under a hit (when the index has them), then the findings flagged true.
const SHOWN_METADATA = ["view", "age", "sex", "study_date", "body_part"];

function metadataLine(metadata) {
  const parts = SHOWN_METADATA
    .filter((key) => metadata[key] !== undefined && metadata[key] !== null && metadata[key] !== "")
    .map((key) => `${key.replace(/_/g, " ")}: ${metadata[key]}`);
  const findings = Object.keys(metadata).filter((key) => metadata[key] === true);
  if (findings.length) parts.push(`findings: ${findings.join(", ").replace(/_/g, " ")}`);
  return parts.join(" · ");
}

function showHits(result, what) {
  const list = $("search-results");
  list.replaceChildren(...result.hits.map((hit) => {
    const img = element("img", { alt: `indexed image ${hit.id}`, width: 128, height: 128 });
    if (hit.thumbnail_url) showThumbnail(img, hit.thumbnail_url);
    return element("li", { class: "hit" }, [
      img,
      element("div", {}, [
        element("p", { class: "score", text: `#${hit.rank} · score ${hit.score.toFixed(3)}` }),
        element("p", { class: "id", text: hit.id }),
        element("p", { class: "meta", text: metadataLine(hit.metadata) }),
      ]),
    ]);
  }));
  $("search-summary").textContent =
    `${result.hits.length} result${result.hits.length === 1 ? "" : "s"} for ${what} in ${result.latency_ms.toFixed(0)} ms`;
}

async function search(event) {
  event.preventDefault();
  $("search-error").textContent = "";
  const query = new URLSearchParams({ q: $("search-text").value, k: $("search-k").value });
  if ($("search-where").value.trim()) query.set("where", $("search-where").value.trim());
  await busy(event.submitter || event.target.querySelector("button"), async () => {
    try {
      showHits(await (await api(`search?${query}`)).json(), "the text");
    } catch (error) {
      $("search-error").textContent = error.message;
    }
  });
}

async function searchImage(event) {
  event.preventDefault();
  $("search-error").textContent = "";
  const body = new FormData();
  body.append("image", $("search-image").files[0]);
  const query = new URLSearchParams({ k: $("search-k").value });
  if ($("search-where").value.trim()) query.set("where", $("search-where").value.trim());
  await busy(event.submitter || event.target.querySelector("button"), async () => {
    try {
      showHits(await (await api(`search/image?${query}`, { method: "POST", body })).json(), "the image");
    } catch (error) {
      $("search-error").textContent = error.message;
    }
  });
}

// -- triage ---------------------------------------------------------------------------------------

function vitalLabel(column) {
  const text = column.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function setUpTriage(model) {
  $("triage-image-field").hidden = !model.modalities.includes("image");
  $("triage-note-field").hidden = !model.modalities.includes("text");
  $("triage-vitals").hidden = !model.modalities.includes("vitals");
  $("vitals-fields").replaceChildren(...model.vitals_columns.map((column) => element("div", {}, [
    element("label", { for: `vital-${column}`, text: vitalLabel(column) }),
    element("input", { id: `vital-${column}`, type: "number", step: "any", inputmode: "decimal",
                       "data-column": column }),
  ])));
}

function showPrediction(result) {
  const bars = Object.entries(result.contributions).map(([modality, share]) => element("li", {}, [
    element("span", { class: "name", text: modality === "text" ? "note" : modality }),
    element("span", { class: "track", "aria-hidden": "true" }, [
      element("span", { class: "fill", style: `width: ${(100 * share).toFixed(1)}%` }),
    ]),
    element("span", { class: "value", text: percent(share) }),
  ]));
  $("triage-result").replaceChildren(
    element("p", { class: "probability" }, [
      element("strong", { text: percent(result.probability) }),
      ` probability of ${result.label.replace(/_/g, " ")} (predicted class ${result.prediction})`,
    ]),
    element("h3", { text: "Contribution of each input" }),
    element("ul", { class: "bars", "aria-label": "contribution of each input" }, bars),
    element("p", { class: "summary",
                   text: `${result.latency_ms.toFixed(0)} ms on the server · ${result.contribution_method.replace(/_/g, " ")}` }),
  );
}

async function predict(event) {
  event.preventDefault();
  $("triage-error").textContent = "";
  const body = new FormData();
  const image = $("triage-image").files[0];
  if (image && !$("triage-image-field").hidden) body.append("image", image);
  const vitals = {};
  for (const input of $("vitals-fields").querySelectorAll("input")) {
    if (input.value.trim() !== "") vitals[input.dataset.column] = Number(input.value);
  }
  if (Object.keys(vitals).length) body.append("vitals", JSON.stringify(vitals));
  const note = $("triage-note").value;
  if (note.trim() && !$("triage-note-field").hidden) body.append("note", note);
  await busy(event.submitter || event.target.querySelector("button[type=submit]"), async () => {
    try {
      showPrediction(await (await api("predict", { method: "POST", body })).json());
    } catch (error) {
      $("triage-result").replaceChildren();
      $("triage-error").textContent = error.message;
    }
  });
}

// -- report ---------------------------------------------------------------------------------------

function showMap(report, highlight, node) {
  $("report-view").src = highlight ? highlight.overlay : report.image;
  $("report-caption").textContent = highlight
    ? `Attention of “${highlight.text}”${highlight.finding ? ` (${highlight.finding})` : ""}`
    : "Image (no map shown)";
  document.querySelectorAll("#report-text .active").forEach((e) => e.classList.remove("active"));
  if (node) node.classList.add("active");
}

function mark(report, highlight, className) {
  const node = element("span", { class: className, tabindex: "0" });
  const enter = (event) => { event.stopPropagation(); showMap(report, highlight, node); };
  const leave = () => {
    const sentence = className === "word" ? node.closest(".sentence") : null;
    const keep = sentence && (sentence.matches(":hover") || sentence === document.activeElement);
    showMap(report, keep ? sentence.highlight : null, keep ? sentence : null);
  };
  node.highlight = highlight;
  node.addEventListener("mouseenter", enter);
  node.addEventListener("focus", enter);
  node.addEventListener("mouseleave", leave);
  node.addEventListener("blur", leave);
  return node;
}

function showReport(report) {
  const text = report.text;
  const parts = [];
  let position = 0;
  for (const sentence of report.sentences) {
    parts.push(text.slice(position, sentence.start));
    const node = mark(report, sentence, "sentence");
    let cursor = sentence.start;
    for (const word of report.words.filter((w) => w.start >= sentence.start && w.end <= sentence.end)) {
      node.append(text.slice(cursor, word.start));
      const wordNode = mark(report, word, "word");
      wordNode.textContent = text.slice(word.start, word.end);
      node.append(wordNode);
      cursor = word.end;
    }
    node.append(text.slice(cursor, sentence.end));
    parts.push(node);
    position = sentence.end;
  }
  parts.push(text.slice(position));
  $("report-text").replaceChildren(...parts);
  const findings = report.words.map((w) => `${w.text} (${w.finding})`).join(", ") || "none";
  $("report-meta").textContent =
    `Decoding: ${report.method} · findings: ${findings} · ${report.latency_ms.toFixed(0)} ms on the server`;
  showMap(report, null, null);
  $("report-result").hidden = false;
}

async function writeReport(event) {
  event.preventDefault();
  $("report-error").textContent = "";
  const body = new FormData();
  body.append("image", $("report-image").files[0]);
  await busy(event.submitter || event.target.querySelector("button"), async () => {
    try {
      showReport(await (await api("report", { method: "POST", body })).json());
    } catch (error) {
      $("report-result").hidden = true;
      $("report-error").textContent = error.message;
    }
  });
}

// -- start ----------------------------------------------------------------------------------------

async function loadModels() {
  const info = await (await api("version")).json();
  const loaded = Object.entries(info.models).filter(([, model]) => model !== null).map(([name]) => name);
  $("search").hidden = !info.models.search;
  $("triage").hidden = !info.models.predict;
  $("report").hidden = !info.models.report;
  if (info.models.predict) setUpTriage(info.models.predict);
  $("token-form").hidden = true;
  $("status").textContent = `medfusion ${info.medfusion} · serving ${loaded.join(", ") || "nothing"}`;
}

async function start() {
  $("search-form").addEventListener("submit", search);
  $("search-image-form").addEventListener("submit", searchImage);
  $("triage-form").addEventListener("submit", predict);
  $("report-form").addEventListener("submit", writeReport);
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    try { await loadModels(); } catch (error) { askToken(error.message); }
  });
  try {
    const health = await (await api("healthz")).json();
    if (health.token_required && !token) {
      $("status").textContent = "This server needs an access token.";
      askToken();
      return;
    }
    await loadModels();
  } catch (error) {
    $("status").textContent = `Cannot reach the service: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", start);
