// The dashboard: add watches (with a preview of a known section), sort and filter, live updates over
// server-sent events, stop watching with undo. Cards are rendered by the server only: after a change the
// page asks for the card (or the list) again as HTML, so a card looks the same however it got here.
import { ApiError, api, busy, clearErrors, fragment, loggedOut, say, setFormError, showFieldErrors, tick } from "./common.js";

const cards = document.getElementById("cards");
const arrangeForm = document.getElementById("arrange");
const addForm = document.getElementById("add-form");
const termSelect = document.getElementById("add-term");
const pasted = document.getElementById("add-text");
const preview = document.getElementById("preview");
const UNDO_MS = 10000;

function arrangement() {
  return new URLSearchParams(new FormData(arrangeForm));
}

function cardOf(id) {
  return document.getElementById(`watch-${id}`);
}

// Where focus was inside the list, to put it back after the list is replaced.
function focusMark() {
  const active = document.activeElement;
  const card = active?.closest?.(".card");
  if (!card || !cards.contains(card)) return null;
  return { id: card.dataset.id, control: active.matches("[data-delete]") ? "[data-delete]" : null };
}

function restoreFocus(mark) {
  if (!mark) return;
  const card = cardOf(mark.id);
  if (!card) return;
  (mark.control ? card.querySelector(mark.control) : card)?.focus();
}

// Refreshes can overlap (a live event while the student adds): only the latest one started is shown.
let listVersion = 0;
// The card to focus once a refresh shows it: one just added, or brought back by undo.
let focusNext = null;

async function refreshList() {
  const version = ++listVersion;
  const body = await fragment(`/dashboard/cards?${arrangement()}`);
  if (version !== listVersion) return;
  // Where focus is now, not when the request left: it may have moved to a new card meanwhile.
  const mark = focusMark();
  cards.replaceChildren(...body.childNodes);
  const wanted = focusNext && cardOf(focusNext);
  if (wanted) {
    focusNext = null;
    wanted.focus();
  } else {
    restoreFocus(mark);
  }
  tick();
}

async function refreshCard(id) {
  if (!cardOf(id)) return;
  const version = listVersion;
  let body;
  try {
    body = await fragment(`/dashboard/cards/${id}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return refreshList();
    throw error;
  }
  const card = body.querySelector(".card");
  const old = cardOf(id);
  // A list refreshed meanwhile has this card as new as this answer, or newer.
  if (!card || !old || version !== listVersion) return;
  const mark = focusMark();
  old.replaceWith(card);
  restoreFocus(mark);
  tick();
}

function reportError(error) {
  if (!loggedOut(error)) say(error.message, { error: true });
}

// ---- Sort and filter: the same GET form works without scripts; with them the list changes in place.

function wireArrange() {
  document.getElementById("arrange-apply").hidden = true;
  arrangeForm.addEventListener("change", async () => {
    const query = arrangement();
    window.history.replaceState(null, "", `/dashboard?${query}`);
    try {
      await refreshList();
      say(document.getElementById("count").textContent.trim());
    } catch (error) {
      reportError(error);
    }
  });
  arrangeForm.addEventListener("submit", (event) => event.preventDefault());
}

// ---- Add: one or several class numbers, or a class search link.

let previewTimer = null;
let previewFor = "";

async function showPreview() {
  const text = pasted.value.trim();
  const term = termSelect.value;
  const key = `${term}/${text}`;
  if (!/^[0-9]{5}$/.test(text)) {
    preview.hidden = true;
    previewFor = "";
    return;
  }
  if (key === previewFor) return;
  previewFor = key;
  let message;
  try {
    const section = await api("GET", `/api/v1/sections/${term}/${text}`);
    const seats = `${section.open_seats} of ${section.enrl_cap} seats open`;
    const when = [section.days, section.start_time && `${section.start_time}–${section.end_time}`].filter(Boolean).join(" ");
    message = [`${section.course} (${text}): ${section.title}`, `${section.instructor_label} · ${when || "time to be announced"} · ${seats}`];
  } catch (error) {
    if (error.status !== 404) return;
    message = [`We have not seen class ${text} in ${termSelect.selectedOptions[0].textContent} yet.`,
      "Add it and we will look it up right away."];
  }
  if (previewFor !== key) return;
  const lines = message.map((line) => Object.assign(document.createElement("p"), { textContent: line }));
  preview.replaceChildren(...lines);
  preview.hidden = false;
}

function schedulePreview() {
  window.clearTimeout(previewTimer);
  previewTimer = window.setTimeout(() => showPreview().catch(reportError), 350);
}

function describeResult(result) {
  const parts = [];
  const names = result.added.map((watch) => (watch.section ? `${watch.section.course} (${watch.class_nbr})` : watch.class_nbr));
  if (names.length === 1) parts.push(`Watching ${names[0]}. We'll look it up right away.`);
  else if (names.length > 1) parts.push(`Watching ${names.length} more sections: ${names.join(", ")}.`);
  if (result.already.length) parts.push(`Already watching ${result.already.join(", ")}.`);
  return parts.join(" ");
}

function wireAdd() {
  pasted.addEventListener("input", schedulePreview);
  termSelect.addEventListener("change", schedulePreview);
  addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(addForm);
    if (!pasted.value.trim()) {
      showFieldErrors([[pasted, "Paste a 5-digit class number, several, or a class search link."]]);
      return;
    }
    busy(addForm, true);
    let result;
    try {
      result = await api("POST", "/api/v1/watches/bulk", { term: termSelect.value, text: pasted.value });
    } catch (error) {
      busy(addForm, false);
      if (loggedOut(error)) return;
      const aboutTerm = /term|has ended|not open for watches/i.test(error.message);
      if (error.status === 422) showFieldErrors([[aboutTerm ? termSelect : pasted, error.message]]);
      else setFormError(addForm, error.message);
      return;
    }
    busy(addForm, false);
    if (result.errors.length) {
      const problems = result.errors.map((problem) => `${problem.input}: ${problem.message}`).join("; ");
      showFieldErrors([[pasted, `Not added: ${problems}.`]]);
      pasted.value = result.errors.map((problem) => problem.input).join(" ");
    } else {
      pasted.value = "";
      preview.hidden = true;
      previewFor = "";
    }
    if (result.added.length) {
      // A new card may not match the filter: show everything, so it can be seen.
      arrangeForm.elements.show.value = "all";
      window.history.replaceState(null, "", `/dashboard?${arrangement()}`);
      focusNext = String(result.added[0].id);
      await refreshList().catch(reportError);
    }
    const text = describeResult(result);
    if (text) say(text);
  });
}

