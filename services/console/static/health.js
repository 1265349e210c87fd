// The health strip of the list page: one panel per service (readiness, consumer lag,
// errors and dead letters per second) from GET /api/v1/health, refreshed every 5 s.
// A service that does not answer, or is not configured, says so in its own panel.

import { getJson } from "./api.js";
import { el } from "./dom.js";

const HEALTH_EVERY_MS = 5000;
const strip = document.getElementById("health");

/** ok, not-ready, unreachable or not_configured: the panel's colour and its test hook. */
function verdict(service) {
  if (service.status !== "ok") return service.status;
  return service.ready === false ? "not-ready" : "ok";
}

const VERDICT_TEXT = {
  ok: "ready",
  "not-ready": "not ready",
  unreachable: "unreachable",
  not_configured: "not configured",
};

/** A number for a panel: "—" when unknown (no second sample yet, or no such signal). */
function figure(value, digits = 0) {
  if (value === null || value === undefined) return "—";
  return digits ? value.toFixed(digits) : String(Math.round(value));
}

function line(label, value, signal) {
  return el(
    "span",
    { class: "health-figure", "data-signal": signal },
    el("span", { class: "health-label" }, label),
    " ",
    value,
  );
}

function panel(service) {
  const state = verdict(service);
  const body =
    service.status === "ok"
      ? [
          line("lag", figure(service.lag_records), "lag"),
          line("errors/s", figure(service.error_rate, 2), "errors"),
          line("dead letters/s", figure(service.dead_letter_rate, 2), "dead-letters"),
        ]
      : state === "unreachable"
        ? [el("span", { class: "health-message" }, service.message || "")]
        : [];
  return el(
    "li",
    { class: `health-panel health-${state}`, "data-service": service.name, "data-health": state },
    el("span", { class: "health-name" }, service.name),
    el("span", { class: "health-verdict" }, VERDICT_TEXT[state]),
    ...body,
  );
}

async function refresh() {
  try {
    const health = await getJson("/api/v1/health");
    strip.replaceChildren(...health.services.map(panel));
    strip.dataset.source = health.source;
    strip.dataset.status = "ready";
  } catch (error) {
    strip.replaceChildren(el("li", { class: "health-panel health-unreachable" }, error.message));
    strip.dataset.status = "error";
  }
}

if (strip) {
  refresh();
  setInterval(refresh, HEALTH_EVERY_MS);
}
