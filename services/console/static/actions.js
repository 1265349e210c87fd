// The operator's actions on a task page: Replay, and Redrive when the task has dead letters
// (neither on a read-only console). Each asks for confirmation on the page itself, sends
// the action, and says what happened. The server decides who may act: a refusal shows its
// message, never a silent failure.

import { ApiError, getJson, postJson, taskApi } from "./api.js";

const section = document.getElementById("actions");
const outcome = document.getElementById("action-status");

function show(state, text) {
  outcome.dataset.status = state;
  outcome.classList.toggle("error", state === "refused" || state === "error");
  outcome.textContent = text;
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

const ACTIONS = {
  replay: {
    pending: "Replaying…",
    failed: "Replay failed",
    done: (result) => {
      const shas = result.bodies.map((sha) => sha.slice(0, 12)).join(", ");
      return `Replayed ${plural(result.replayed, "archived body", "archived bodies")} (${shas}) onto the callbacks topic.`;
    },
  },
  redrive: {
    pending: "Redriving…",
    failed: "Redrive failed",
    done: (result) => {
      const sent = result.redriven.map((letter) => `${letter.dlq} → ${letter.source_topic}`);
      const skipped = result.skipped.map((letter) => `${letter.dlq}: ${letter.code} (${letter.message})`);
      let text = `Redrove ${plural(sent.length, "dead letter", "dead letters")}`;
      text += sent.length ? ` (${sent.join(", ")}).` : ".";
      if (skipped.length) text += ` Skipped ${skipped.length}: ${skipped.join("; ")}.`;
      return text;
    },
  },
};

async function act(name, taskId, button) {
  const texts = ACTIONS[name];
  document.getElementById(`${name}-confirm`).hidden = true;
  button.disabled = true;
  show("pending", texts.pending);
  try {
    show("done", texts.done(await postJson(taskApi(taskId, `/${name}`))));
  } catch (error) {
    const refused = error instanceof ApiError && [401, 403].includes(error.status);
    show(refused ? "refused" : "error", `${refused ? "Refused" : texts.failed}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

/** Wires the button `#<name>` and its confirmation `#<name>-confirm`, then shows it. */
function offer(name, taskId) {
  const button = document.getElementById(name);
  const confirmBox = document.getElementById(`${name}-confirm`);
  button.addEventListener("click", () => {
    for (const other of section.querySelectorAll(".confirm")) other.hidden = true;
    confirmBox.hidden = false;
    show("confirming", "");
  });
  document.getElementById(`${name}-no`).addEventListener("click", () => {
    confirmBox.hidden = true;
    show("idle", "");
  });
  document.getElementById(`${name}-yes`).addEventListener("click", () => act(name, taskId, button));
  button.hidden = false;
}

/** Offers the actions on `task` (its id `taskId`) when the console takes them. */
export async function setupActions(taskId, task) {
  let info;
  try {
    info = await getJson("/api/v1/console");
  } catch {
    return; // an older console, or one away: no action offered
  }
  if (info.read_only) return;
  offer("replay", taskId);
  if (task.dead_letters > 0) offer("redrive", taskId);
  section.hidden = false;
}
