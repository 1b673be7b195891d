// Small DOM helpers and formats shared by the views. Text is always set
// with textContent: nothing from the API is ever parsed as HTML.

export const $ = (sel, root = document) => root.querySelector(sel);

// h makes an element: h("td", {class: "n"}, "text", child, …).
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// fill replaces the rows of table's body with rows, or one row saying
// empty when there are none.
export function fill(table, rows, empty) {
  const tb = table.tBodies[0];
  if (!rows.length) {
    const n = table.tHead.rows[0].cells.length;
    tb.replaceChildren(h("tr", {}, h("td", {colspan: n, class: "empty"}, empty || "none")));
    return;
  }
  tb.replaceChildren(...rows);
}

// The states shown as bad (red) and as passing (yellow).
const red = new Set(["failed", "backoff", "exited", "dead"]);
const yellow = new Set(["draining", "drained", "stopping", "recycling", "starting", "waiting", "held"]);
const green = new Set(["running", "ready", "busy", "succeeded"]);

export function stateClass(s) {
  if (red.has(s)) return "st bad";
  if (yellow.has(s)) return "st warn";
  if (green.has(s)) return "st ok";
  return "st";
}

export const state = (s) => h("span", {class: stateClass(s)}, s || "—");

export function bytes(n) {
  if (!n) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
}

export const num = (n) => (n ?? 0).toLocaleString("en");

// seconds formats a duration in seconds for people.
export function seconds(s) {
  if (!isFinite(s) || s <= 0) return "0";
  if (s < 0.001) return (s * 1e6).toFixed(0) + "µs";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + "ms";
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}

// goDuration reads a Go duration string ("1m2.5s", "350ms") as seconds.
export function goDuration(d) {
  if (typeof d === "number") return d / 1e9;
  if (!d) return 0;
  const unit = {h: 3600, m: 60, s: 1, ms: 1e-3, "µs": 1e-6, us: 1e-6, ns: 1e-9};
  let total = 0;
  for (const [, v, u] of String(d).matchAll(/([0-9.]+)(h|ms|m|s|µs|us|ns)/g)) total += parseFloat(v) * unit[u];
  return total;
}

export const since = (t) => t ? seconds((Date.now() - Date.parse(t)) / 1000) : "";
export const time = (t) => t ? new Date(t).toLocaleTimeString("en-GB") : "";
export const dateTime = (t) => t ? new Date(t).toLocaleString("en-GB") : "";

// jobLink is a link to a job's page.
export const jobLink = (id) => id ? h("a", {href: "#/job/" + encodeURIComponent(id), class: "id"}, id) : "";

// flash shows msg in the banner, as an error (kind "bad") or a notice.
let flashTimer;
export function flash(msg, kind = "info") {
  const b = $("#banner");
  b.textContent = msg;
  b.className = kind;
  b.hidden = !msg;
  clearTimeout(flashTimer);
  if (msg && kind !== "bad") flashTimer = setTimeout(() => { b.hidden = true; }, 6000);
}

// pretty is a JSON value indented, for a <pre>.
export function pretty(v) {
  if (v === undefined) return "";
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}
