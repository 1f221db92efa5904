"""The live ``/resilience`` page: plain HTML and JavaScript, no build step, no external assets.

It polls ``/health`` (the health document) and ``/resilience/state`` (breakers, the
transition timeline, events, per-dependency series, counters) twice a second and draws,
per dependency, its breaker state, failure rate, a state timeline of the last three
minutes with time ticks, and a small plot of calls per second by outcome with the p99
latency; beside them, the list of events (transitions, reloads, manual actions, chaos
switched on or off) with their times.
"""

from __future__ import annotations

__all__ = ["RESILIENCE_PAGE"]

RESILIENCE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>otel-resilience: live</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em; background: #fafafa; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em 0; }
  h2 { font-size: 1.05em; margin: 1em 0 .3em 0; }
  .status { display: inline-block; padding: .15em .7em; border-radius: 1em; color: #fff;
            font-weight: 600; }
  .healthy, .closed { background: #2e7d32; }
  .degraded, .half_open { background: #ef8f00; }
  .unhealthy, .open, .forced_open { background: #c62828; }
  .disabled, .unknown { background: #777; }
  #layout { display: flex; gap: 1.5em; align-items: flex-start; }
  table { border-collapse: collapse; margin: .6em 0; }
  th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd;
           vertical-align: middle; }
  td.state span { display: inline-block; min-width: 6em; text-align: center; color: #fff;
                  border-radius: .3em; padding: .1em .4em; }
  .timeline { width: 360px; height: 16px; background: #eee; position: relative; }
  .timeline div.seg { position: absolute; top: 0; height: 16px; }
  .timeline div.tick { position: absolute; top: 0; height: 16px; width: 1px;
                       background: rgba(255,255,255,.75); }
  .timeline div.mark { position: absolute; top: -3px; height: 22px; width: 2px;
                       background: #1565c0; }
  .axis { width: 360px; height: 14px; position: relative; font-size: 10px; color: #666; }
  .axis span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
  svg.plot { background: #fff; border: 1px solid #e3e3e3; }
  .legend span { margin-right: .8em; font-size: 11px; }
  .legend i { display: inline-block; width: 10px; height: 3px; margin-right: 3px;
              vertical-align: middle; }
  #events { list-style: none; margin: 0; padding: 0; width: 340px; max-height: 480px;
            overflow-y: auto; font-size: 12px; }
  #events li { padding: .2em 0; border-bottom: 1px solid #eee; }
  #events time { font-family: ui-monospace, monospace; color: #555; margin-right: .5em; }
  #events b.kind { display: inline-block; min-width: 5.5em; color: #fff; border-radius: .3em;
                   padding: 0 .3em; margin-right: .4em; font-weight: 600; text-align: center; }
  .k-transition { background: #546e7a; } .k-reload { background: #6a1b9a; }
  .k-manual { background: #1565c0; } .k-chaos { background: #ad1457; }
  .k-failed { background: #c62828; }
  #stats span { margin-right: 1.5em; }
  #error { color: #c62828; }
  small { color: #666; }
</style>
</head>
<body>
<h1>otel-resilience: <span id="service">...</span>
  <span id="overall" class="status unknown" data-status="unknown">loading</span></h1>
<small>breaker state per dependency; timeline: last 180 s (green closed, orange half-open,
red open, blue marks: events); plot: calls per second by outcome and p99 latency (dashed).
Polls /health and /resilience/state twice a second.</small>
<div id="layout">
<div>
<table>
  <thead><tr><th>dependency</th><th>criticality</th><th>breaker</th><th>failure rate</th>
    <th>timeline (180 s)<div class="axis" id="axis"></div></th>
    <th>calls/s and p99 latency
      <div class="legend"><span><i style="background:#2e7d32"></i>success</span><span><i
      style="background:#c62828"></i>failure</span><span><i style="background:#ef8f00"></i>slow
      </span><span><i style="background:#777"></i>rejected</span><span><i
      style="background:#1565c0"></i>p99</span></div></th></tr></thead>
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
</div>
<div>
<h2>Events</h2>
<ol id="events"><li><small>none yet</small></li></ol>
</div>
</div>
<script>
"use strict";
const WINDOW = 180;
const TICK = 30;
const PLOT_W = 220, PLOT_H = 46;
let lastEvents = null;
let lastAt = null;
const COLOURS = {closed: "#2e7d32", half_open: "#ef8f00", open: "#c62828",
                 forced_open: "#c62828", disabled: "#777"};
const OUTCOMES = [["success", "#2e7d32"], ["failure", "#c62828"], ["slow", "#ef8f00"],
                  ["rejected", "#777"]];

function esc(text) {
  return String(text).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}

function clock(t) {
  const d = new Date(t * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()]
    .map(n => String(n).padStart(2, "0")).join(":");
}

function pct(t, start) { return ((t - start) / WINDOW * 100).toFixed(2); }

function tickTimes(now) {
  const start = now - WINDOW;
  const ticks = [];
  for (let t = Math.ceil(start / TICK) * TICK; t <= now; t += TICK) ticks.push(t);
  return ticks;
}

function axis(now) {
  const start = now - WINDOW;
  return tickTimes(now).map((t, i) =>
    `<span class="tick-label" style="left:${pct(t, start)}%">${i % 2 ? "" : clock(t)}</span>`)
    .join("");
}

function segments(name, current, timeline, events, now) {
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
  const html = parts.map(([a, b, s]) =>
    `<div class="seg" style="left:${pct(a, start)}%;` +
    `width:${((b - a) / WINDOW * 100).toFixed(2)}%;background:${COLOURS[s] || "#777"}"` +
    ` title="${esc(s)}"></div>`);
  for (const t of tickTimes(now)) {
    html.push(`<div class="tick" style="left:${pct(t, start)}%"></div>`);
  }
  for (const e of events) {
    if (e.kind !== "transition" && (e.dependency === name || e.dependency === null) &&
        e.t >= start) {
      html.push(`<div class="mark" style="left:${pct(e.t, start)}%"` +
                ` title="${esc(clock(e.t) + " " + e.kind + " " + e.detail)}"></div>`);
    }
  }
  return html.join("");
}

function plot(name, points, now) {
  const start = now - WINDOW;
  const x = t => ((t - start) / WINDOW * PLOT_W).toFixed(1);
  let top = 1;
  for (const p of points) for (const [o] of OUTCOMES) top = Math.max(top, p[o]);
  let slowest = 0;
  for (const p of points) if (p.p99_ms !== null) slowest = Math.max(slowest, p.p99_ms);
  const parts = [];
  for (const t of tickTimes(now)) {
    parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="0" y2="${PLOT_H}" stroke="#eee"/>`);
  }
  for (const [outcome, colour] of OUTCOMES) {
    const coords = points.filter(p => p.t >= start)
      .map(p => `${x(p.t)},${(PLOT_H - 2 - p[outcome] / top * (PLOT_H - 4)).toFixed(1)}`);
    if (coords.length) {
      parts.push(`<polyline data-outcome="${outcome}" fill="none" stroke="${colour}"` +
                 ` stroke-width="1.5" points="${coords.join(" ")}"/>`);
    }
  }
  const latency = points.filter(p => p.t >= start && p.p99_ms !== null)
    .map(p => `${x(p.t)},${(PLOT_H - 2 - p.p99_ms / (slowest || 1) * (PLOT_H - 4)).toFixed(1)}`);
  if (latency.length) {
    parts.push(`<polyline data-outcome="p99" fill="none" stroke="#1565c0" stroke-width="1.2"` +
               ` stroke-dasharray="3,2" points="${latency.join(" ")}"/>`);
  }
  const last = points.length ? points[points.length - 1] : null;
  const label = last ?
    `${(last.success + last.failure + last.slow + last.rejected).toFixed(1)}/s` +
    (last.p99_ms !== null ? `, p99 ${last.p99_ms.toFixed(1)} ms` : "") : "no calls yet";
  return `<svg class="plot" data-dependency="${esc(name)}" width="${PLOT_W}" height="${PLOT_H}"` +
    ` viewBox="0 0 ${PLOT_W} ${PLOT_H}">${parts.join("")}</svg>` +
    `<br><small>${esc(label)}; max ${top.toFixed(1)}/s` +
    `${slowest ? ", p99 max " + slowest.toFixed(1) + " ms" : ""}</small>`;
}

function eventList(events) {
  if (!events.length) return "<li><small>none yet</small></li>";
  return events.slice().sort((a, b) => b.t - a.t).map(e => {
    const failed = e.kind === "reload" && String(e.detail).startsWith("failed");
    const about = e.dependency ? ` data-dependency="${esc(e.dependency)}"` : "";
    return `<li data-kind="${esc(e.kind)}"${about}>` +
      `<time datetime="${new Date(e.t * 1000).toISOString()}">${clock(e.t)}</time>` +
      `<b class="kind k-${failed ? "failed" : esc(e.kind)}">${esc(e.kind)}</b>` +
      `${e.dependency ? esc(e.dependency) + " " : ""}${esc(e.detail)}</li>`;
  }).join("");
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
    document.getElementById("axis").innerHTML = axis(state.now);
    const events = state.events || [];
    const series = (state.series || {}).dependencies || {};
    const rows = [];
    for (const [name, breaker] of Object.entries(state.breakers)) {
      const dep = (health.dependencies || {})[name] || {};
      rows.push(`<tr data-dependency="${esc(name)}" data-state="${esc(breaker.state)}">` +
        `<td>${esc(name)}</td><td>${esc(breaker.criticality)}` +
        `${breaker.criticality === "observe-only" ? " <small>(not declared)</small>" : ""}</td>` +
        `<td class="state"><span class="${esc(breaker.state)}">${esc(breaker.state)}</span></td>` +
        `<td>${(100 * (breaker.failure_rate || 0)).toFixed(0)}%` +
        `${dep.last_error_type ? " <small>" + esc(dep.last_error_type) + "</small>" : ""}</td>` +
        `<td><div class="timeline">` +
        `${segments(name, breaker.state, state.timeline, events, state.now)}</div></td>` +
        `<td>${plot(name, series[name] || [], state.now)}</td></tr>`);
    }
    document.getElementById("deps").innerHTML = rows.join("");
    document.getElementById("observe-note").hidden =
      !Object.values(state.breakers).some(b => b.criticality === "observe-only");
    document.getElementById("events").innerHTML = eventList(events);
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
