// The tails: the supervision events (GET /v1/events, Server-Sent Events)
// and a pool's worker logs (GET /v1/pools/{name}/logs, JSON lines), both
// read with fetch streaming, newest at the top, bounded.

import {sse, ndjson, ApiError} from "./api.js";
import {$, h, time} from "./ui.js";

const maxLines = 1000; // kept on the page per tail

function push(list, li) {
  list.prepend(li);
  while (list.childElementCount > maxLines) list.lastElementChild.remove();
}

// tail runs one stream for form into list: read(signal) until Stop, a new
// Follow, or leaving the view; status says how it went.
function tail(form, list, read) {
  let ctl = null;
  const status = $("[data-status]", form);
  const stop = () => { if (ctl) { ctl.abort(); ctl = null; status.textContent = "stopped"; } };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    stop();
    list.replaceChildren();
    const mine = ctl = new AbortController();
    status.textContent = "connecting…";
    status.className = "note";
    const opened = () => { status.textContent = "following"; };
    try {
      await read(form, list, mine.signal, opened);
      if (ctl === mine) status.textContent = "the stream ended (conductord stopped?): Follow again";
    } catch (e) {
      if (mine.signal.aborted) return;
      status.className = "note bad";
      status.textContent = explain(e);
    }
    if (ctl === mine) ctl = null;
  });
  $("[data-stop]", form).addEventListener("click", stop);
  return stop;
}

function explain(e) {
  if (!(e instanceof ApiError)) return "stream broken: " + e.message + " (cut off for reading too slowly, or conductord went away): Follow again";
  return e.message;
}

async function readEvents(form, list, signal, onOpen) {
  const pool = form.elements.pool.value.trim();
  await sse("/v1/events" + (pool ? "?pool=" + encodeURIComponent(pool) : ""), (_, data) => {
    let e;
    try { e = JSON.parse(data); } catch { return; }
    const bad = ["exit", "failed", "rollback"].includes(e.kind) && e.reason !== "stop" && e.reason !== "recycle" && e.reason !== "resize";
    const what = [e.reason, e.exit, e.signal, e.error, e.count !== undefined ? "count " + e.count : "", e.uptime ? "after " + e.uptime : "",
      e.data !== undefined ? JSON.stringify(e.data) : ""].filter(Boolean).join(" · ");
    push(list, h("li", {class: bad ? "bad" : ""}, h("time", {}, time(e.time)), " ", h("b", {}, e.kind), " ",
      e.host + "/" + e.pool + (e.index !== undefined ? "#" + e.index : "") + (e.pid ? " pid " + e.pid : ""), " ", h("span", {class: "why"}, what)));
  }, signal, onOpen);
}

async function readLogs(form, list, signal, onOpen) {
  const pool = form.elements.pool.value.trim(), n = form.elements.tail.value || "100";
  try {
    await ndjson("/v1/pools/" + encodeURIComponent(pool) + "/logs?tail=" + encodeURIComponent(n) + "&follow=true", (r) => {
      if (r.error) {
        push(list, h("li", {class: "bad"}, (r.host || "?") + "/" + (r.pool || pool) + ": " + r.error));
        return;
      }
      const where = r.host + "/" + r.pool + "#" + r.index + (r.pid ? " " + r.pid : "");
      push(list, h("li", {class: r.stream === "stderr" ? "stderr" : ""}, h("time", {}, time(r.time)), " ", h("span", {class: "where"}, where), " ",
        r.dropped ? h("span", {class: "warn"}, "[" + r.dropped + " lines dropped] ") : "", r.line ?? ""));
    }, signal, onOpen);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && !/pool/i.test(e.message)) {
      throw new ApiError(404, "This conductord serves no worker logs yet (GET /v1/pools/{name}/logs answered 404): it comes with a newer conductord; until then, read them on the host.", e.path);
    }
    throw e;
  }
}

// init wires both forms; it returns the function that stops both.
export function init() {
  const stops = [tail($("#events-form"), $("#events-tail"), readEvents), tail($("#logs-form"), $("#logs-tail"), readLogs)];
  return () => stops.forEach((s) => s());
}
