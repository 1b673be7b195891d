// Jobs: a search by id, type and status (GET /v1/jobs, GET /v1/jobs/{id}),
// and a job's page with its attempts, error, payload and result.

import {get, ApiError} from "./api.js";
import {jobButtons} from "./actions.js";
import {$, h, fill, state, seconds, since, dateTime, jobLink, pretty, flash} from "./ui.js";

const n = (v) => h("td", {class: "n"}, v);

// search runs the form's query; an id goes straight to the job's page.
export async function search(params) {
  const form = $("#job-search");
  for (const k of ["id", "type", "status", "limit"]) if (params.has(k)) form.elements[k].value = params.get(k);
  const id = form.elements.id.value.trim();
  if (id) {
    location.hash = "#/job/" + encodeURIComponent(id);
    return;
  }
  const q = new URLSearchParams();
  for (const k of ["type", "status", "limit"]) if (form.elements[k].value) q.set(k, form.elements[k].value.trim());
  const table = $("#job-list");
  try {
    const jobs = await get("/v1/jobs?" + q);
    fill(table, jobs.map((j) => h("tr", {"data-job": j.id, "data-status": j.status},
      h("td", {}, jobLink(j.id)), h("td", {}, j.type), h("td", {}, state(j.status)), n(j.attempts),
      h("td", {title: dateTime(j.updated_at)}, since(j.updated_at) + " ago"), h("td", {class: "why err"}, j.error || ""),
      h("td", {class: "actions"}, jobButtons(h, j, () => search(new URLSearchParams()))),
    )), "no job matches");
  } catch (e) {
    fill(table, [], e.message);
  }
}

export function initSearch() {
  $("#job-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = ev.target, q = new URLSearchParams();
    for (const k of ["id", "type", "status", "limit"]) if (form.elements[k].value) q.set(k, form.elements[k].value.trim());
    const target = "#/jobs?" + q;
    if (location.hash === target) search(new URLSearchParams());
    else location.hash = target;
  });
}

// show draws job id's page; it is drawn again every 2s while the job has
// not ended (refresh returns whether to go on).
export async function show(id) {
  const root = $("#job-detail");
  let j;
  try {
    j = await get("/v1/jobs/" + encodeURIComponent(id));
  } catch (e) {
    root.replaceChildren(h("p", {class: "bad"}, e instanceof ApiError && e.status === 404 ? "No job " + id + ": its state may have expired (--retention)." : e.message));
    return false;
  }
  const row = (k, v) => v || v === 0 ? h("tr", {}, h("th", {}, k), h("td", {}, v)) : "";
  root.replaceChildren(
    h("h2", {}, "Job ", h("code", {class: "id"}, j.id), " ", state(j.status)),
    h("div", {class: "actions", id: "job-actions"}, jobButtons(h, j, () => window.dispatchEvent(new HashChangeEvent("hashchange")))),
    h("table", {class: "kv"}, h("tbody", {},
      row("type", h("a", {href: "#/jobs?type=" + encodeURIComponent(j.type)}, j.type)),
      row("status", state(j.status)), row("attempts", j.attempts), row("priority", j.priority),
      row("batch", j.batch ? h("a", {href: "#/batches?id=" + encodeURIComponent(j.batch)}, j.batch) : ""),
      row("submitter", j.submitter), row("held by", j.held_by),
      row("skipped deliveries", j.skipped), row("created", dateTime(j.created_at)), row("updated", dateTime(j.updated_at)),
    )),
    j.error ? h("div", {}, h("h3", {}, "Error"), h("pre", {class: "error", id: "job-error"}, j.error)) : "",
    h("h3", {}, "Attempts"),
    attempts(j),
    h("div", {class: "two"},
      h("div", {}, h("h3", {}, "Payload"), h("pre", {id: "job-payload"}, j.payload === undefined ? "(not kept in the state)" : pretty(j.payload))),
      h("div", {}, h("h3", {}, "Result"), h("pre", {}, j.result === undefined ? "(none)" : pretty(j.result))),
    ),
  );
  return !["succeeded", "dead", "cancelled"].includes(j.status);
}

function attempts(j) {
  const hist = j.history || [];
  const t = h("table", {id: "job-attempts"}, h("thead", {}, h("tr", {},
    ...["#", "host", "pid", "started", "ran", "outcome"].map((c) => h("th", {}, c)))), h("tbody"));
  fill(t, hist.map((a) => {
    const ran = a.ended_at ? seconds((Date.parse(a.ended_at) - Date.parse(a.started_at)) / 1000) : "running";
    const flags = [a.crashed && "worker crashed", a.oom_killed && "OOM-killed", a.lost && "lost", a.superseded && "superseded"].filter(Boolean);
    const outcome = a.error ? a.error : a.ended_at ? "ok" : "";
    return h("tr", {}, n(a.attempt), h("td", {}, a.host), n(a.pid || ""), h("td", {}, dateTime(a.started_at)), n(ran),
      h("td", {class: a.error || flags.length ? "why err" : "why"}, [...flags, outcome].filter(Boolean).join("; ")));
  }), "no attempt yet");
  return h("div", {}, t, j.history_dropped ? h("p", {class: "note"}, j.history_dropped + " older attempts dropped") : "");
}

// follow shows id and draws it again every 2s until it ends or stop() is
// called; it returns stop.
export function follow(id) {
  let timer, stopped = false;
  const tick = async () => {
    try {
      if (await show(id) && !stopped) timer = setTimeout(tick, 2000);
    } catch (e) { flash(e.message, "bad"); }
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
