// The actions that change something: a job's retry and cancel, and the
// pool commands, each behind a confirmation dialog (<dialog id=confirm>).
// They are same-origin POSTs, which conductord's guard lets through
// (docs/security.md, "The HTTP API").

import {post} from "./api.js";
import {$, flash} from "./ui.js";

// confirm shows the confirmation dialog and resolves to null (cancelled)
// or {count} (the number typed, for a resize).
export function confirm({title, message, ok = "Confirm", count}) {
  const d = $("#confirm");
  $("[data-title]", d).textContent = title;
  $("[data-message]", d).textContent = message;
  $("[data-ok]", d).textContent = ok;
  const countLabel = $("[data-count]", d), input = d.querySelector("input[name=count]");
  countLabel.hidden = count === undefined;
  input.required = count !== undefined;
  input.value = count ?? "";
  d.returnValue = "";
  return new Promise((resolve) => {
    d.addEventListener("close", () => {
      resolve(d.returnValue === "ok" ? {count: Number(input.value)} : null);
    }, {once: true});
    d.showModal();
    (count !== undefined ? input : $("[data-ok]", d)).focus();
  });
}

// What each pool command does, for its dialog (docs/api.md, "Pools").
const poolOps = {
  drain: "Its workers finish the jobs they hold and take no new ones, on every host that runs it; they stay up. Resume undoes it.",
  resume: "Its workers take jobs again, on every host that runs it.",
  recycle: "Each worker is replaced by a new process, one at a time, on every host that runs it; jobs in flight finish first.",
  resize: "Each host that runs it keeps this many workers (0 to the maximum pool size, conductord --max-pool-size).",
};

// poolAction asks to confirm op on pool and sends it; then is called
// after it was sent.
export async function poolAction(pool, op, current, then) {
  const ans = await confirm({
    title: op[0].toUpperCase() + op.slice(1) + " pool " + pool + "?",
    message: poolOps[op],
    ok: op[0].toUpperCase() + op.slice(1),
    count: op === "resize" ? current : undefined,
  });
  if (!ans) return;
  try {
    const res = await post("/v1/pools/" + encodeURIComponent(pool) + "/" + op, op === "resize" ? {count: ans.count} : {});
    const hosts = (res.hosts || []).map((x) => x.host + (x.ok ? " ok" : ": " + x.error)).join("; ");
    flash(op + " of pool " + pool + " sent: " + hosts);
  } catch (e) {
    flash(op + " of pool " + pool + " failed: " + e.message, "bad");
  }
  then?.();
}

// jobAction retries (a dead job: queued again, its attempts from one) or
// cancels (a job that has not ended) job id, after confirming.
export async function jobAction(id, op, then) {
  const what = op === "retry"
    ? "The dead job is queued again, with its payload, and runs from its first attempt."
    : "The job ends cancelled: at once if no worker runs it, else its worker is told to stop.";
  const ans = await confirm({title: (op === "retry" ? "Retry" : "Cancel") + " job " + id + "?", message: what,
    ok: op === "retry" ? "Retry" : "Cancel job"});
  if (!ans) return;
  try {
    const j = await post("/v1/jobs/" + encodeURIComponent(id) + "/" + op);
    flash("job " + id + ": " + (op === "retry" ? "queued again" : "cancel sent") + " (now " + (j?.status || "?") + ")");
  } catch (e) {
    flash(op + " of job " + id + " failed: " + e.message, "bad");
  }
  then?.();
}

// jobButtons are the buttons of a job in status.
export function jobButtons(h, job, then) {
  const out = [];
  if (job.status === "dead") {
    out.push(h("button", {type: "button", class: "small", "data-action": "retry", onclick: () => jobAction(job.id, "retry", then)}, "Retry"));
  }
  if (["queued", "held", "running", "failed"].includes(job.status)) {
    out.push(h("button", {type: "button", class: "small", "data-action": "cancel", onclick: () => jobAction(job.id, "cancel", then)}, "Cancel"));
  }
  return out;
}
