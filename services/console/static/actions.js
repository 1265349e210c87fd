// The operator's actions on a task page: a Replay button (unless the console is read-only)
// that asks for confirmation on the page itself, sends the action, and says what happened.
// The server decides who may act: a refusal shows its message, never a silent failure.

import { ApiError, getJson, postJson, taskApi } from "./api.js";

const section = document.getElementById("actions");
const replayButton = document.getElementById("replay");
const confirmBox = document.getElementById("replay-confirm");
const outcome = document.getElementById("action-status");

function show(state, text) {
  outcome.dataset.status = state;
  outcome.classList.toggle("error", state === "refused" || state === "error");
  outcome.textContent = text;
}

async function replay(taskId) {
  confirmBox.hidden = true;
  replayButton.disabled = true;
  show("pending", "Replaying…");
  try {
    const result = await postJson(taskApi(taskId, "/replay"));
    const shas = result.bodies.map((sha) => sha.slice(0, 12)).join(", ");
    show("done", `Replayed ${result.replayed} archived bod${result.replayed === 1 ? "y" : "ies"} (${shas}) onto the callbacks topic.`);
  } catch (error) {
    const refused = error instanceof ApiError && [401, 403].includes(error.status);
    show(refused ? "refused" : "error", `${refused ? "Refused" : "Replay failed"}: ${error.message}`);
  } finally {
    replayButton.disabled = false;
  }
}

/** Offers the actions on task `taskId` when the console takes them (not read-only). */
export async function setupActions(taskId) {
  let info;
  try {
    info = await getJson("/api/v1/console");
  } catch {
    return; // an older console, or one away: no action offered
  }
  if (info.read_only) return;
  replayButton.addEventListener("click", () => {
    confirmBox.hidden = false;
    show("confirming", "");
  });
  document.getElementById("replay-no").addEventListener("click", () => {
    confirmBox.hidden = true;
    show("idle", "");
  });
  document.getElementById("replay-yes").addEventListener("click", () => replay(taskId));
  section.hidden = false;
}
