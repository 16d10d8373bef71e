"use strict";
// PickMyClass page: talks to /api/v1 with JSON only (the server's CSRF rule), updates cards live over SSE.

const $ = (selector) => document.querySelector(selector);
const state = { user: null, watches: new Map(), events: null };

function showMessage(text, ok = false) {
  const box = $("#message");
  // The API's messages are lower-case phrases; on the page they stand as sentences.
  box.textContent = text ? text[0].toUpperCase() + text.slice(1) : "";
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error("Cannot reach PickMyClass. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && data.detail) || `Request failed (${response.status})`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function timeAgo(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

function seatClass(section) {
  if (!section || !section.found) return "";
  if (section.open_seats <= 0) return "full";
  return section.reserved_seats ? "maybe" : "open";
}

function instructorNodes(section) {
  const links = new Map(section.instructor_links.map((link) => [link.name, link.url]));
  if (section.instructors.length === 0) return [section.instructor_label];
  const nodes = [];
  section.instructors.forEach((name, index) => {
    if (index > 0) nodes.push(", ");
    const url = links.get(name);
    nodes.push(url ? element("a", { href: url, target: "_blank", rel: "noopener" }, name) : name);
  });
  return nodes;
}

// Watches whose section is no longer checked: what the card says in place of seats.
const NOT_CHECKED = {
  gone: "No longer listed: we stopped checking",
  ended: "Term ended: no longer checked",
};

function renderCard(watch) {
  const section = watch.section;
  const stopped = NOT_CHECKED[watch.status];
  // No seat colour for a section no longer checked: its last counts are not news.
  const colour = stopped ? "" : seatClass(section);
  const card = element("article", { class: `card ${colour}`, "data-id": String(watch.id) });
  if (!section) {
    card.append(
      element("h3", {}, `Class ${watch.class_nbr}`),
      element("p", { class: "meta" }, watch.term_label),
      element("p", { class: "seats" },
        stopped || (watch.status === "not_found" ? "No such section in this term" : "Looking it up…")),
    );
  } else {
    const when = [section.days, section.start_time && `${section.start_time}–${section.end_time}`]
      .filter(Boolean).join(" ");
    let seats = `${section.open_seats} of ${section.enrl_cap} open`;
    if (stopped) seats = stopped;
    else if (!section.found) seats = "Not found in this term";
    else if (section.open_seats > 0 && section.reserved_seats) seats += " (some may be reserved)";
    card.append(
      element("h3", {}, `${section.course} · ${watch.class_nbr}`),
      element("p", { class: "title" }, section.title),
      element("p", { class: "meta" }, `${watch.term_label} · Section ${section.section || "—"}`),
      element("p", { class: "meta" }, "Instructor: ", ...instructorNodes(section)),
      element("p", { class: "seats" }, seats),
      element("p", { class: "meta" }, [when, section.location].filter(Boolean).join(" · ") || "Time TBA"),
      element("p", { class: "meta", title: section.last_checked }, `Last checked ${timeAgo(section.last_checked)}`),
    );
  }
  const remove = element("button", { type: "button" }, "Delete");
  remove.addEventListener("click", () => deleteWatch(watch.id, remove));
  card.append(element("div", { class: "row" },
    element("a", { href: watch.catalog_url, target: "_blank", rel: "noopener" }, "Open in ASU catalog"), remove));
  return card;
}

function renderWatches() {
  const list = $("#watches");
  list.replaceChildren(...[...state.watches.values()].map(renderCard));
  $("#empty").hidden = state.watches.size > 0;
}

async function loadWatches() {
  const watches = await api("GET", "/api/v1/watches");
  state.watches = new Map(watches.map((watch) => [watch.id, watch]));
  renderWatches();
}

function applySectionUpdate(update) {
  for (const watch of state.watches.values()) {
    if (watch.term === update.term && watch.class_nbr === update.class_nbr) {
      // A term that ended stays ended; a retired section stays retired until it is found again.
      if (watch.status !== "ended" && (update.found || watch.status !== "gone")) {
        watch.status = update.found ? "found" : "not_found";
      }
      if (update.section) watch.section = update.section;
      else if (watch.section) watch.section = { ...watch.section, found: update.found, last_checked: update.checked_at };
      const old = document.querySelector(`.card[data-id="${watch.id}"]`);
      if (old) old.replaceWith(renderCard(watch));
    }
  }
}

function setLive(on) {
  const badge = $("#live-status");
  badge.textContent = on ? "live" : "offline";
  badge.className = `live ${on ? "on" : "off"}`;
}

function openEvents() {
  closeEvents();
  const source = new EventSource("/api/v1/events");
  state.events = source;
  // After every (re)connect the list is reloaded: updates missed while disconnected are not replayed.
  source.addEventListener("ready", () => { setLive(true); loadWatches().catch((e) => showMessage(e.message)); });
  source.addEventListener("watches", () => loadWatches().catch((e) => showMessage(e.message)));
  source.addEventListener("section", (event) => applySectionUpdate(JSON.parse(event.data)));
  source.addEventListener("error", () => setLive(false));
}

function closeEvents() {
  if (state.events) state.events.close();
  state.events = null;
  setLive(false);
}

function showEmailState(user) {
  const off = Boolean(user) && !user.notifications_enabled;
  $("#emails-off").hidden = !off;
}

async function showUser(user) {
  state.user = user;
  showEmailState(user);
  $("#auth").hidden = Boolean(user);
  $("#dashboard").hidden = !user;
  $("#account").hidden = !user;
  if (user) {
    $("#account-email").textContent = user.email;
    await loadWatches();
    openEvents();
  } else {
    closeEvents();
    state.watches.clear();
  }
}

async function deleteWatch(id, button) {
  button.disabled = true;
  try {
    await api("DELETE", `/api/v1/watches/${id}`);
    state.watches.delete(id);
    renderWatches();
    showMessage("");
  } catch (error) {
    button.disabled = false;
    showMessage(error.message);
  }
}

async function loadTerms() {
  const select = $("#term-select");
  const terms = await api("GET", "/api/v1/terms");
  select.replaceChildren(
    ...terms.map((term) => element("option", { value: term.code }, `${term.label} (${term.code})`)),
    element("option", { value: "other" }, "Other term code…"),
  );
  select.addEventListener("change", () => { $("#term-other-label").hidden = select.value !== "other"; });
}

function wireEmailToggle() {
  $("#emails-on").addEventListener("click", async () => {
    try {
      state.user = await api("PATCH", "/api/v1/auth/me", { notifications_enabled: true });
      showEmailState(state.user);
      showMessage("Emails are on again.", true);
    } catch (error) {
      showMessage(error.message);
    }
  });
}

function wireForms() {
  $("#auth-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const action = event.submitter ? event.submitter.value : "login";
    const body = { email: form.email.value.trim(), password: form.password.value };
    $("#unverified").hidden = true;
    try {
      const answer = await api("POST", `/api/v1/auth/${action}`, body);
      form.password.value = "";
      if (action === "register") {
        // 202 whether the address is new or taken: the inbox says which, never the page.
        showMessage(`${answer.message}. We wrote to ${body.email}.`, true);
        return;
      }
      showMessage("", true);
      await showUser(answer);
    } catch (error) {
      showMessage(error.message);
      // The password was right, but the address was never verified: offer a new link.
      if (error.status === 403) $("#unverified").hidden = false;
    }
  });

  $("#resend").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const answer = await api("POST", "/api/v1/auth/verification/resend", { email: $("#auth-form").email.value.trim() });
      showMessage(answer.message, true);
      $("#unverified").hidden = true;
    } catch (error) {
      showMessage(error.message);
    } finally {
      button.disabled = false;
    }
  });

  $("#show-forgot").addEventListener("click", () => showForgot($("#forgot").hidden));

  $("#forgot-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      const answer = await api("POST", "/api/v1/auth/password/forgot", { email: form.email.value.trim() });
      showMessage(answer.message, true);
      showForgot(false);
    } catch (error) {
      showMessage(error.message);
    }
  });

  $("#watch-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const term = form.term.value === "other" ? form.term_other.value.trim() : form.term.value;
    try {
      const watch = await api("POST", "/api/v1/watches", { term, class_nbr: form.class_nbr.value.trim() });
      state.watches.set(watch.id, watch);
      renderWatches();
      form.class_nbr.value = "";
      showMessage(`Watching class ${watch.class_nbr}. We'll look it up right away.`, true);
    } catch (error) {
      if (error.status === 401) await showUser(null);
      showMessage(error.message);
    }
  });

  $("#logout").addEventListener("click", async () => {
    try {
      await api("POST", "/api/v1/auth/logout");
    } catch (error) {
      showMessage(error.message);
    }
    await showUser(null);
  });
}

