// The admin page, filled from the admin API: totals, most watched sections, students, health.
import { api, clearErrors, loggedOut, say, showFieldErrors } from "./common.js";

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function failed(error) {
  if (!loggedOut(error)) say(error.message, { error: true });
}

async function loadSummary() {
  const summary = await api("GET", "/api/v1/admin/summary");
  for (const dd of document.querySelectorAll("[data-total]")) dd.textContent = String(summary[dd.dataset.total]);
  document.getElementById("totals").setAttribute("aria-busy", "false");
  const body = document.querySelector("#top tbody");
  const rows = summary.most_watched.map((section) =>
    row(cell(section.course ? `${section.course} (${section.class_nbr})` : `Class ${section.class_nbr}`),
      cell(section.term_label), cell(String(section.watchers), "num")));
  body.replaceChildren(...(rows.length ? rows : [row(cell("No watches yet."), cell(""), cell(""))]));
}

function studentRow(student) {
  const state = student.disabled ? "Disabled" : (student.verified ? "Active" : "Not confirmed");
  const button = document.createElement("button");
  button.type = "button";
  button.className = student.disabled ? "secondary" : "danger";
  button.textContent = student.disabled ? "Enable" : "Disable";
  button.setAttribute("aria-label", `${button.textContent} ${student.email}`);
  button.addEventListener("click", () => toggle(student, button));
  const action = document.createElement("td");
  if (!student.is_admin) action.append(button);
  return row(cell(student.email, "email"), cell(String(student.watches), "num"),
    cell(student.is_admin ? `${state}, admin` : state), action);
}

async function toggle(student, button) {
  button.disabled = true;
  const verb = student.disabled ? "enable" : "disable";
  try {
    const changed = await api("POST", `/api/v1/admin/students/${student.id}/${verb}`);
    const fresh = studentRow(changed);
    button.closest("tr").replaceWith(fresh);
    fresh.querySelector("button")?.focus();
    say(`${changed.email} is ${changed.disabled ? "disabled: logged out everywhere, no more email" : "enabled again"}.`);
  } catch (error) {
    button.disabled = false;
    failed(error);
  }
}

async function loadStudents(q) {
  const answer = await api("GET", `/api/v1/admin/students?${new URLSearchParams({ q })}`);
  const body = document.querySelector("#students tbody");
  body.replaceChildren(...answer.students.map(studentRow));
  const shown = answer.students.length;
  document.getElementById("students-count").textContent =
    shown === answer.total ? `${answer.total} student${answer.total === 1 ? "" : "s"}` : `Newest ${shown} of ${answer.total} students`;
}

function wireSearch() {
  const form = document.getElementById("student-search");
  const input = form.elements.q;
  input.value = new URLSearchParams(window.location.search).get("q") || "";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    window.history.replaceState(null, "", input.value ? `/admin?${new URLSearchParams({ q: input.value })}` : "/admin");
    try {
      await loadStudents(input.value);
      say(document.getElementById("students-count").textContent);
    } catch (error) {
      if (error.status === 422 || error.status === 400) showFieldErrors([[input, error.message]]);
      else failed(error);
    }
  });
  return input.value;
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  return value < 120 ? `${Math.round(value)} s` : `${Math.round(value / 60)} min`;
}

async function loadHealth() {
  const state = document.getElementById("health-state");
  let report;
  try {
    report = await api("GET", "/api/v1/admin/health");
  } catch (error) {
    state.textContent = error.message;
    state.className = "health bad";
    state.setAttribute("aria-busy", "false");
    return;
  }
  state.textContent = report.healthy ? "Healthy" : "Needs attention";
  state.className = `health ${report.healthy ? "ok" : "bad"}`;
  state.setAttribute("aria-busy", "false");
  document.getElementById("health-problems").replaceChildren(
    ...report.problems.map((problem) => Object.assign(document.createElement("li"), { textContent: problem })));
  const facts = [
    ["Sections checked", report.checked],
    ["Not checked yet", report.unchecked],
    ["Oldest data", seconds(report.oldest_seconds)],
    ["Median age", seconds(report.median_seconds)],
    ...Object.entries(report.services ?? {}).map(([name, answer]) => [name, answer]),
    ["Dead letters", report.dead_letters],
  ];
  document.getElementById("health-facts").replaceChildren(...facts.map(([label, value]) => {
    const div = document.createElement("div");
    div.append(Object.assign(document.createElement("dt"), { textContent: label }),
      Object.assign(document.createElement("dd"), { textContent: String(value ?? "—") }));
    return div;
  }));
}

const q = wireSearch();
loadSummary().catch(failed);
loadStudents(q).catch(failed);
loadHealth();
