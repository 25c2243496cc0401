// Renders /openapi.json as a readable list of operations (served locally: no CDN assets).
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// A request body's schema, with a reference to a generated component replaced by the component.
function resolve(spec, schema) {
  const ref = schema && schema.$ref;
  return ref ? (spec.components?.schemas || {})[ref.split("/").pop()] || schema : schema;
}

fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  const root = document.getElementById("ops");
  root.replaceChildren(el("p", spec.info.description || "", "muted"));
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [verb, op] of Object.entries(ops)) {
      const box = el("section", "", "op");
      const head = el("h3");
      head.append(el("span", verb.toUpperCase(), "verb"), path);
      box.append(head, el("p", op.summary || ""));
      if (op.description) box.append(el("p", op.description, "muted"));
      for (const p of op.parameters || []) box.append(el("div", `${p.in} parameter ${p.name}${p.required ? " (required)" : ""}`));
      if (op.requestBody) {
        for (const [type, media] of Object.entries(op.requestBody.content)) {
          box.append(el("div", `body: ${type}`), el("pre", JSON.stringify(resolve(spec, media.schema), null, 2)));
        }
      }
      root.append(box);
    }
  }
}).catch((err) => { document.getElementById("ops").textContent = `cannot load the schema: ${err}`; });
