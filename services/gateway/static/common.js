// What every page shares: JSON calls to the API (the only kind of body it accepts for a change), the
// status line, field errors, password "Show" toggles, log out, and times that tick ("2 min ago").

export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// The API's messages are lower-case phrases; on the page they stand as sentences.
export function sentence(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

export async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError(0, "Cannot reach PickMyClass. Check your connection and try again.", null);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = (data && typeof data.detail === "string" && data.detail) || `Something went wrong (${response.status}).`;
    throw new ApiError(response.status, sentence(detail), response.headers.get("Retry-After"));
  }
  return data;
}

// An HTML fragment of one of our own pages (cards of the dashboard), parsed without running anything.
export async function fragment(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (response.status === 404) throw new ApiError(404, "That is gone.", null);
  if (!response.ok) throw new ApiError(response.status, `Something went wrong (${response.status}).`, null);
  return new DOMParser().parseFromString(await response.text(), "text/html").body;
}

// A session that ended (logged out elsewhere, expired) sends the student to log in again.
export function loggedOut(error) {
  if (error instanceof ApiError && error.status === 401) {
    window.location.assign("/?bye=expired#login");
    return true;
  }
  return false;
}

let clearTimer = null;

// The page's status line (role=status): what a script just did, read out by screen readers.
export function say(text, { error = false } = {}) {
  const box = document.getElementById("status");
  if (!box) return;
  window.clearTimeout(clearTimer);
  // Emptied first, so that the same message twice is announced twice.
  box.textContent = "";
  box.classList.toggle("error", error);
  window.setTimeout(() => { box.textContent = text; }, 50);
  if (!error) clearTimer = window.setTimeout(() => { box.textContent = ""; }, 12000);
}

function errorLine(id) {
  return document.getElementById(`${id}-error`);
}

export function setFieldError(input, message) {
  const line = errorLine(input.id);
  input.setAttribute("aria-invalid", "true");
  if (line) {
    line.textContent = sentence(message);
    line.hidden = false;
  }
}

export function setFormError(form, message) {
  const line = errorLine(form.id);
  line.textContent = sentence(message);
  line.hidden = false;
  line.tabIndex = -1;
  line.focus();
}

export function clearErrors(form) {
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const line of form.querySelectorAll(".field-error, .form-error")) {
    line.textContent = "";
    line.hidden = true;
  }
}

// Shows each (input, message) pair beside its field and moves focus to the first.
export function showFieldErrors(problems) {
  for (const [input, message] of problems) setFieldError(input, message);
  if (problems.length) problems[0][0].focus();
  return problems.length > 0;
}

export function busy(form, on) {
  for (const button of form.querySelectorAll("button[type=submit]")) button.disabled = on;
}

export function ago(iso, now = Date.now()) {
  const seconds = Math.max(0, (now - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  const days = Math.floor(seconds / 86400);
  return `${days} day${days > 1 ? "s" : ""} ago`;
}

// Times rendered by the server tick on: "just now" becomes "1 min ago", and a warning appears once the
// data is older than the server said it may be.
export function tick() {
  const now = Date.now();
  for (const time of document.querySelectorAll("time[data-ago]")) {
    const text = ago(time.dateTime, now);
    if (time.textContent !== text) time.textContent = text;
  }
  for (const warning of document.querySelectorAll("[data-stale-at]")) {
    const stale = new Date(warning.dataset.staleAt).getTime() < now;
    if (warning.hidden === stale) {
      warning.hidden = !stale;
      warning.closest(".card")?.classList.toggle("stale", stale);
    }
  }
}

function wirePasswordToggles() {
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-show-password]");
    if (!button) return;
    const input = document.getElementById(button.dataset.showPassword);
    const show = input.type === "password";
    input.type = show ? "text" : "password";
    button.setAttribute("aria-pressed", String(show));
    button.textContent = show ? "Hide" : "Show";
  });
}

function wireLogout() {
  for (const button of document.querySelectorAll("[data-logout]")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", "/api/v1/auth/logout");
      } catch {
        // Logged out already, or unreachable: the start page says which.
      }
      window.location.assign("/");
    });
  }
}

function wireEmailsOn() {
  for (const button of document.querySelectorAll("[data-emails-on]")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("PATCH", "/api/v1/auth/me", { notifications_enabled: true });
        document.getElementById("emails-off").hidden = true;
        const toggle = document.getElementById("emails-enabled");
        if (toggle) toggle.checked = true;
        say("Emails are on again.");
        document.dispatchEvent(new Event("pmc:emails-changed"));
        document.getElementById("main").focus();
      } catch (error) {
        if (!loggedOut(error)) say(error.message, { error: true });
        button.disabled = false;
      }
    });
  }
}

wirePasswordToggles();
wireLogout();
wireEmailsOn();
tick();
window.setInterval(tick, 15000);
