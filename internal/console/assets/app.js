// The console's entry: sign-in, the live feed (GET /v1/console/stream),
// and the views, one at a time, chosen by the URL's fragment.

import {sse, token, setToken, setOnAuth, ApiError} from "./api.js";
import {$, flash} from "./ui.js";
import * as overview from "./overview.js";
import * as charts from "./charts.js";
import * as jobs from "./jobs.js";
import * as batches from "./batches.js";
import * as tails from "./tails.js";

let lastSnapshot = 0; // when the last snapshot came (ms)
let feed = null;      // the live feed's AbortController
let reading = null;   // the AbortController of the feed open (or opening), null while none is
let stopView = () => {};

// --- sign-in ---

// askToken shows the sign-in dialog with why; it resolves once a token
// is given.
let asking = null;
function askToken(why) {
  const d = $("#login");
  $("[data-message]", d).textContent = why;
  if (asking) return asking;
  d.querySelector("input").value = "";
  asking = new Promise((resolve) => {
    d.addEventListener("close", () => {
      asking = null;
      setToken(d.querySelector("input").value.trim());
      showSignOut();
      resolve();
      route(); // the view asks again, with the token

    }, {once: true});
  });
  d.showModal();
  return asking;
}

function authMessage(err) {
  if (err.status === 401) {
    return token()
      ? "conductord did not take this token (" + err.message + "): it may have been revoked or mistyped. Give a valid operator or admin token."
      : "This conductord needs a token: give an operator or admin token (conductord creds add --role operator, or the --token it was started with).";
  }
  return "This token may not do that (" + err.message + "). The console needs the operator role: sign in with an operator or admin token.";
}

setOnAuth((err) => {
  if (err.status === 401) askToken(authMessage(err));
  else flash(authMessage(err), "bad");
});

function showSignOut() { $("#signout").hidden = !token(); }

$("#signout").addEventListener("click", () => {
  setToken("");
  showSignOut();
  restartFeed();
});
$("#login").addEventListener("cancel", (ev) => ev.preventDefault()); // nothing works without it

// --- the live feed ---

function setLive(text, cls) {
  const l = $("#live");
  l.textContent = text;
  l.className = "live " + cls;
}

// staleAfter is how long a feed may be silent (conductord sends a
// snapshot every second) before it is opened again: a connection that
// neither breaks nor brings anything (conductord gone without closing
// it, a proxy or a network that lost it) may stay so for good.
const staleAfter = 10000;

async function runFeed() {
  let wait = 1000;
  for (;;) {
    const ctl = feed = new AbortController();
    let first = true;
    try {
      setLive("connecting", "off");
      lastSnapshot = Date.now(); // a feed that never sends is stale too
      reading = ctl;
      await sse("/v1/console/stream", (name, data) => {
        const v = JSON.parse(data);
        if (name === "history") charts.history(v);
        if (name !== "snapshot") return;
        if (first && $("#banner").className === "bad") flash(""); // the broken feed or the access it reported is mended
        first = false;
        lastSnapshot = Date.now();
        wait = 1000;
        setLive("live", "on");
        // A snapshot whose pools could not be read has no points: the
        // charts keep theirs, as conductord keeps its history.
        if (!v.error) charts.add(v.points);
        overview.render(v);
        charts.draw();
      }, ctl.signal);
    } catch (e) {
      if (reading === ctl) reading = null;
      if (ctl.signal.aborted && ctl.signal.reason !== "stale") return;
      if (e instanceof ApiError && e.status === 401) {
        setLive("signed out", "off");
        await askToken(authMessage(e));
        continue;
      }
      if (e instanceof ApiError && e.status === 403) {
        setLive("no access", "off");
        flash(authMessage(e), "bad");
        await askToken(authMessage(e));
        continue;
      }
      if (ctl.signal.aborted) flash("The live feed sent nothing for " + staleAfter / 1000 + "s; opening it again.", "bad");
      else flash("The live feed broke (" + e.message + "); trying again in " + wait / 1000 + "s.", "bad");
    }
    if (reading === ctl) reading = null;
    if (ctl.signal.aborted && ctl.signal.reason !== "stale") return;
    setLive("reconnecting", "off");
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 10000);
  }
}

function restartFeed() {
  feed?.abort();
  runFeed();
}

// A feed silent for 3s is shown stale, and opened again after staleAfter.
setInterval(() => {
  if (!reading) return;
  const silent = Date.now() - lastSnapshot;
  if (silent > 3000) setLive("stale", "off");
  if (silent > staleAfter && !reading.signal.aborted) reading.abort("stale");
}, 1000);

// --- views ---

function route() {
  stopView();
  stopView = () => {};
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] === "job" ? "job" : parts[0] || "overview";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.view === (view === "job" ? "jobs" : view));
  switch (view) {
  case "overview": {
    const tick = () => {
      overview.health();
      overview.recent().catch((e) => { if (!(e instanceof ApiError && e.status < 500)) flash(e.message, "bad"); });
    };
    tick();
    const t = setInterval(tick, 10000);
    stopView = () => clearInterval(t);
    break;
  }
  case "charts":
    charts.draw();
    break;
  case "jobs":
    if ([...params.keys()].length) jobs.search(params);
    break;
  case "job":
    stopView = jobs.follow(decodeURIComponent(parts.slice(1).join("/")));
    break;
  case "batches":
    batches.show(params.get("id"));
    stopView = batches.stop;
    break;
  case "events":
  case "logs":
    break;
  }
}

jobs.initSearch();
batches.init();
const stopTails = tails.init();
window.addEventListener("hashchange", () => {
  const v = location.hash.replace(/^#\/?/, "").split(/[/?]/)[0];
  if (v !== "events" && v !== "logs") stopTails();
  route();
});
showSignOut();
route();
runFeed();
