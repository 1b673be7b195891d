// The API of the same origin: JSON calls, and streams read with fetch
// (EventSource cannot send the Authorization header, and the token is
// never put in a URL).

const tokenKey = "conductor.token";

export function token() { return sessionStorage.getItem(tokenKey) || ""; }
export function setToken(t) { t ? sessionStorage.setItem(tokenKey, t) : sessionStorage.removeItem(tokenKey); }

// onAuth is called with the ApiError of every 401 and 403, so that the page
// can ask for a token or say which role is needed.
let onAuth = () => {};
export function setOnAuth(f) { onAuth = f; }

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

// fail makes the ApiError of a response that is not ok, from its
// {"error":…} body when it has one.
async function fail(resp, path) {
  let msg = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) msg = body.error;
  } catch { /* not JSON: keep the status */ }
  const err = new ApiError(resp.status, msg, path);
  if (resp.status === 401 || resp.status === 403) onAuth(err);
  return err;
}

// call sends method path with body (JSON-encoded unless undefined) and
// returns the decoded answer.
export async function call(method, path, body) {
  const init = {method, headers: headers(body === undefined ? {} : {"Content-Type": "application/json"}), cache: "no-store"};
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await fail(resp, path);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

// lines reads the body of a streaming GET path line by line, calling
// onLine(line) for each, until signal aborts or the stream ends; it throws
// the ApiError of an answer that is not ok. onOpen, if given, is called
// once the answer's head has come (the server has subscribed).
export async function lines(path, onLine, signal, onOpen) {
  const resp = await fetch(path, {headers: headers({}), signal, cache: "no-store"});
  if (!resp.ok) throw await fail(resp, path);
  onOpen?.();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, "");
      buf = buf.slice(i + 1);
      onLine(line);
    }
  }
  if (buf) onLine(buf);
}

// sse reads a Server-Sent Events stream at path, calling onEvent(name,
// data) for each event (name "message" when it has no event: line).
export function sse(path, onEvent, signal, onOpen) {
  let name = "", data = [];
  return lines(path, (line) => {
    if (line === "") {
      if (data.length) onEvent(name || "message", data.join("\n"));
      name = ""; data = [];
    } else if (line.startsWith(":")) {
      // a comment: keep-alive
    } else if (line.startsWith("event:")) {
      name = line.slice(6).trim();
    } else if (line.startsWith("data:")) {
      data.push(line.slice(5).replace(/^ /, ""));
    }
  }, signal, onOpen);
}

// ndjson reads a stream of JSON lines at path, calling onRecord(obj) for
// each; blank lines are keep-alives.
export function ndjson(path, onRecord, signal, onOpen) {
  return lines(path, (line) => {
    if (line.trim() === "") return;
    try { onRecord(JSON.parse(line)); } catch { onRecord({error: "not JSON: " + line}); }
  }, signal, onOpen);
}
