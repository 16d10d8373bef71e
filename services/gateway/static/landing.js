// The start page: sign up, log in, resend the confirmation link, ask for a password reset link.
import { api, busy, clearErrors, say, sentence, setFormError, showFieldErrors } from "./common.js";

const MIN_PASSWORD = 8;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s.]+$/;

function emailProblem(value) {
  if (!value) return "Enter your email address.";
  if (!EMAIL.test(value)) return "Enter an address like name@asu.edu.";
  return null;
}

// An API message about one field goes beside that field; anything else above the form.
function showApiError(form, error, fields) {
  const field = Object.entries(fields).find(([word]) => error.message.toLowerCase().startsWith(word));
  if (error.status === 422 && field) showFieldErrors([[field[1], error.message]]);
  else setFormError(form, error.message);
}

function wireSignup() {
  const form = document.getElementById("signup-form");
  const email = form.elements.email;
  const password = form.elements.password;
  const confirm = form.elements.confirm;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const address = email.value.trim();
    const problems = [];
    const emailIssue = emailProblem(address);
    if (emailIssue) problems.push([email, emailIssue]);
    if (password.value.length < MIN_PASSWORD) problems.push([password, `Use at least ${MIN_PASSWORD} characters.`]);
    else if (confirm.value !== password.value) problems.push([confirm, "The two passwords are not the same."]);
    if (showFieldErrors(problems)) return;
    busy(form, true);
    try {
      await api("POST", "/api/v1/auth/register", { email: address, password: password.value });
      form.reset();
      say(`Check your email to confirm your address: we wrote to ${address}.`);
    } catch (error) {
      showApiError(form, error, { email, password });
    } finally {
      busy(form, false);
    }
  });
}

function wireLogin() {
  const form = document.getElementById("login-form");
  const email = form.elements.email;
  const password = form.elements.password;
  const unverified = document.getElementById("unverified");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    unverified.hidden = true;
    const address = email.value.trim();
    const problems = [];
    const emailIssue = emailProblem(address);
    if (emailIssue) problems.push([email, emailIssue]);
    if (!password.value) problems.push([password, "Enter your password."]);
    if (showFieldErrors(problems)) return;
    busy(form, true);
    try {
      await api("POST", "/api/v1/auth/login", { email: address, password: password.value });
      window.location.assign("/dashboard");
      return;
    } catch (error) {
      password.value = "";
      if (error.status === 403) {
        // The password was right, but the address was never confirmed: offer a new link.
        setFormError(form, error.message);
        unverified.hidden = false;
      } else {
        setFormError(form, error.message);
      }
    }
    busy(form, false);
  });

  document.getElementById("resend").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const answer = await api("POST", "/api/v1/auth/verification/resend", { email: email.value.trim() });
      unverified.hidden = true;
      clearErrors(form);
      say(sentence(answer.message));
    } catch (error) {
      setFormError(form, error.message);
    } finally {
      button.disabled = false;
    }
  });
}

function wireForgot() {
  const form = document.getElementById("forgot-form");
  const email = form.elements.email;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const address = email.value.trim();
    const issue = emailProblem(address);
    if (issue) {
      showFieldErrors([[email, issue]]);
      return;
    }
    busy(form, true);
    try {
      const answer = await api("POST", "/api/v1/auth/password/forgot", { email: address });
      say(sentence(answer.message));
    } catch (error) {
      showApiError(form, error, { email });
    } finally {
      busy(form, false);
    }
  });
  // Typed in the log-in form already: no need to type it twice.
  email.addEventListener("focus", () => {
    if (!email.value) email.value = document.getElementById("login-email").value.trim();
  });
}

wireSignup();
wireLogin();
wireForgot();
