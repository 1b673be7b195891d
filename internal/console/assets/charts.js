// The charts: per job type, throughput (succeeded, failed and dead per
// second: differences of the counters), latency (the run time's p50 and
// p95 from the hosts' histograms) and queue depth (queued, running), drawn
// on <canvas> from the console's history and snapshots.

import {$, h, seconds} from "./ui.js";

const maxPoints = 120; // as conductord keeps (pkg/conductor/console.go)

// series holds the points by job type, oldest first.
const series = new Map();

// history takes the history event's points.
export function history(hist) {
  series.clear();
  for (const [typ, pts] of Object.entries(hist.points || {})) series.set(typ, pts.slice(-maxPoints));
}

// add takes a snapshot's points.
export function add(points) {
  for (const [typ, p] of Object.entries(points || {})) {
    const s = series.get(typ) || [];
    if (s.length && s[s.length - 1].t >= p.t) continue; // the history's last point again
    s.push(p);
    if (s.length > maxPoints) s.splice(0, s.length - maxPoints);
    series.set(typ, s);
  }
  for (const typ of [...series.keys()]) if (!(typ in (points || {}))) series.delete(typ);
}

// rate is the per-second difference of k between successive points; a
// counter that went down (conductord's counters reset) reads as 0.
function rate(pts, k) {
  const out = [];
  for (let i = 1; i < pts.length; i++) {
    const dt = (pts[i].t - pts[i - 1].t) / 1000;
    out.push({t: pts[i].t, v: dt > 0 ? Math.max(0, pts[i][k] - pts[i - 1][k]) / dt : 0});
  }
  return out;
}

const pick = (pts, k) => pts.map((p) => ({t: p.t, v: p[k] || 0}));

// latency is the p50 and p95 lines of pts: of the points at which
// attempts ran only (a point with none has no run time, not a zero one).
export function latency(pts) {
  const ran = pts.filter((p) => p.ran > 0);
  return [["p50", pick(ran, "p50")], ["p95", pick(ran, "p95")]];
}

const colors = {succeeded: "#2e7d32", failed: "#e09b00", dead: "#c62828", p50: "#1565c0", p95: "#7b1fa2", queued: "#455a64", running: "#00897b"};

// draw renders every type's charts into #charts.
export function draw() {
  const root = $("#charts");
  if (root.closest(".view").hidden) return;
  const types = [...series.keys()].sort();
  if (!types.length) {
    root.replaceChildren(h("p", {class: "empty"}, "No job type yet: the charts start with the first pool or queued job."));
    return;
  }
  // One row per type, kept between draws so that only the canvases change.
  const rows = new Map([...root.querySelectorAll(".chart-row")].map((r) => [r.dataset.type, r]));
  const want = types.map((typ) => rows.get(typ) || newRow(typ));
  root.replaceChildren(...want);
  // The time axis ends at conductord's last point, not at this browser's
  // clock, which may differ.
  const end = Math.max(...types.map((typ) => series.get(typ).at(-1)?.t || 0));
  for (const row of want) {
    const pts = series.get(row.dataset.type);
    row.dataset.points = pts.length;
    const [tp, lat, depth] = row.querySelectorAll("canvas");
    plot(tp, [["succeeded", rate(pts, "succeeded")], ["failed", rate(pts, "failed")], ["dead", rate(pts, "dead")]], (v) => v.toFixed(v < 10 ? 1 : 0) + "/s", end);
    plot(lat, latency(pts), seconds, end);
    plot(depth, [["queued", pick(pts, "queued")], ["running", pick(pts, "running")]], (v) => Math.round(v).toLocaleString("en"), end);
  }
}

function newRow(typ) {
  const chart = (title, keys) => h("figure", {},
    h("figcaption", {}, title, " ", ...keys.map((k) => h("span", {class: "key", "data-color": k}, k))),
    h("canvas", {width: 360, height: 120}));
  return h("div", {class: "chart-row", "data-type": typ},
    h("h3", {}, typ),
    chart("throughput", ["succeeded", "failed", "dead"]),
    chart("latency (run time)", ["p50", "p95"]),
    chart("queue depth", ["queued", "running"]));
}

// plot draws lines (name, points) on canvas over the two minutes up to
// end (ms), scaled to their maximum, with that maximum written top left in
// fmt and the time span bottom right.
function plot(canvas, lines, fmt, end) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 360, cssH = canvas.clientHeight || 120;
  if (canvas.width !== cssW * dpr || canvas.height !== cssH * dpr) {
    canvas.width = cssW * dpr;
    canvas.height = cssH * dpr;
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  const pad = {l: 4, r: 4, t: 16, b: 14};
  const now = end || Date.now();
  const t0 = now - maxPoints * 1000;
  // Points sampled at the idle pace (5s) reach further back: not drawn.
  lines = lines.map(([name, pts]) => [name, pts.filter((p) => p.t >= t0)]);
  const all = lines.flatMap(([, pts]) => pts);
  const max = Math.max(...all.map((p) => p.v), 0);
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => pad.l + (cssW - pad.l - pad.r) * Math.min(1, Math.max(0, (t - t0) / (now - t0)));
  const y = (v) => cssH - pad.b - (cssH - pad.t - pad.b) * (v / top);
  g.strokeStyle = "#e3e6ea";
  g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    g.beginPath();
    g.moveTo(pad.l, Math.round(y(top * f / 1.1)) + 0.5);
    g.lineTo(cssW - pad.r, Math.round(y(top * f / 1.1)) + 0.5);
    g.stroke();
  }
  g.lineWidth = 1.5;
  g.lineJoin = "round";
  for (const [name, pts] of lines) {
    if (!pts.length) continue;
    g.strokeStyle = colors[name];
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
    g.stroke();
  }
  g.fillStyle = "#666";
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "top";
  g.fillText("max " + fmt(max), pad.l, 2);
  g.textAlign = "right";
  g.textBaseline = "bottom";
  g.fillText("2 min", cssW - pad.r, cssH);
  g.textAlign = "left";
}
