// The query-by-image page: plain browser JavaScript against the /api endpoints (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { classes: [], browse: null, queryLabel: -1, info: null };

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail || response.statusText}`);
  }
  return body;
}

function status(text) { $("status").textContent = text; }

function card(item, onClick) {
  const meta = [el("span", { textContent: item.class ?? "unlabelled" })];
  if (item.distance !== undefined) {
    // Runs with instance bits rank by (semantic distance, instance distance): show both.
    const inst = item.instance_distance ?? null;
    const text = inst === null ? `d=${item.distance}` : `d=${item.distance}·${inst}`;
    const title = inst === null ? "Hamming distance"
      : "semantic distance · instance distance (ranked by the first, then the second)";
    meta.unshift(el("span", { className: "dist", textContent: text, title }));
  }
  meta.push(el("span", { className: "muted", textContent: `#${item.id}` }));
  const button = el("button", { className: "card", title: "search from this image" }, [
    el("img", { src: item.image_url, alt: item.class ?? `item ${item.id}`, loading: "lazy" }),
    el("div", { className: "meta" }, meta),
  ]);
  button.dataset.id = item.id;
  button.addEventListener("click", () => onClick(item));
  return button;
}

function showQuery(src, what, code) {
  $("query").hidden = false;
  $("query-img").src = src;
  $("query-what").textContent = what;
  $("query-code").textContent = code ? `code ${code.hex}` : "";
}

function showHits(result) {
  const grid = $("results");
  grid.replaceChildren();
  $("more").hidden = true;
  const label = result.query.label ?? state.queryLabel;
  for (const hit of result.hits) {
    const c = card(hit, (item) => searchById(item.id));
    c.classList.add("hit");
    if (label >= 0) c.classList.add(hit.label === label ? "match" : "miss");
    grid.append(c);
  }
  const labelled = state.classes.some((c) => c.count > 0);
  const p = $("precision");
  if (labelled && label >= 0 && result.hits.length) {
    const same = result.hits.filter((h) => h.label === label).length;
    p.textContent = `precision of the ${result.hits.length} shown: ${(same / result.hits.length).toFixed(2)} (${same}/${result.hits.length} of class ${state.classes[label].name})`;
    p.hidden = false;
  } else {
    p.textContent = labelled ? "precision: pick the query's class to see it" : "";
    p.hidden = !labelled;
  }
  status(`${result.hits.length} results`);
}

function k() { return Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 12)); }

async function searchFile(file) {
  if (!file) return;
  state.queryLabel = parseInt($("qclass").value, 10);
  status(`searching with ${file.name}…`);
  const form = new FormData();
  form.append("image", file);
  form.append("k", String(k()));
  try {
    const result = await api("/api/search/image", { method: "POST", body: form });
    showQuery(URL.createObjectURL(file), `uploaded: ${file.name}`, result.query.code);
    showHits(result);
  } catch (err) { status(`search failed: ${err.message}`); }
}

async function searchById(id) {
  status(`searching from item #${id}…`);
  try {
    const result = await api("/api/search", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id, k: k() }),
    });
    const cls = result.query.class ?? "unlabelled";
    $("qclass").value = String(result.query.label ?? -1);  // the item's own class, for precision
    showQuery(`/api/items/${id}/image`, `archive item #${id} (${cls})`, result.query.code);
    showHits(result);
  } catch (err) { status(`search failed: ${err.message}`); }
}

async function browse(label, offset = 0) {
  state.browse = { label, offset };
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", Number(b.dataset.label) === label);
  try {
    const page = await api(`/api/items?label=${label}&offset=${offset}&limit=60`);
    if (offset === 0) $("results").replaceChildren();
    for (const item of page.items) $("results").append(card(item, (it) => searchById(it.id)));
    const shown = offset + page.items.length;
    $("more").hidden = shown >= page.total;
    $("precision").hidden = true;
    const name = label >= 0 ? state.classes[label].name : "unlabelled";
    status(`${name}: ${shown} of ${page.total} items; click one to search from it`);
  } catch (err) { status(`browse failed: ${err.message}`); }
}

