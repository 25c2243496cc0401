// The query-by-image page: plain browser JavaScript against the /api endpoints (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { classes: [], browse: null, queryLabel: -1, info: null, tile: null, shown: 0 };

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
  $("query-img").hidden = !src;  // a place in a scene has no image of its own
  if (src) $("query-img").src = src;
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
    c.addEventListener("mouseenter", () => focusItem(hit.id, true));
    c.addEventListener("mouseleave", () => focusItem(hit.id, false));
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
  showScenes(result).catch((err) => status(`${result.hits.length} results; scenes not shown: ${err.message}`));
}

// Scene overviews (archives of GeoTIFF tiles): each scene with hits shown whole, with the hits'
// footprints outlined and the query's marked. The outlines are drawn in an SVG whose viewBox is
// the scene's pixels, laid over the overview image: a hit's pixel window is placed exactly
// (scene pixel × the overview's scale), whatever size the image is shown at.
const SVG_NS = "http://www.w3.org/2000/svg";  // a namespace name, never fetched

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

async function showScenes(result) {
  const box = $("scenes");
  const shown = ++state.shown;  // a later search replaces this one's overviews
  const hits = result.hits.map((h, i) => ({ ...h, rank: i + 1 })).filter((h) => h.place);
  const query = result.query.place ?? null;
  if (!hits.length && !query) { box.hidden = true; box.replaceChildren(); return; }
  box.setAttribute("aria-busy", "true");  // the overviews shown are the last search's until then
  const listing = await api("/api/scenes").catch((err) => { box.hidden = true; throw err; });
  if (shown !== state.shown) return;
  box.setAttribute("aria-busy", "false");
  state.tile = listing.tile;
  const numbers = [...new Set([...(query ? [query.scene] : []), ...hits.map((h) => h.place.scene)])];
  box.replaceChildren(...numbers.map((n) => listing.scenes[n]).filter((sc) => sc && sc.overview)
    .map((sc) => sceneFigure(sc, hits.filter((h) => h.place.scene === sc.scene),
                             query && query.scene === sc.scene ? query : null)));
  box.hidden = !box.children.length;
}

function footprint(pixels, className, title) {  // pixels: [col_off, row_off, width, height]
  const [x, y, width, height] = pixels;
  const rect = svgEl("rect", { x, y, width, height, class: className });
  rect.append(svgEl("title"));
  rect.firstChild.textContent = title;
  return rect;
}

function focusItem(id, on) {  // a hit's card and footprint light up together
  for (const node of document.querySelectorAll(`#results [data-id="${id}"], #scenes [data-id="${id}"]`)) node.classList.toggle("focus", on);
}

function sceneFigure(scene, hits, query) {
  const { url, width, height } = scene.overview;
  const img = el("img", { src: url, width, height, alt: `overview of scene ${scene.scene}` });
  const svg = svgEl("svg", { viewBox: `0 0 ${scene.width} ${scene.height}`, preserveAspectRatio: "none" });
  for (const hit of [...hits].reverse()) {  // the best hit drawn last: on top where tiles overlap
    const rect = footprint(hit.place.window, "footprint hit", `#${hit.id} · d=${hit.distance} · rank ${hit.rank}`);
    rect.dataset.id = hit.id;
    rect.dataset.rank = hit.rank;
    rect.addEventListener("click", (e) => { e.stopPropagation(); searchById(hit.id); });
    rect.addEventListener("mouseenter", () => focusItem(hit.id, true));
    rect.addEventListener("mouseleave", () => focusItem(hit.id, false));
    svg.append(rect);
  }
  // the query on top (it takes no clicks: a click there searches from that place)
  if (query) svg.append(footprint(query.window, "footprint query", "the query"));
  const coords = el("output", { className: "coords", textContent: "point at the scene for coordinates; click to search from that place" });
  svg.addEventListener("mousemove", (e) => { coords.textContent = coordsText(scene, sceneAt(scene, svg, e)); });
  svg.addEventListener("click", (e) => searchPlace(scene, sceneAt(scene, svg, e)));
  const crs = scene.crs === null ? "no georeferencing" : scene.crs.startsWith("EPSG:") ? scene.crs : "custom CRS";
  const caption = `scene ${scene.scene} · ${scene.name} · ${scene.width} × ${scene.height} px · ${crs} · ${hits.length} of its ${scene.items} tiles among the results`;
  const legend = `blue: the hits (click one to search from it)${query ? " · dashed red: the query" : ""}`;
  const figure = el("figure", { className: "scene" }, [el("div", { className: "overview" }, [img, svg]),
    el("figcaption", {}, [el("span", { textContent: caption }), el("br"),
      el("span", { className: "muted", textContent: legend }), el("br"), coords])]);
  figure.dataset.scene = scene.scene;
  return figure;
}

function sceneAt(scene, svg, event) {  // the scene pixel position (col, row) under the mouse
  const box = svg.getBoundingClientRect();
  return [(event.clientX - box.left) / box.width * scene.width,
          (event.clientY - box.top) / box.height * scene.height];
}

// lon/lat of a scene pixel position by bilinear interpolation of the corners' lon/lat: exact for
// a scene in EPSG:4326 (its transform is affine), an approximation in a projected CRS (in UTM
// about 2 m across a 10 km scene, 230 m across 100 km; the footprints themselves are exact).
function lonlatAt(scene, [col, row]) {
  const u = col / scene.width, v = row / scene.height;
  const [ul, ur, lr, ll] = scene.corners;
  const mix = (i) => (1 - u) * (1 - v) * ul[i] + u * (1 - v) * ur[i] + u * v * lr[i] + (1 - u) * v * ll[i];
  return [mix(0), mix(1)];
}

function coordsText(scene, at) {
  const pixel = `col ${Math.floor(at[0])}, row ${Math.floor(at[1])}`;
  if (!scene.corners) return `${pixel} (no georeferencing)`;
  const [lon, lat] = lonlatAt(scene, at);
  return `lon ${lon.toFixed(5)}, lat ${lat.toFixed(5)} · ${pixel}`;
}

async function searchPlace(scene, [col, row]) {
  const t = state.tile;
  if (!t || t > scene.width || t > scene.height) return;
  // the window whose centre is nearest the point, shifted inside the scene near its edges
  const clamp = (v, size) => Math.min(Math.max(Math.round(v - t / 2), 0), size - t);
  const tile = [clamp(col, scene.width), clamp(row, scene.height), t, t];
  const what = `place: scene ${scene.scene} (${scene.name}), window [${tile.join(", ")}]`;
  state.queryLabel = parseInt($("qclass").value, 10);
  status(`searching from ${what}…`);
  try {
    const result = await api("/api/search", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ scene: scene.scene, window: tile, k: k() }),
    });
    showQuery(null, what, result.query.code);
    showHits(result);
  } catch (err) { status(`search failed: ${err.message}`); }
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
  state.shown += 1;  // browsing is not a search: no overviews
  $("scenes").hidden = true;
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
