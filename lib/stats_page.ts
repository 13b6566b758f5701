/**
 * The stats page the stats endpoint serves at `/`, in the spirit of
 * haproxy's: one self-contained HTML file (no CDN, no framework; the
 * endpoint's Content-Security-Policy lets it fetch nothing but its own
 * `/stats.json`), which polls `/stats.json` every 2 s and shows, per
 * service and transport, the totals and small charts of the rates over
 * the last 5 minutes (connections and refusals a second, bytes a second
 * in and out), the targets' state, the programs, and the process. Built
 * from the JSON alone, so it shows whatever the registry holds; every
 * figure is also in a table of all series (`data-metric` cells), which is
 * what its test compares with the JSON. Readable on a phone: one column
 * below 40 em.
 *
 * @module
 */

/**
 * The page, as served.
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { STATS_PAGE } from "./stats_page.ts";
 *
 * assertStringIncludes(STATS_PAGE, `fetch("stats.json"`);
 * ```
 */
export const STATS_PAGE: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sockets stats</title>
<link rel="icon" href="data:,">
<style>
:root { color-scheme: light dark; --fg: #1b1f23; --muted: #6a737d; --bg: #f6f8fa;
  --card: #fff; --line: #d0d7de; --in: #0969da; --out: #8250df; --bad: #cf222e; --good: #1a7f37; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #8d96a0; --bg: #0d1117;
  --card: #161b22; --line: #30363d; --in: #4493f8; --out: #ab7df8; --bad: #f85149; --good: #3fb950; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: .75em 1em; border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 1.1em; margin: 0; }
h2 { font-size: 1em; margin: 0 0 .5em; }
#process { color: var(--muted); font-size: .9em; }
main { padding: 1em; display: grid; gap: 1em; grid-template-columns: repeat(auto-fill, minmax(20em, 1fr)); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .75em; min-width: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
td, th { padding: .15em .3em; text-align: left; border-bottom: 1px solid var(--line); vertical-align: top; }
td.n { text-align: right; }
canvas { width: 100%; height: 60px; display: block; margin: .25em 0 .5em; }
.legend { font-size: .8em; color: var(--muted); }
.up { color: var(--good); font-weight: 600; } .down { color: var(--bad); font-weight: 600; }
.wide { grid-column: 1 / -1; }
details { overflow-x: auto; }
#error { color: var(--bad); }
@media (max-width: 40em) { main { grid-template-columns: 1fr; padding: .5em; } }
</style>
</head>
<body>
<header><h1>sockets stats</h1><div id="process">loading...</div><div id="error"></div></header>
<main id="services"></main>
<main>
<section class="wide" id="targets-section" hidden><h2>Targets</h2><table id="targets"></table></section>
<section class="wide"><details><summary>All figures</summary><table id="all"></table></details></section>
</main>
<script>
"use strict";
var POLL_MS = 2000, KEEP_MS = 5 * 60 * 1000;
var series = {};

function el(tag, attrs, text) {
  var node = document.createElement(tag);
  for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
  if (text !== undefined) node.textContent = text;
  return node;
}
function bytes(n) {
  var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[i];
}
function labelText(labels) {
  return Object.keys(labels).map(function (k) { return k + "=" + labels[k]; }).join(", ");
}
function ownerOf(labels) {
  if (!labels.service) return null;
  return labels.transport ? labels.service + "/" + labels.transport : labels.service;
}
// Per owner (service/transport): totals of each family (labels other than
// service and transport summed), and the figures by reason.
function byOwner(metrics) {
  var owners = {};
  metrics.forEach(function (family) {
    family.series.forEach(function (s) {
      var owner = ownerOf(s.labels);
      if (!owner || s.labels.target) return;
      var o = owners[owner] = owners[owner] || { totals: {}, detail: [] };
      var value = "value" in s ? s.value : s.count;
      o.totals[family.name] = (o.totals[family.name] || 0) + value;
      var extra = Object.keys(s.labels).filter(function (k) { return k !== "service" && k !== "transport"; });
      if (extra.length && value !== 0) {
        o.detail.push([family.name.replace(/^sockets_/, "").replace(/_total$/, "") + " (" +
          extra.map(function (k) { return s.labels[k]; }).join(", ") + ")", value]);
      }
    });
  });
  return owners;
}
function find(metrics, name) {
  for (var i = 0; i < metrics.length; i++) if (metrics[i].name === name) return metrics[i];
  return null;
}
function single(metrics, name) {
  var family = find(metrics, name);
  return family && family.series.length ? family.series[0].value : undefined;
}
var RATES = [
  ["conn", "connections/s", ["sockets_connections_accepted_total", "sockets_datagrams_received_total"], "--in"],
  ["refused", "refused/s", ["sockets_connections_refused_total", "sockets_datagrams_dropped_total"], "--bad"],
  ["in", "bytes in/s", ["sockets_received_bytes_total"], "--in"],
  ["out", "bytes out/s", ["sockets_sent_bytes_total"], "--out"],
];
function record(owners, time) {
  Object.keys(owners).forEach(function (owner) {
    var totals = owners[owner].totals;
    var h = series[owner] = series[owner] || [];
    var point = { t: time };
    RATES.forEach(function (r) {
      point[r[0]] = r[2].reduce(function (sum, name) { return sum + (totals[name] || 0); }, 0);
    });
    h.push(point);
    while (h.length > 2 && time - h[0].t > KEEP_MS) h.shift();
  });
}
function rates(owner, key) {
  var h = series[owner] || [], out = [];
  for (var i = 1; i < h.length; i++) {
    var dt = (h[i].t - h[i - 1].t) / 1000;
    out.push(dt > 0 ? Math.max(0, (h[i][key] - h[i - 1][key]) / dt) : 0);
  }
  return out;
}
function draw(canvas, values, colorVar) {
  var ratio = window.devicePixelRatio || 1;
  var w = canvas.clientWidth || 300, hgt = canvas.clientHeight || 60;
  canvas.width = w * ratio; canvas.height = hgt * ratio;
  var ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  var style = getComputedStyle(document.documentElement);
  ctx.strokeStyle = style.getPropertyValue("--line");
  ctx.strokeRect(0.5, 0.5, w - 1, hgt - 1);
  var max = Math.max.apply(null, values.concat([1]));
  // Until 5 minutes are in, the points there are spread over the width.
  var slots = Math.max(15, Math.min(values.length, KEEP_MS / POLL_MS));
  ctx.strokeStyle = style.getPropertyValue(colorVar);
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach(function (v, i) {
    var x = w - (values.length - 1 - i) * (w / slots) - 1;
    var y = hgt - 2 - (v / max) * (hgt - 6);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}
function row(table, cells) {
  var tr = el("tr");
  cells.forEach(function (c) { tr.appendChild(c); });
  table.appendChild(tr);
}
function renderServices(owners) {
  var main = document.getElementById("services");
  main.textContent = "";
  Object.keys(owners).sort().forEach(function (owner) {
    var o = owners[owner], t = o.totals;
    var section = el("section", { "data-owner": owner });
    section.appendChild(el("h2", {}, owner));
    RATES.forEach(function (r) {
      var values = rates(owner, r[0]);
      var now = values.length ? values[values.length - 1] : 0;
      var peak = Math.max.apply(null, values.concat([0]));
      var show = function (v) { return r[0] === "in" || r[0] === "out" ? bytes(v) : v.toFixed(1); };
      section.appendChild(el("div", { "class": "legend" }, r[1] + ": " + show(now) +
        " now, " + show(peak) + " peak (last 5 min)"));
      var canvas = el("canvas", { "aria-label": r[1] });
      section.appendChild(canvas);
      draw(canvas, values, r[3]);
    });
    var table = el("table");
    [["accepted", "sockets_connections_accepted_total"], ["open now", "sockets_connections_open"],
     ["refused", "sockets_connections_refused_total"], ["datagrams in", "sockets_datagrams_received_total"],
     ["datagrams out", "sockets_datagrams_sent_total"], ["datagrams dropped", "sockets_datagrams_dropped_total"],
     ["programs started", "sockets_programs_started_total"], ["programs running", "sockets_programs_running"]]
      .forEach(function (pair) {
        if (!(pair[1] in t)) return;
        row(table, [el("td", {}, pair[0]), el("td", { "class": "n" }, String(t[pair[1]]))]);
      });
    ["sockets_received_bytes_total", "sockets_sent_bytes_total"].forEach(function (name, i) {
      if (name in t) row(table, [el("td", {}, i ? "bytes out" : "bytes in"), el("td", { "class": "n" }, bytes(t[name]))]);
    });
    o.detail.forEach(function (d) {
      row(table, [el("td", {}, d[0]), el("td", { "class": "n" }, String(d[1]))]);
    });
    section.appendChild(table);
    main.appendChild(section);
  });
}
function renderTargets(metrics) {
  var up = find(metrics, "sockets_target_up");
  var section = document.getElementById("targets-section");
  section.hidden = !up;
  if (!up) return;
  var table = document.getElementById("targets");
  table.textContent = "";
  row(table, ["service", "target", "state", "open", "failures", "checks"].map(function (h) { return el("th", {}, h); }));
  function valueOf(name, labels, extra) {
    var family = find(metrics, name), total = 0;
    (family ? family.series : []).forEach(function (s) {
      if (s.labels.service === labels.service && s.labels.target === labels.target &&
          (!extra || s.labels[extra[0]] === extra[1])) total += s.value;
    });
    return total;
  }
  up.series.forEach(function (s) {
    var state = s.value ? "up" : "down";
    row(table, [el("td", {}, s.labels.service), el("td", {}, s.labels.target),
      el("td", { "class": state }, state),
      el("td", { "class": "n" }, String(valueOf("sockets_target_connections_open", s.labels))),
      el("td", { "class": "n" }, String(valueOf("sockets_target_failures_total", s.labels))),
      el("td", { "class": "n" }, String(valueOf("sockets_target_checks_total", s.labels)))]);
  });
}
function renderAll(metrics) {
  var table = document.getElementById("all");
  table.textContent = "";
  row(table, ["name", "labels", "value"].map(function (h) { return el("th", {}, h); }));
  metrics.forEach(function (family) {
    family.series.forEach(function (s) {
      var value = "value" in s ? s.value : s.count;
      row(table, [el("td", {}, family.name + ("value" in s ? "" : "_count")),
        el("td", {}, labelText(s.labels)),
        el("td", { "class": "n", "data-metric": family.name, "data-labels": JSON.stringify(s.labels) }, String(value))]);
    });
  });
}
function renderProcess(metrics, time) {
  var parts = [];
  var rss = single(metrics, "process_resident_memory_bytes");
  if (rss !== undefined) parts.push("memory " + bytes(rss));
  var heap = single(metrics, "sockets_heap_used_bytes");
  if (heap !== undefined) parts.push("heap " + bytes(heap));
  var fds = single(metrics, "process_open_fds"), max = single(metrics, "process_max_fds");
  if (fds !== undefined) parts.push(fds + (max !== undefined ? " of " + max : "") + " descriptors");
  var dropped = single(metrics, "sockets_log_lines_dropped_total");
  if (dropped !== undefined) parts.push(dropped + " log lines dropped");
  parts.push("at " + new Date(time).toLocaleTimeString());
  document.getElementById("process").textContent = parts.join(" \\u00b7 ");
}
function poll() {
  fetch("stats.json", { cache: "no-store" }).then(function (response) {
    if (!response.ok) throw new Error("stats.json: HTTP " + response.status);
    return response.json();
  }).then(function (stats) {
    var owners = byOwner(stats.metrics);
    record(owners, stats.time);
    renderProcess(stats.metrics, stats.time);
    renderServices(owners);
    renderTargets(stats.metrics);
    renderAll(stats.metrics);
    document.getElementById("error").textContent = "";
    document.body.setAttribute("data-updated", String(stats.time));
  }).catch(function (error) {
    document.getElementById("error").textContent = "cannot read stats.json: " + error.message;
  }).finally(function () { setTimeout(poll, POLL_MS); });
}
poll();
</script>
</body>
</html>
`;
