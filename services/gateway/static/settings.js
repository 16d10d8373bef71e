// Settings: every switch saves at once through the API; the account can be deleted after a password.
import { api, busy, clearErrors, loggedOut, say, setFormError, showFieldErrors } from "./common.js";

const LABELS = {
  seat_opened: "a seat opens",
  instructor_changed: "the instructor changes",
  closed_again: "the seat is gone again",
  waitlist_opened: "the waitlist has room",
};

// Saves one switch; puts it back and says why when the API refuses.
async function save(input, call, done) {
  input.disabled = true;
  try {
    await call();
    say(done);
  } catch (error) {
    input.checked = !input.checked;
    if (!loggedOut(error)) say(error.message, { error: true });
  } finally {
    input.disabled = false;
    input.focus();
  }
}

function wireEmails() {
  const toggle = document.getElementById("emails-enabled");
  toggle.addEventListener("change", () => {
    const on = toggle.checked;
    save(toggle, () => api("PATCH", "/api/v1/auth/me", { notifications_enabled: on }),
      on ? "Emails are on: we'll tell you when seats open." : "Emails are off: we will send you no alerts.");
    const banner = document.getElementById("emails-off");
    if (banner && on) banner.hidden = true;
  });
}

function wireAlerts() {
  for (const input of document.querySelectorAll("#defaults input[data-kind]")) {
    input.addEventListener("change", () => {
      const kind = input.dataset.kind;
      save(input, () => api("PATCH", "/api/v1/me/alerts", { [kind]: input.checked }),
        `New watches will ${input.checked ? "" : "not "}email you when ${LABELS[kind]}.`);
    });
  }
  for (const group of document.querySelectorAll("fieldset[data-watch]")) {
    const name = group.querySelector("legend").textContent.split(" · ")[0];
    for (const input of group.querySelectorAll("input[data-kind]")) {
      input.addEventListener("change", () => {
        const kind = input.dataset.kind;
        save(input, () => api("PATCH", `/api/v1/watches/${group.dataset.watch}`, { alerts: { [kind]: input.checked } }),
          `${name}: ${input.checked ? "we'll" : "we won't"} email you when ${LABELS[kind]}.`);
      });
    }
  }
}

function wireSessions() {
  const button = document.getElementById("logout-everywhere");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", "/api/v1/auth/logout-everywhere");
      window.location.assign("/?bye=everywhere");
    } catch (error) {
      button.disabled = false;
      if (!loggedOut(error)) say(error.message, { error: true });
    }
  });
}

function wireDelete() {
  const start = document.getElementById("delete-start");
  const form = document.getElementById("delete-form");
  const password = form.elements.password;
  const open = (on) => {
    form.hidden = !on;
    start.hidden = on;
    start.setAttribute("aria-expanded", String(on));
    if (on) password.focus();
    else {
      clearErrors(form);
      form.reset();
      start.focus();
    }
  };
  start.addEventListener("click", () => open(true));
  document.getElementById("delete-cancel").addEventListener("click", () => open(false));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    if (!password.value) {
      showFieldErrors([[password, "Enter your password to confirm."]]);
      return;
    }
    busy(form, true);
    try {
      await api("DELETE", "/api/v1/me", { password: password.value });
      window.location.assign("/?bye=deleted");
      return;
    } catch (error) {
      password.value = "";
      if (loggedOut(error)) return;
      if (error.status === 403 || error.status === 422) showFieldErrors([[password, error.message]]);
      else setFormError(form, error.message);
    }
    busy(form, false);
  });
}

wireEmails();
wireAlerts();
wireSessions();
wireDelete();
