// The query-by-image page: plain browser JavaScript against the /api endpoints (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { classes: [], browse: null, queryLabel: -1 };

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
  if (item.distance !== undefined) meta.unshift(el("span", { className: "dist", textContent: `d=${item.distance}` }));
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
    const result = await api("/api/search", { method: "POST", body: form });
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

async function init() {
  const [info, classes] = await Promise.all([api("/api/info"), api("/api/classes")]);
  $("info").textContent = `${info.items} items · ${info.n_bits} bits · ${info.model.method}/${info.model.backbone}`;
  state.classes = classes.classes;
  const list = $("class-list");
  const entries = classes.classes.map((c) => [c.label, `${c.name} (${c.count})`]);
  if (classes.unlabelled) entries.push([-1, `unlabelled (${classes.unlabelled})`]);
  for (const [label, text] of entries) {
    const b = el("button", { textContent: text });
    b.dataset.label = label;
    b.addEventListener("click", () => browse(label));
    list.append(el("li", {}, [b]));
    if (label >= 0) $("qclass").append(el("option", { value: label, textContent: classes.classes[label].name }));
  }
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
$("more").addEventListener("click", () => state.browse && browse(state.browse.label, state.browse.offset + 60));
init().catch((err) => status(`cannot reach the server: ${err.message}`));
