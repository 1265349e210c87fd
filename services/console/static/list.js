// The task list page: filters kept in the URL (a filtered view can be shared), keyset
// pagination through next_cursor, and live counts by state.

import { getJson, taskPage } from "./api.js";
import { el, formatDuration, formatTime, showStatus, stateBadge } from "./dom.js";

const STATES = ["requested", "submitted", "completed", "failed", "empty", "expired"];
const COUNTS_EVERY_MS = 5000;
const FILTERS = ["state", "since", "until", "q", "has_dead_letters"];
// Kept from the address but not in the form: `limit` (page size) and `cursor` (the page).
const PAGING = ["limit", "cursor"];

const form = document.getElementById("filters");
const table = document.getElementById("tasks");
const status = document.getElementById("status");
const olderButton = document.getElementById("older");
let nextCursor = null;

/** `2026-11-30T20:37:00Z` as the `datetime-local` value of the same instant, local time. */
function toLocalInput(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

/** A `datetime-local` value (local time, no zone) as an ISO instant in UTC. */
function toIso(localValue) {
  return localValue ? new Date(localValue).toISOString() : "";
}

function queryFromUrl() {
  const params = new URLSearchParams(location.search);
  return Object.fromEntries([...FILTERS, ...PAGING].map((key) => [key, params.get(key) || ""]));
}

function fillForm(query) {
  form.elements.state.value = query.state;
  form.elements.since.value = query.since ? toLocalInput(query.since) : "";
  form.elements.until.value = query.until ? toLocalInput(query.until) : "";
  form.elements.q.value = query.q;
  form.elements.has_dead_letters.checked = query.has_dead_letters === "true";
}

function queryFromForm() {
  return {
    state: form.elements.state.value,
    since: toIso(form.elements.since.value),
    until: toIso(form.elements.until.value),
    q: form.elements.q.value.trim(),
    // Unchecked is no filter (every task), not "without dead letters".
    has_dead_letters: form.elements.has_dead_letters.checked ? "true" : "",
    limit: queryFromUrl().limit,
    cursor: "",
  };
}

/** Puts `query` in the address bar (no reload) and loads that page of tasks. */
function navigate(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value) params.set(key, value);
  const search = params.toString();
  history.pushState(null, "", search ? `/?${search}` : "/");
  loadTasks(query);
}

function taskRow(task) {
  const id = task.task_id || task.request_id;
  const link = (text) => el("a", { href: taskPage(id) }, text);
  return el(
    "tr",
    { "data-state": task.state, "data-id": id },
    el("td", { class: "mono" }, task.task_id ? link(task.task_id) : el("span", { class: "muted" }, "—")),
    el("td", { class: "mono" }, task.request_id ? link(task.request_id) : "—"),
    el("td", {}, stateBadge(task.state)),
    el("td", {}, task.origin),
    el("td", { class: "mono" }, formatTime(task.created_at)),
    el("td", { class: "mono" }, formatTime(task.updated_at)),
    el("td", { class: "num" }, task.poll_count),
    el("td", { class: "num" }, task.deliveries),
    el("td", { class: task.dead_letters ? "num dead-letters" : "num" }, task.dead_letters),
  );
}

async function loadTasks(query) {
  table.dataset.status = "loading";
  showStatus(status, "Loading…");
  try {
    const page = await getJson("/api/v1/tasks", query);
    const body = table.tBodies[0];
    body.replaceChildren(...page.tasks.map(taskRow));
    if (!page.tasks.length) {
      body.append(el("tr", { class: "empty" }, el("td", { colSpan: 9 }, "No task matches these filters.")));
    }
    nextCursor = page.next_cursor;
    olderButton.disabled = !nextCursor;
    const where = query.cursor ? "older tasks" : "newest first";
    showStatus(status, `${page.tasks.length} task(s), ${where}.`);
    table.dataset.status = "ready";
  } catch (error) {
    table.tBodies[0].replaceChildren();
    olderButton.disabled = true;
    showStatus(status, `Could not list tasks: ${error.message}`, true);
    table.dataset.status = "error";
  }
}

async function refreshCounts() {
  const list = document.getElementById("counts");
  try {
    const answer = await getJson("/api/v1/counts");
    list.replaceChildren(
      ...STATES.map((state) =>
        el(
          "li",
          {},
          el(
            "a",
            { href: `/?state=${state}`, class: `count state-${state}`, "data-state": state },
            el("span", { class: "count-value" }, answer.counts[state] ?? 0),
            el("span", { class: "count-label" }, state),
          ),
        ),
      ),
    );
    const oldest = answer.oldest_open_seconds;
    document.getElementById("oldest-open").textContent =
      oldest === null ? "No open task." : `Oldest open task: ${formatDuration(oldest)} old.`;
    list.dataset.status = "ready";
  } catch (error) {
    document.getElementById("oldest-open").textContent = `Counts unavailable: ${error.message}`;
    list.dataset.status = "error";
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  navigate(queryFromForm());
});
document.getElementById("filter-reset").addEventListener("click", () => {
  form.reset();
  navigate(queryFromForm());
});
document.getElementById("newest").addEventListener("click", () => navigate({ ...queryFromUrl(), cursor: "" }));
olderButton.addEventListener("click", () => {
  if (nextCursor) navigate({ ...queryFromUrl(), cursor: nextCursor });
});
window.addEventListener("popstate", () => {
  fillForm(queryFromUrl());
  loadTasks(queryFromUrl());
});

fillForm(queryFromUrl());
loadTasks(queryFromUrl());
refreshCounts();
setInterval(refreshCounts, COUNTS_EVERY_MS);
