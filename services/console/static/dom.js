// DOM building without innerHTML: every value from the API lands as text, never as markup.

/** Creates `<tag>` with properties (`class`, `data-*`, any DOM property) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** An ISO timestamp as UTC `YYYY-MM-DD HH:MM:SSZ` (the logs' clock), "—" when absent. */
export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 19).replace("T", " ")}Z`;
}

/** A duration in seconds as `1h 02m`, `3m 04s` or `12.3s`. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

/** A state badge: its colour comes from the stylesheet's `.state-<name>` class. */
export function stateBadge(state) {
  return el("span", { class: `badge state-${state}`, "data-state": state }, state);
}

/** Shows `message` in the page's status line, as an error when `isError`. */
export function showStatus(node, message, isError = false) {
  node.textContent = message;
  node.classList.toggle("error", isError);
}