// ---- Stop watching, with undo.

let undoTimer = null;
let undoWatch = null;
const undoBox = document.getElementById("undo");
const undoButton = document.getElementById("undo-button");

function hideUndo() {
  window.clearTimeout(undoTimer);
  undoBox.hidden = true;
  undoWatch = null;
}

function armUndo() {
  window.clearTimeout(undoTimer);
  undoTimer = window.setTimeout(() => {
    // Not while the student is about to press it.
    if (undoBox.contains(document.activeElement)) armUndo();
    else hideUndo();
  }, UNDO_MS);
}

async function stopWatching(card) {
  const watch = {
    id: card.dataset.id,
    term: card.dataset.term,
    class_nbr: card.dataset.classNbr,
    name: card.dataset.name,
    alerts: JSON.parse(card.dataset.alerts),
  };
  const button = card.querySelector("[data-delete]");
  button.disabled = true;
  try {
    await api("DELETE", `/api/v1/watches/${watch.id}`);
  } catch (error) {
    button.disabled = false;
    if (error.status === 404) return refreshList();
    return reportError(error);
  }
  const item = card.closest("li");
  (item || card).remove();
  undoWatch = watch;
  document.getElementById("undo-text").textContent = `Stopped watching ${watch.name}.`;
  undoBox.hidden = false;
  undoButton.focus();
  say(`Stopped watching ${watch.name}. Undo is available for a few seconds.`);
  armUndo();
  refreshList().catch(reportError);
}

async function undo() {
  const watch = undoWatch;
  if (!watch) return;
  undoButton.disabled = true;
  try {
    const again = await api("POST", "/api/v1/watches", { term: watch.term, class_nbr: watch.class_nbr });
    // The alerts chosen for the watch come back with it.
    await api("PATCH", `/api/v1/watches/${again.id}`, { alerts: watch.alerts });
    hideUndo();
    focusNext = String(again.id);
    await refreshList();
    say(`Watching ${watch.name} again.`);
  } catch (error) {
    reportError(error);
  } finally {
    undoButton.disabled = false;
  }
}

function wireDelete() {
  cards.addEventListener("click", (event) => {
    const button = event.target.closest("[data-delete]");
    if (button) stopWatching(button.closest(".card"));
  });
  undoButton.addEventListener("click", undo);
}

// ---- Live updates.

const live = document.getElementById("live");
const liveText = document.getElementById("live-text");

function setLive(on) {
  live.dataset.state = on ? "on" : "off";
  liveText.textContent = on ? "Live" : "Reconnecting…";
}

function openEvents() {
  const source = new EventSource("/api/v1/events");
  // After every (re)connect the list is reloaded: updates missed while disconnected are not replayed.
  source.addEventListener("ready", () => {
    setLive(true);
    refreshList().catch(reportError);
  });
  source.addEventListener("watches", () => refreshList().catch(reportError));
  source.addEventListener("section", (event) => {
    const update = JSON.parse(event.data);
    for (const card of cards.querySelectorAll(".card")) {
      if (card.dataset.term === update.term && card.dataset.classNbr === update.class_nbr) {
        refreshCard(card.dataset.id).catch(reportError);
      }
    }
  });
  source.addEventListener("error", () => {
    setLive(false);
    // Closed for good (logged out, or refused): find out whether the session is still there.
    if (source.readyState === EventSource.CLOSED) api("GET", "/api/v1/auth/me").catch(loggedOut);
  });
  window.addEventListener("pagehide", () => source.close());
}

wireArrange();
wireAdd();
wireDelete();
openEvents();
document.addEventListener("pmc:emails-changed", () => refreshList().catch(reportError));
if (document.getElementById("welcome")) window.history.replaceState(null, "", `/dashboard?${arrangement()}`);