function showInfo(info) {
  state.info = info;
  $("info").textContent = `${info.items} items · ${info.n_bits} bits · ${info.model.method}/${info.model.backbone}`;
}

function keepValue(select, fill) {  // refill a <select> without losing the user's choice
  const value = select.value;
  fill();
  if ([...select.options].some((o) => o.value === value)) select.value = value;
}

function showClasses(classes) {
  state.classes = classes.classes;
  const entries = classes.classes.map((c) => [c.label, `${c.name} (${c.count})`]);
  if (classes.unlabelled) entries.push([-1, `unlabelled (${classes.unlabelled})`]);
  const active = state.browse ? state.browse.label : null;
  $("class-list").replaceChildren(...entries.map(([label, text]) => {
    const b = el("button", { textContent: text });
    b.dataset.label = label;
    b.classList.toggle("active", label === active);
    b.addEventListener("click", () => browse(label));
    return el("li", {}, [b]);
  }));
  keepValue($("qclass"), () => $("qclass").replaceChildren(
    el("option", { value: "-1", textContent: "unknown" }),
    ...classes.classes.map((c) => el("option", { value: c.label, textContent: c.name }))));
  keepValue($("add-class"), () => $("add-class").replaceChildren(
    el("option", { value: "", textContent: "none" }),
    ...classes.classes.map((c) => el("option", { value: c.name, textContent: c.name }))));
}

// Adding images: shown only when the server takes writes ("open" on loopback, or with a token).
const TOKEN_KEY = "ahcl-token";

function setupAdd(writes) {
  $("add-panel").hidden = writes !== "open" && writes !== "token";
  $("add-token-row").hidden = writes !== "token";
  $("add-token").value = sessionStorage.getItem(TOKEN_KEY) ?? "";
}

function addStatus(text) { $("add-status").textContent = text; }

async function addImages(event) {
  event.preventDefault();
  const files = [...$("add-files").files];
  if (!files.length) { addStatus("pick one or more images first"); return; }
  const bytes = files.reduce((sum, f) => sum + f.size, 0);
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  if (bytes > limit) { addStatus(`not sent: ${bytes} bytes of images, over the server's limit of ${limit} bytes`); return; }
  const form = new FormData();
  for (const f of files) form.append("image", f);
  if ($("add-class").value) form.append("label", $("add-class").value);
  const token = $("add-token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  $("add-submit").disabled = true;
  addStatus(`adding ${files.length} image(s)…`);
  try {
    const result = await api("/api/items", { method: "POST", body: form, headers });
    addStatus(`added ${result.items.map((it) => `#${it.id}`).join(", ")}; the archive now holds ${result.count} items`);
    $("add-files").value = "";
    await refresh();
  } catch (err) {
    // fetch itself fails (TypeError) when the server cuts an over-large upload off mid-way
    addStatus(`add failed: ${err instanceof TypeError ? "the connection broke (upload too large?)" : err.message}`);
  } finally { $("add-submit").disabled = false; }
}

async function refresh() {
  const [info, classes] = await Promise.all([api("/api/info"), api("/api/classes")]);
  showInfo(info);
  showClasses(classes);
  return info;
}

async function init() {
  const info = await refresh();
  setupAdd(info.writes);
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  searchFile(e.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("file").addEventListener("change", (e) => { searchFile(e.target.files[0]); e.target.value = ""; });
$("add-form").addEventListener("submit", addImages);
$("add-token").addEventListener("change", (e) => sessionStorage.setItem(TOKEN_KEY, e.target.value.trim()));
$("more").addEventListener("click", () => state.browse && browse(state.browse.label, state.browse.offset + 60));
init().catch((err) => status(`cannot reach the server: ${err.message}`));
