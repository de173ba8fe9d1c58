// shipyard dashboard: live deployment view (server-sent events) and confirmed actions.
// Every value from the server is set with textContent, never parsed as HTML.
"use strict";

const FINISHED = ["succeeded", "failed", "rolled_back", "rollback_failed", "superseded"];

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
}

function showStep(event) {
  if (!event.component || (event.kind !== "step" && event.kind !== "health")) return;
  for (const node of document.querySelectorAll("g.node")) {
    if (node.dataset.component !== event.component) continue;
    const what = (event.step || event.kind).split(":")[0];
    node.querySelector("text.step").textContent = (what + " " + (event.status || "")).trim();
    node.setAttribute("class", "node " + (event.status || ""));
  }
}

function showStatus(status) {
  const el = document.getElementById("status");
  el.textContent = status;
  el.className = "status " + status;
}

function follow(article) {
  const journal = document.querySelector("#journal tbody");
  const source = new EventSource(article.dataset.stream);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const row = document.createElement("tr");
    for (const key of ["seq", "at", "kind", "step", "component", "status", "message"]) {
      cell(row, key === "at" && event.at ? event.at.slice(0, 19).replace("T", " ") : event[key]);
    }
    journal.appendChild(row);
    showStep(event);
    if (event.kind === "deployment" && event.status) showStatus(event.status);
  };
  source.addEventListener("end", (message) => {
    source.close();
    const final = JSON.parse(message.data);
    showStatus(final.status);
    // The timeline, health observations and components are rendered by the server.
    document.getElementById("full-record").hidden = false;
  });
}

async function problemText(answer) {
  try {
    const body = await answer.json();
    return (body.detail || answer.statusText) + (body.hint ? "\nhint: " + body.hint : "");
  } catch (e) {
    return answer.status + " " + answer.statusText;
  }
}

function planText(plan) {
  const lines = [
    plan.kind + " of " + (plan.commit || "").slice(0, 12) + " to " + plan.environment,
    plan.why,
    "components: " + (plan.components.join(", ") || "none"),
    "levels: " + plan.levels.map((l) => "[" + l.join(", ") + "]").join(" → "),
    "steps:",
  ];
  for (const step of plan.steps) lines.push("  " + step.id);
  lines.push("plan hash: " + plan.plan_hash);
  return lines.join("\n");
}

async function act(button) {
  const env = button.dataset.environment;
  const kind = button.dataset.action;
  const dialog = document.getElementById("confirm");
  const error = document.getElementById("confirm-error");
  const yes = document.getElementById("confirm-yes");
  error.textContent = "";
  const source = button.dataset.source;
  const planUrl = "/api/v1/environments/" + encodeURIComponent(env) + {
    deploy: "/plan",
    rollback: "/rollback-plan",
    promote: "/promote-plan?source=" + encodeURIComponent(source || ""),
  }[kind];
  const answer = await fetch(planUrl, { credentials: "same-origin" });
  document.getElementById("confirm-title").textContent =
    kind + (source ? " " + source + " to " : " ") + env + "?";
  if (!answer.ok) {
    document.getElementById("confirm-plan").textContent = "";
    error.textContent = await problemText(answer);
    yes.disabled = true;
    dialog.showModal();
    return;
  }
  const plan = await answer.json();
  document.getElementById("confirm-plan").textContent = planText(plan);
  yes.disabled = plan.components.length === 0;
  yes.onclick = async () => {
    yes.disabled = true;
    const [url, body] = {
      deploy: ["/api/v1/deployments", { environment: env, confirm: plan.plan_hash }],
      rollback: ["/api/v1/rollbacks", { environment: env, to: plan.rollback_to, confirm: plan.plan_hash }],
      promote: ["/api/v1/promotions", {
        source: source, target: env, deployment: plan.promoted_from, confirm: plan.plan_hash,
      }],
    }[kind];
    const started = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (started.status === 202) {
      window.location.href = (await started.json()).page;
    } else if (started.ok) {
      error.textContent = "nothing to deploy: " + (await started.json()).plan.why;
    } else {
      error.textContent = await problemText(started);
      yes.disabled = false;
    }
  };
  dialog.showModal();
}

document.addEventListener("DOMContentLoaded", () => {
  const article = document.getElementById("deployment");
  if (article && article.dataset.live === "1") follow(article);
  for (const button of document.querySelectorAll("button.action")) {
    button.addEventListener("click", () => act(button));
  }
  const no = document.getElementById("confirm-no");
  if (no) no.addEventListener("click", () => document.getElementById("confirm").close());
});
