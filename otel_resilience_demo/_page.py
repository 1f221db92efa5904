"""The live ``/resilience`` page: plain HTML and JavaScript, no build step, no external assets.

It polls ``/health`` (the health document) and ``/resilience/state`` (breakers, the
transition timeline, counters) twice a second and draws, per dependency, its breaker
state, failure rate and a state timeline of the last two minutes.
"""

from __future__ import annotations

__all__ = ["RESILIENCE_PAGE"]

RESILIENCE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>otel-resilience: live</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em 0; }
  .status { display: inline-block; padding: .15em .7em; border-radius: 1em; color: #fff;
            font-weight: 600; }
  .healthy, .closed { background: #2e7d32; }
  .degraded, .half_open { background: #ef8f00; }
  .unhealthy, .open, .forced_open { background: #c62828; }
  .disabled, .unknown { background: #777; }
  table { border-collapse: collapse; margin: 1em 0; }
  th, td { text-align: left; padding: .35em .8em; border-bottom: 1px solid #ddd; }
  td.state span { display: inline-block; min-width: 6em; text-align: center; color: #fff;
                  border-radius: .3em; padding: .1em .4em; }
  .timeline { width: 480px; height: 16px; background: #eee; position: relative; }
  .timeline div { position: absolute; top: 0; height: 16px; }
  #stats span { margin-right: 1.5em; }
  #error { color: #c62828; }
  small { color: #666; }
</style>
</head>
<body>
<h1>otel-resilience: <span id="service">...</span>
  <span id="overall" class="status unknown" data-status="unknown">loading</span></h1>
<small>breaker state per dependency; timeline: last 120 s (green closed, orange half-open,
red open). Polls /health and /resilience/state twice a second.</small>
<table>
  <thead><tr><th>dependency</th><th>criticality</th><th>breaker</th><th>failure rate</th>
    <th>timeline (120 s)</th></tr></thead>
  <tbody id="deps"></tbody>
</table>
<p id="observe-note" hidden><small>A row marked <b>observe-only</b> is a server this
service called that its config does not declare (found from the client spans, such as
127.0.0.1 for the service's own HTTP calls to itself). Its breaker is disabled: calls to
it are counted and shown here and in the metrics, never rejected. Declare it in
resilience.yaml to protect it.</small></p>
<div id="stats"></div>
<div id="limited"></div>
<div id="error"></div>
<script>
"use strict";
const WINDOW = 120;
let lastEvents = null;
let lastAt = null;
const COLOURS = {closed: "#2e7d32", half_open: "#ef8f00", open: "#c62828",
                 forced_open: "#c62828", disabled: "#777"};

function esc(text) {
  return String(text).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}

function segments(name, current, timeline, now) {
  // Walk the transitions of one dependency backwards from its current state.
  const changes = timeline.filter(t => t.dependency === name).sort((a, b) => a.t - b.t);
  const start = now - WINDOW;
  const parts = [];
  let end = now;
  let state = current;
  for (let i = changes.length - 1; i >= 0 && end > start; i--) {
    const from = Math.max(changes[i].t, start);
    parts.push([from, end, changes[i].to]);
    end = from;
    state = changes[i].from;
  }
  if (end > start) parts.push([start, end, state]);
  return parts.map(([a, b, s]) =>
    `<div style="left:${((a - start) / WINDOW * 100).toFixed(2)}%;` +
    `width:${((b - a) / WINDOW * 100).toFixed(2)}%;background:${COLOURS[s] || "#777"}"` +
    ` title="${esc(s)}"></div>`).join("");
}

async function poll() {
  try {
    const [healthResponse, stateResponse] = await Promise.all([
      fetch("/health", {cache: "no-store"}), fetch("/resilience/state", {cache: "no-store"})]);
    const health = await healthResponse.json();
    const state = await stateResponse.json();
    document.getElementById("service").textContent = state.service;
    const overall = document.getElementById("overall");
    overall.textContent = health.status;
    overall.className = "status " + health.status;
    overall.dataset.status = health.status;
    const rows = [];
    for (const [name, breaker] of Object.entries(state.breakers)) {
      const dep = (health.dependencies || {})[name] || {};
      rows.push(`<tr data-dependency="${esc(name)}" data-state="${esc(breaker.state)}">` +
        `<td>${esc(name)}</td><td>${esc(breaker.criticality)}` +
        `${breaker.criticality === "observe-only" ? " <small>(not declared)</small>" : ""}</td>` +
        `<td class="state"><span class="${esc(breaker.state)}">${esc(breaker.state)}</span></td>` +
        `<td>${(100 * (breaker.failure_rate || 0)).toFixed(0)}%` +
        `${dep.last_error_type ? " <small>" + esc(dep.last_error_type) + "</small>" : ""}</td>` +
        `<td><div class="timeline">${segments(name, breaker.state, state.timeline, state.now)}` +
        `</div></td></tr>`);
    }
    document.getElementById("deps").innerHTML = rows.join("");
    document.getElementById("observe-note").hidden =
      !Object.values(state.breakers).some(b => b.criticality === "observe-only");
    const s = state.stats;
    // A rate needs two samples: until the second poll it says so instead of "0.0".
    let rate = "measuring";
    if (lastEvents !== null && state.now > lastAt) {
      rate = ((s.events_sent - lastEvents) / (state.now - lastAt)).toFixed(1);
    }
    lastEvents = s.events_sent;
    lastAt = state.now;
    const fallbacks = Object.entries(state.fallbacks).map(([k, v]) => `${k} ${v}`).join(", ");
    document.getElementById("stats").innerHTML =
      `<span>events/s <b id="rate">${rate}</b></span>` +
      `<span>messages <b>${s.messages}</b></span>` +
      `<span>completed <b>${s.completed}</b></span>` +
      `<span>failed fast <b>${s.failed_fast}</b></span>` +
      `<span>fallbacks <b>${esc(fallbacks || "0")}</b></span>` +
      `<span>analytics kept <b>${s.analytics_kept}</b> flushed <b>${s.analytics_flushed}</b>` +
      `</span><span>users <b>${s.connections_open}</b></span>`;
    const limited = Object.entries(state.limited);
    document.getElementById("limited").innerHTML = limited.length ?
      "<p><b>limited now:</b> " + limited.map(([k, v]) => esc(k) + ": " + esc(v)).join("; ") +
      "</p>" : "";
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent = "cannot reach the service: " + err;
  }
}
poll();
setInterval(poll, 500);
</script>
</body>
</html>
"""