function showForgot(open) {
  $("#forgot").hidden = !open;
  $("#show-forgot").setAttribute("aria-expanded", String(open));
  if (open) {
    const forgot = $("#forgot-form").email;
    if (!forgot.value) forgot.value = $("#auth-form").email.value.trim();
    forgot.focus();
  }
}

// What the emailed links leave in the address: `/?verified=1` after a verification link logged the student
// in, `/#forgot` from "someone tried to register with your address". Read once, then cleared, so a reload
// does not repeat it.
function readArrival() {
  const verified = new URLSearchParams(window.location.search).get("verified") === "1";
  const forgot = window.location.hash === "#forgot";
  if (verified || forgot) window.history.replaceState(null, "", "/");
  return { verified, forgot };
}

async function start() {
  const arrival = readArrival();
  wireForms();
  wireEmailToggle();
  try {
    await loadTerms();
  } catch (error) {
    showMessage(error.message);
  }
  let user = null;
  try {
    user = await api("GET", "/api/v1/auth/me");
  } catch (error) {
    if (error.status !== 401) showMessage(error.message);
  }
  try {
    await showUser(user);
  } catch (error) {
    showMessage(error.message);
  }
  if (user && arrival.verified) showMessage("Your email address is verified. Add a class number to start watching.", true);
  if (!user && arrival.forgot) showForgot(true);
}

document.addEventListener("DOMContentLoaded", start);
