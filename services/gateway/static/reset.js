"use strict";
// The password reset page (GET /reset?token=…): posts the token and the new password as JSON, the only
// kind of body the API accepts for a change (the server's CSRF rule).

const $ = (selector) => document.querySelector(selector);

function showMessage(text, ok = false) {
  const box = $("#message");
  // The API's messages are lower-case phrases; on the page they stand as sentences.
  box.textContent = text ? text[0].toUpperCase() + text.slice(1) : "";
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

function finish(linkText, href) {
  $("#reset").hidden = true;
  $("#next-link").textContent = linkText;
  $("#next-link").href = href;
  $("#next").hidden = false;
}

async function save(event) {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector("button[type=submit]");
  if (form.password.value !== form.confirm.value) {
    showMessage("The two passwords are not the same.");
    form.confirm.focus();
    return;
  }
  const token = new URLSearchParams(window.location.search).get("token") || "";
  button.disabled = true;
  let response;
  try {
    response = await fetch("/api/v1/auth/password/reset", {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ token, password: form.password.value }),
    });
  } catch {
    button.disabled = false;
    showMessage("Cannot reach PickMyClass. Check your connection and try again.");
    return;
  }
  if (response.status === 204) {
    form.reset();
    // The token is spent: keep it out of the history and out of a reload.
    window.history.replaceState(null, "", "/reset");
    showMessage("Your password is changed, and every device that was logged in is logged out.", true);
    finish("Log in with your new password", "/");
    return;
  }
  button.disabled = false;
  let detail = `Request failed (${response.status})`;
  try {
    detail = (await response.json()).detail || detail;
  } catch {
    // Not JSON: keep the status line.
  }
  showMessage(detail);
  // 400/410: this link cannot work any more; a new one can.
  if (response.status === 400 || response.status === 410) finish("Ask for a new reset link", "/#forgot");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#reset-form").addEventListener("submit", save);
});
