// The console's API in one place: every page fetches through getJson (reads) and postJson
// (actions), so an error answer always surfaces as an ApiError carrying the server's own
// code and message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Fetches `path` (with `params` as its query, empty values left out) and parses its JSON. */
export async function getJson(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, value);
  }
  const search = query.toString();
  const url = search ? `${path}?${search}` : path;
  return request(url, { headers: { Accept: "application/json" } });
}

/**
 * POSTs `body` as JSON to `path` (an action) and parses the answer. Same-origin
 * credentials go along: basic-auth ones the browser holds, or asks for on a 401 challenge.
 */
export async function postJson(path, body = {}) {
  return request(path, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
}

async function request(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, "unreachable", `the console did not answer (${error.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.error;
    throw new ApiError(
      response.status,
      detail ? detail.code : "http_error",
      detail ? detail.message : `HTTP ${response.status} from ${url}`,
    );
  }
  return body;
}

/** The API path of one task (a provider task id or one of our request ids). */
export function taskApi(id, suffix = "") {
  return `/api/v1/tasks/${encodeURIComponent(id)}${suffix}`;
}

/** The page of one task. */
export function taskPage(id) {
  return `/tasks/${encodeURIComponent(id)}`;
}
