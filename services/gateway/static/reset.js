// The password reset page (GET /reset?token=…): posts the token and the new password as JSON, the only
// kind of body the API accepts for a change (the server's CSRF rule).
import { ApiError, api, busy, clearErrors, say, setFormError, showFieldErrors } from "./common.js";

const form = document.getElementById("reset-form");
const password = form.elements.password;
const confirm = form.elements.confirm;

function finish(linkText, href) {
  document.getElementById("reset").hidden = true;
  const link = document.getElementById("next-link");
  link.textContent = linkText;
  link.href = href;
  document.getElementById("next").hidden = false;
  link.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  if (password.value.length < 8) {
    showFieldErrors([[password, "Use at least 8 characters."]]);
    return;
  }
  if (password.value !== confirm.value) {
    showFieldErrors([[confirm, "The two passwords are not the same."]]);
    return;
  }
  const token = new URLSearchParams(window.location.search).get("token") || "";
  busy(form, true);
  try {
    await api("POST", "/api/v1/auth/password/reset", { token, password: password.value });
  } catch (error) {
    busy(form, false);
    if (error instanceof ApiError && (error.status === 400 || error.status === 410)) {
      // This link cannot work any more; a new one can.
      say(error.message, { error: true });
      finish("Ask for a new reset link", "/#forgot");
    } else if (error instanceof ApiError && error.status === 422) {
      showFieldErrors([[password, error.message]]);
    } else {
      setFormError(form, error.message);
    }
    return;
  }
  form.reset();
  // The token is spent: keep it out of the history and out of a reload.
  window.history.replaceState(null, "", "/reset");
  say("Your password is changed, and every device that was logged in is logged out.");
  finish("Log in with your new password", "/#login");
});
