// The overview: hosts, pools (with their actions), workers, and the latest
// failed and dead jobs, from the console's snapshots.

import {get} from "./api.js";
import {poolAction, jobButtons} from "./actions.js";
import {$, h, fill, state, bytes, num, seconds, goDuration, since, dateTime, jobLink} from "./ui.js";

const n = (v) => h("td", {class: "n"}, v);

// changed reports whether v differs from what key showed last: a table is
// drawn again only then, so that a button is not replaced under a click.
const shown = {};
function changed(key, v) {
  const s = JSON.stringify(v);
  if (shown[key] === s) return false;
  shown[key] = s;
  return true;
}

// render draws a snapshot.
export function render(snap) {
  summary(snap);
  if (changed("hosts", snap.hosts)) fill($("#hosts"), snap.hosts.map((x) => h("tr", {},
    h("td", {}, x.host, x.leaving ? h("span", {class: "st warn"}, " leaving") : ""),
    h("td", {}, x.pid), h("td", {}, dateTime(x.started)), n(x.pools), n(x.workers), h("td", {}, "every " + x.interval),
  )), "no live host: start a workerd");

  if (changed("pools", [snap.pools, snap.error])) fill($("#pools"), snap.pools.map((p) => {
    const count = p.hosts?.[0]?.count;
    const act = (op) => h("button", {type: "button", class: "small", "data-pool": p.type, "data-op": op,
      onclick: () => poolAction(p.type, op, count)}, op);
    return h("tr", {"data-type": p.type},
      h("td", {}, h("a", {href: "#/jobs?type=" + encodeURIComponent(p.type)}, p.type)),
      h("td", {}, state(p.state)),
      n(num(p.queued)), n(num(p.held)), n(num(p.running)), n(num(p.succeeded)),
      n(num(p.failed)), h("td", {class: p.dead ? "n bad" : "n"}, num(p.dead)), n(p.workers),
      h("td", {class: "why"}, p.reason || ""),
      h("td", {class: "actions"}, p.hosts?.length ? ["drain", "resume", "recycle", "resize"].map(act) : ""),
    );
  }), snap.error || "no pool yet: queue a job or start a workerd");

  const note = $("#workers-note");
  note.hidden = snap.workers.length >= snap.workers_total;
  note.textContent = "The first " + snap.workers.length + " of " + snap.workers_total + " workers.";
  if (changed("workers", snap.workers)) fill($("#workers"), snap.workers.map((w) => h("tr", {"data-pool": w.pool, "data-state": w.state},
    h("td", {}, w.host), h("td", {}, w.pool), n(w.index), n(w.pid || ""),
    h("td", {}, state(w.state)), h("td", {class: "why"}, w.reason || w.last_exit || ""),
    n(bytes(w.rss)), n(cpu(w)), n(num(w.jobs_done)), h("td", {class: w.restarts ? "n warn" : "n"}, w.restarts),
    h("td", {}, jobLink(w.job), w.queued ? " +" + w.queued : ""),
  )), "no worker");
}

// cpu is a worker's CPU time. The host reads it in clock ticks (10ms) from
// the same read of /proc as its RSS, and leaves it out when it is zero: a
// worker with an RSS and no CPU time has used less than a tick.
function cpu(w) {
  if (w.cpu) return seconds(goDuration(w.cpu));
  return w.rss ? "<10ms" : "";
}

function summary(snap) {
  const sum = (k) => snap.pools.reduce((a, p) => a + (p[k] || 0), 0);
  const bad = snap.workers.filter((w) => ["failed", "backoff", "exited"].includes(w.state)).length;
  const card = (label, value, cls) => h("div", {class: "card " + (cls || "")}, h("b", {}, value), h("span", {}, label));
  $("#summary").replaceChildren(
    card("hosts", snap.hosts.length),
    card("workers", snap.workers_total, bad ? "bad" : ""),
    card("queued", num(sum("queued"))),
    card("running", num(sum("running"))),
    card("succeeded", num(sum("succeeded"))),
    card("dead", num(sum("dead")), sum("dead") ? "bad" : ""),
  );
}

// recent lists the latest failed and dead jobs. It reads the job states
// (a listing: not cheap), so the overview asks every 10s, not every second.
export async function recent() {
  const jobs = await get("/v1/jobs?status=failed,dead&limit=10");
  fill($("#recent"), jobs.map((j) => h("tr", {"data-job": j.id, "data-status": j.status},
    h("td", {}, jobLink(j.id)), h("td", {}, j.type), h("td", {}, state(j.status)), n(j.attempts),
    h("td", {title: dateTime(j.updated_at)}, since(j.updated_at) + " ago"), h("td", {class: "why err"}, j.error || ""),
    h("td", {class: "actions"}, jobButtons(h, j, recent)),
  )), "no failed or dead job");
}

// health shows GET /healthz (open; callers at the same moment share one
// check): whether conductord can queue jobs, and its store's room.
export async function health() {
  const el = $("#health");
  try {
    const resp = await fetch("/healthz", {cache: "no-store"});
    const x = await resp.json(), s = x.storage;
    el.textContent = "health: " + x.status + (s ? "; storage " + s.state + ", " + bytes(s.free_bytes) + " free (reserve " +
      bytes(s.reserve_bytes) + ")" : "") + (x.error ? ": " + x.error : "");
    el.className = x.status === "ok" ? "note" : "bad";
  } catch (e) {
    el.textContent = "health: conductord does not answer (" + e.message + ")";
    el.className = "bad";
  }
}
