// Batches: a batch's progress by id (GET /v1/batches/{id}), drawn again
// every 2s until it ends. conductord keeps no cheap list of batches, so
// the page asks for an id (conductorctl batch prints it, and a job's page
// links its batch).

import {get, ApiError} from "./api.js";
import {$, h, num, dateTime, seconds} from "./ui.js";

let timer;

export function init() {
  $("#batch-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = "#/batches?id=" + encodeURIComponent(ev.target.elements.id.value.trim());
  });
}

export function stop() { clearTimeout(timer); }

// show draws batch id and follows it until it ends.
export async function show(id) {
  stop();
  const root = $("#batch-detail");
  $("#batch-search").elements.id.value = id || "";
  if (!id) { root.replaceChildren(); return; }
  let b;
  try {
    b = await get("/v1/batches/" + encodeURIComponent(id));
  } catch (e) {
    root.replaceChildren(h("p", {class: "bad"}, e instanceof ApiError && e.status === 404 ? "No batch " + id + "." : e.message));
    return;
  }
  const done = b.succeeded + b.dead + b.cancelled;
  const pct = b.total ? Math.floor(100 * done / b.total) : 0;
  const bar = h("div", {class: "bar", title: pct + "%"},
    ...[["succeeded", b.succeeded], ["dead", b.dead], ["cancelled", b.cancelled], ["running", b.running]].map(([k, v]) => {
      const seg = h("span", {class: "seg " + k});
      seg.style.width = (b.total ? 100 * v / b.total : 0) + "%";
      return seg;
    }));
  const ended = !!b.ended_at;
  const took = ((ended ? Date.parse(b.ended_at) : Date.now()) - Date.parse(b.created_at)) / 1000;
  root.replaceChildren(
    h("h2", {}, "Batch ", h("code", {class: "id"}, b.id), " of ", b.type, " ", h("span", {class: ended ? "st ok" : "st warn"}, ended ? "ended" : b.submitting ? "submitting" : "running")),
    bar,
    h("p", {}, num(done) + " of " + num(b.total) + " ended (" + pct + "%) in " + seconds(took) + "; started " + dateTime(b.created_at)),
    h("table", {class: "kv"}, h("tbody", {}, ...["queued", "running", "succeeded", "failed", "dead", "cancelled"].map((k) =>
      h("tr", {}, h("th", {}, k), h("td", {class: "n"}, num(b[k])))))),
    h("p", {}, h("a", {href: "#/jobs?status=dead&type=" + encodeURIComponent(b.type)}, "dead jobs of " + b.type)),
  );
  if (!ended) timer = setTimeout(() => show(id), 2000);
}
