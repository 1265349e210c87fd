// One task's page: its header and timeline, its instruments, and its notes as a piano roll
// that plays in the browser. The task id comes from the address (/tasks/<id>).

import { setupActions } from "./actions.js";
import { ApiError, getJson, taskApi } from "./api.js";
import { el, formatTime, showStatus, stateBadge } from "./dom.js";
import { PianoRoll } from "./pianoroll.js";
import { Player } from "./player.js";

const page = document.getElementById("task-page");
const status = document.getElementById("status");
const taskId = decodeURIComponent(location.pathname.replace(/^\/tasks\//, ""));

/** The header fields worth showing, in order: [label, value from the task]. */
const FIELDS = [
  ["Task id", (t) => t.task_id],
  ["Request id", (t) => t.request_id],
  ["Origin", (t) => t.origin],
  ["Source task id", (t) => t.source_task_id],
  ["Audio id", (t) => t.audio_id],
  ["Submit outcome", (t) => t.submit_outcome && `${t.submit_outcome}${t.submit_reason ? ` (${t.submit_reason})` : ""}`],
  ["Created", (t) => formatTime(t.created_at)],
  ["Updated", (t) => formatTime(t.updated_at)],
  ["Next poll", (t) => t.next_poll_at && formatTime(t.next_poll_at)],
  ["Polls", (t) => t.poll_count],
  ["Deliveries", (t) => t.deliveries],
  ["Dead letters", (t) => t.dead_letters],
];

function showSummary(task) {
  document.title = `${task.task_id || task.request_id} · MIDI console`;
  document.getElementById("task-title").textContent = task.task_id || task.request_id;
  document.getElementById("task-state").replaceChildren(stateBadge(task.state));
  const fields = FIELDS.map(([label, value]) => [label, value(task)]).filter(([, v]) => v !== null && v !== undefined && v !== "");
  document.getElementById("task-fields").replaceChildren(
    ...fields.flatMap(([label, value]) => [el("dt", {}, label), el("dd", { class: "mono" }, value)]),
  );
  document.getElementById("download-midi").href = taskApi(taskId, "/midi");
  document.getElementById("download-raw").href = taskApi(taskId, "/raw");
  document.getElementById("summary").hidden = false;
}

/** The quantized file and the audio preview exist only where the processor makes them. */
function showOptionalFiles(files) {
  if (files.quantized) {
    const link = document.getElementById("download-quantized");
    link.href = taskApi(taskId, "/quantized");
    link.hidden = false;
  }
  if (files.preview) {
    document.getElementById("preview").src = taskApi(taskId, "/preview");
    document.getElementById("preview-row").hidden = false;
  }
}

function showTimeline(events) {
  const list = document.getElementById("timeline");
  list.replaceChildren(
    ...events.map((event) =>
      el(
        "li",
        { class: `event kind-${event.kind}`, "data-kind": event.kind },
        el("time", { class: "mono", dateTime: event.at }, formatTime(event.at)),
        el("span", { class: "badge" }, event.kind.replace("_", " ")),
        el("span", { class: "event-summary" }, event.summary),
        event.kind === "replay" ? replayBodies(event.detail) : null,
        Object.keys(event.detail || {}).length ? el("code", { class: "event-detail" }, JSON.stringify(event.detail)) : null,
      ),
    ),
  );
  if (!events.length) list.append(el("li", { class: "muted" }, "No event recorded."));
  document.getElementById("timeline-section").hidden = false;
}

// A replay's bodies, each with what the processor made of it (or that it has not yet).
function replayBodies(detail) {
  return el(
    "ul",
    { class: "replay-bodies" },
    ...detail.bodies.map((body) => {
      const r = body.rendering;
      const outcome = r
        ? `${r.state}, ${r.note_count} notes, ${r.midi_written ? "MIDI written" : "MIDI unchanged"}`
        : "not rendered yet";
      return el(
        "li",
        { "data-rendered": r ? "true" : "false" },
        el("span", { class: "mono" }, body.body_sha256.slice(0, 12)),
        ` → ${outcome}`,
      );
    }),
  );
}

function showInstruments(doc, roll) {
  document.getElementById("instruments").replaceChildren(
    ...doc.instruments.map((instrument, index) =>
      el(
        "tr",
        {},
        el("td", {}, el("span", { class: "swatch", "data-index": index }), instrument.name),
        el("td", { class: "num" }, instrument.program),
        el("td", { class: "num" }, instrument.channel + 1),
        el("td", {}, instrument.is_drum ? "drums" : "melodic"),
        el("td", { class: "num" }, instrument.note_count),
      ),
    ),
  );
  const dropped = Object.entries(doc.dropped_notes);
  document.getElementById("dropped").replaceChildren(
    ...(dropped.length
      ? dropped.map(([reason, n]) => el("tr", {}, el("td", { class: "mono" }, reason), el("td", { class: "num" }, n)))
      : [el("tr", {}, el("td", { colSpan: 2, class: "muted" }, "None: every note was kept."))]),
  );
  for (const swatch of document.querySelectorAll(".swatch[data-index]")) {
    swatch.style.backgroundColor = roll.instruments[Number(swatch.dataset.index)].color;
  }
  document.getElementById("instruments-section").hidden = false;
}

function laneToggles(roll, player) {
  document.getElementById("lanes").replaceChildren(
    ...roll.instruments.map((instrument, index) => {
      const box = el("input", { type: "checkbox", checked: true, "data-index": index });
      box.addEventListener("change", () => {
        roll.setVisible(index, box.checked);
        if (player.state === "playing") startPlayback(roll, player, player.position());
      });
      const swatch = el("span", { class: "swatch" });
      swatch.style.backgroundColor = instrument.color;
      return el("li", {}, el("label", {}, box, swatch, `${instrument.name} (${instrument.notes.length})`));
    }),
  );
}

function startPlayback(roll, player, from) {
  const visible = roll.instruments
    .map((instrument, index) => ({ ...instrument, index }))
    .filter((instrument) => instrument.visible);
  return player.play(visible, from, roll.duration);
}

function showRoll(doc) {
  const canvas = document.getElementById("roll");
  const clock = document.getElementById("clock");
  const playButton = document.getElementById("play");
  const roll = new PianoRoll(canvas, document.getElementById("roll-scroll"), document.getElementById("roll-spacer"), doc);
  const tick = (follow) => {
    const seconds = player.position();
    roll.setCursor(seconds, follow);
    clock.dataset.cursorSeconds = seconds.toFixed(3);
    clock.textContent = `${seconds.toFixed(2)} s / ${roll.duration.toFixed(2)} s`;
  };
  const animate = () => {
    tick(true);
    if (player.state === "playing") requestAnimationFrame(animate);
  };
  const player = new Player((state) => {
    playButton.dataset.state = state;
    playButton.textContent = state === "playing" ? "Stop" : "Play";
    if (state === "playing") requestAnimationFrame(animate);
    else tick(false);
  });
  playButton.disabled = false;
  playButton.addEventListener("click", () => {
    if (player.state === "playing") player.stop();
    else startPlayback(roll, player, player.position()).catch((error) => showStatus(status, `Playback failed: ${error.message}`, true));
  });
  canvas.addEventListener("click", (event) => {
    if (player.state === "playing") return;
    player.seek(Math.min(roll.duration, roll.timeAtX(event.clientX - canvas.getBoundingClientRect().left)));
    tick(false);
  });
  document.getElementById("zoom-in").addEventListener("click", () => roll.zoom(1.5));
  document.getElementById("zoom-out").addEventListener("click", () => roll.zoom(1 / 1.5));
  document.getElementById("zoom-fit").addEventListener("click", () => roll.fit());
  laneToggles(roll, player);
  tick(false);
  return roll;
}

/** The file's tempo beside the roll: estimated, or the default and why. */
function showTempo(tempo) {
  const element = document.getElementById("tempo");
  if (!tempo) return;
  element.hidden = false;
  element.dataset.estimated = String(tempo.estimated);
  element.textContent = tempo.estimated
    ? `${tempo.bpm.toFixed(1)} BPM, ${tempo.bars.length} bar(s)`
    : `${tempo.bpm.toFixed(0)} BPM (not estimated: ${tempo.reason.replaceAll("_", " ")})`;
}

async function loadNotes() {
  const section = document.getElementById("roll-section");
  section.hidden = false;
  try {
    const doc = await getJson(taskApi(taskId, "/notes"));
    const count = doc.instruments.reduce((n, i) => n + i.notes.length, 0);
    document.getElementById("roll-status").textContent =
      `${count} note(s) in ${doc.instruments.length} instrument(s), ${doc.duration_seconds.toFixed(2)} s, from body ${doc.body_sha256.slice(0, 12)}…`;
    showTempo(doc.tempo);
    showInstruments(doc, showRoll(doc));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    document.getElementById("roll-status").textContent = `No notes: ${error.message}`;
    document.getElementById("roll-scroll").hidden = true;
  }
}

async function main() {
  try {
    const { task, timeline, files } = await getJson(taskApi(taskId));
    showSummary(task);
    showOptionalFiles(files);
    showTimeline(timeline);
    await setupActions(taskId, task);
    await loadNotes();
    showStatus(status, "");
    page.dataset.status = "ready";
  } catch (error) {
    const what = error instanceof ApiError && error.status === 404 ? "No such task" : "Could not load the task";
    showStatus(status, `${what}: ${error.message}`, true);
    page.dataset.status = "error";
  }
}

main();
