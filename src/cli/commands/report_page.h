// The page template of `keel report`: CSS and the script that draws every
// chart as inline SVG from the JSON in #keel-data. @TITLE@ and @DATA@ are
// filled in by render_html (report_html.cpp). No external resource is loaded.
#pragma once

namespace keel::cli::report {

inline constexpr const char* kReportPage = R"KEEL(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 20px}
header h1{font-size:18px;margin:0}
header .sub{color:#aab3c5;font-size:12px}
main{padding:12px 20px}
h2{font-size:15px;margin:18px 0 8px}
.notices{background:#fff6d6;border:1px solid #e6c84f;border-radius:6px;padding:8px 12px;margin:8px 0}
.notices li{font-family:ui-monospace,monospace;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:20px;font-weight:600}
.card .k{font-size:11px;color:#5b6578;text-transform:uppercase}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:12px}
.chart{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:6px 8px;position:relative}
.chart.wide{grid-column:1/-1}
.chart h3{font-size:13px;margin:2px 0 4px}
.chart .empty{color:#8a93a5;font-style:italic;padding:30px 0;text-align:center}
.chart svg{display:block;width:100%;height:260px}
.legend{font-size:12px;color:#333}
.legend span{margin-right:12px;white-space:nowrap}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
.tip{position:absolute;pointer-events:none;background:rgba(29,35,48,.92);color:#fff;font-size:12px;padding:4px 8px;border-radius:4px;white-space:nowrap;display:none;z-index:2}
table{border-collapse:collapse;background:#fff;font-size:12px}
td,th{border:1px solid #dde1e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.fault td{background:#fde8e8}
pre{background:#fff;border:1px solid #dde1e8;padding:8px;font-size:12px;overflow:auto;max-height:360px}
details{margin:6px 0}
</style></head>
<body>
<header><h1 id="title">@TITLE@</h1><div class="sub" id="sub"></div></header>
<main>
<div id="notices"></div>
<div class="cards" id="cards"></div>
<h2>Training</h2>
<div class="grid" id="charts"></div>
<h2>Faults and goodput</h2>
<div class="grid" id="faults"></div>
<div id="goodput"></div>
<div id="eventtable"></div>
<h2>Environment and config</h2>
<div id="env"></div>
</main>
<script type="application/json" id="keel-data">@DATA@</script>
<script>
"use strict";
(function () {
  const errors = [];
  window.addEventListener("error", function (e) { errors.push(String(e.message)); });
  const origError = console.error;
  console.error = function () { errors.push(Array.prototype.join.call(arguments, " ")); origError.apply(console, arguments); };
  const T0 = performance.now();
  let D = JSON.parse(document.getElementById("keel-data").textContent);
  // Run colours leave out red, which marks faults.
  const COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#a0522d", "#e377c2", "#bcbd22"];
  const EVCOLOR = {start: "#2ca02c", fault: "#d62728", rollback: "#ff7f0e", restart: "#9467bd", exclude: "#a0522d",
                   checkpoint: "#1f77b4", resume: "#17becf", finish: "#2ca02c", skip_batches: "#e377c2"};
  const NS = "http://www.w3.org/2000/svg";
  const charts = [];

  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "\u2013";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return Number(v.toPrecision(4)).toExponential();
    if (Number.isInteger(v)) return String(v);
    return String(+v.toPrecision(5));
  }
  function exact(v) { return (v === null || v === undefined) ? "\u2013" : String(v); }
  function ticks(lo, hi, n) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p, step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }
  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function lower(xs, v) { let lo = 0, hi = xs.length; while (lo < hi) { const m = (lo + hi) >> 1; if (xs[m] < v) lo = m + 1; else hi = m; } return lo; }

  // spec: {id, title, xlabel, lines: [{label, color, dash, x, y, dots}], vmarks: [{x, color, label}],
  //        points: [{x, y, color, r, label}], path: [{x, y, color}], wide}
  function chart(parent, spec) {
    const box = document.createElement("div");
    box.className = "chart" + (spec.wide ? " wide" : "");
    box.id = "chart-" + spec.id;
    box.innerHTML = "<h3>" + esc(spec.title) + "</h3>";
    parent.appendChild(box);
    const lines = (spec.lines || []).filter(function (l) { return l.x && l.x.length; });
    const points = spec.points || [];
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    function acc(x, y) { if (isFinite(x)) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); } if (isFinite(y)) { y0 = Math.min(y0, y); y1 = Math.max(y1, y); } }
    lines.forEach(function (l) { for (let i = 0; i < l.x.length; i++) acc(l.x[i], l.y[i]); });
    points.forEach(function (p) { acc(p.x, p.y); });
    if (!(x1 >= x0) || !(y1 >= y0)) {
      box.insertAdjacentHTML("beforeend", "<div class='empty'>" + esc(spec.empty || "no data") + "</div>");
      charts.push({id: spec.id, box: box, drawn: false});
      return;
    }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const W = Math.max(300, box.clientWidth - 16), H = 260, m = {l: 62, r: 14, t: 8, b: 36};
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const sx = function (x) { return m.l + (x - x0) / (x1 - x0) * pw; };
    const sy = function (y) { return m.t + (y1 - y) / (y1 - y0) * ph; };
    const svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H});
    svg.appendChild(el("rect", {x: m.l, y: m.t, width: pw, height: ph, fill: "#fbfcfd", stroke: "#c9ced8", "class": "plotbox"}));
    ticks(y0, y1, 5).forEach(function (t) {
      if (t < y0 || t > y1) return;
      svg.appendChild(el("line", {x1: m.l, x2: m.l + pw, y1: sy(t), y2: sy(t), stroke: "#e6e9ef"}));
      svg.appendChild(el("text", {x: m.l - 6, y: sy(t) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6578"}, fmt(t)));
    });
    ticks(x0, x1, 6).forEach(function (t) {
      if (t < x0 || t > x1) return;
      svg.appendChild(el("line", {x1: sx(t), x2: sx(t), y1: m.t, y2: m.t + ph, stroke: "#eef0f4"}));
      svg.appendChild(el("text", {x: sx(t), y: m.t + ph + 14, "text-anchor": "middle", "font-size": 11, fill: "#5b6578"}, fmt(t)));
    });
    svg.appendChild(el("text", {x: m.l + pw / 2, y: H - 4, "text-anchor": "middle", "font-size": 11, fill: "#333"}, spec.xlabel || ""));
    (spec.vmarks || []).forEach(function (v) {
      if (!(v.x >= x0 && v.x <= x1)) return;
      svg.appendChild(el("line", {x1: sx(v.x), x2: sx(v.x), y1: m.t, y2: m.t + ph, stroke: v.color, "stroke-width": 1.5, "stroke-dasharray": "5,3", "class": "fault-mark"}));
      svg.appendChild(el("text", {x: sx(v.x) + 3, y: m.t + 12, "font-size": 11, fill: v.color}, v.label));
    });
    if (spec.path && spec.path.length > 1) {
      let d = "";
      spec.path.forEach(function (p, i) { d += (i ? "L" : "M") + sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1); });
      svg.appendChild(el("path", {d: d, fill: "none", stroke: spec.path[0].color || "#888", "stroke-width": 1.5, "stroke-dasharray": "2,2"}));
    }
    lines.forEach(function (l) {
      let d = "", pen = false;
      for (let i = 0; i < l.x.length; i++) {
        if (!isFinite(l.y[i])) { pen = false; continue; }
        d += (pen ? "L" : "M") + sx(l.x[i]).toFixed(1) + "," + sy(l.y[i]).toFixed(1);
        pen = true;
      }
      svg.appendChild(el("path", {d: d, fill: "none", stroke: l.color, "stroke-width": l.width || 1.6, "stroke-dasharray": l.dash || "", "stroke-linejoin": "round"}));
      // Sparse series (evaluations, checkpoint stalls) get a dot per record: one record has no line.
      if (l.dots || l.x.length <= 60) for (let i = 0; i < l.x.length && i < 400; i++)
        svg.appendChild(el("circle", {cx: sx(l.x[i]), cy: sy(l.y[i]), r: 2.5, fill: l.color}));
    });
    points.forEach(function (p) {
      const c = el("circle", {cx: sx(p.x), cy: sy(p.y), r: p.r || 4, fill: p.color, stroke: "#fff", "stroke-width": 1});
      c.appendChild(el("title", {}, p.label));
      svg.appendChild(c);
      if (p.tag) svg.appendChild(el("text", {x: sx(p.x) + 6, y: sy(p.y) - 6, "font-size": 11, fill: p.color, "font-weight": "600"}, p.tag));
    });
    const guide = el("line", {x1: 0, x2: 0, y1: m.t, y2: m.t + ph, stroke: "#888", visibility: "hidden"});
    svg.appendChild(guide);
    box.appendChild(svg);
    if (lines.length > 1 || spec.legend) {
      const lg = document.createElement("div");
      lg.className = "legend";
      lg.innerHTML = (spec.legend || lines).map(function (l) {
        return "<span><i style='background:" + l.color + "'></i>" + esc(l.label) + "</span>";
      }).join("");
      box.appendChild(lg);
    }
    const tip = document.createElement("div");
    tip.className = "tip";
    box.appendChild(tip);
    // Hover: the nearest recorded point of every line, values as recorded.
    svg.addEventListener("mousemove", function (ev) {
      const r = svg.getBoundingClientRect();
      const px = (ev.clientX - r.left) * W / r.width;
      if (px < m.l || px > m.l + pw || !lines.length) { tip.style.display = "none"; guide.setAttribute("visibility", "hidden"); return; }
      const xv = x0 + (px - m.l) / pw * (x1 - x0);
      let rows = [], gx = null;
      lines.forEach(function (l) {
        let i = lower(l.x, xv);
        if (i >= l.x.length) i = l.x.length - 1;
        if (i > 0 && Math.abs(l.x[i - 1] - xv) < Math.abs(l.x[i] - xv)) i--;
        if (gx === null) gx = l.x[i];
        // The value as recorded in metrics.jsonl (before any display scaling) and its step.
        rows.push("<span style='color:" + l.color + "'>\u25A0</span> " + esc(l.label) + ": " + exact(l.hy ? l.hy[i] : l.y[i]) +
                  (l.hx ? " @ step " + exact(l.hx[i]) + ", " : " @ ") + esc(spec.xname || "x") + " " + exact(l.x[i]));
      });
      guide.setAttribute("x1", sx(gx)); guide.setAttribute("x2", sx(gx)); guide.setAttribute("visibility", "visible");
      tip.innerHTML = rows.join("<br>");
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX - box.getBoundingClientRect().left + 12, box.clientWidth - tip.offsetWidth - 4) + "px";
      tip.style.top = (ev.clientY - box.getBoundingClientRect().top + 12) + "px";
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; guide.setAttribute("visibility", "hidden"); });
    charts.push({id: spec.id, box: svg, drawn: true});
  }

  function runColor(i) { return COLORS[i % COLORS.length]; }
  function faultMarks(runs, scale) {
    const out = [];
    runs.forEach(function (r, ri) {
      r.events.forEach(function (e) {
        if (e.event !== "fault") return;
        out.push({x: e.step * (scale ? r.tokens_per_step : 1), color: "#d62728",
                  label: "\u26A0 " + (runs.length > 1 ? r.name + ": " : "") + (e.detector || "fault") + (e.rank >= 0 ? " r" + e.rank : "")});
      });
    });
    return out;
  }
  function seriesLines(runs, col, opts) {
    opts = opts || {};
    const out = [];
    runs.forEach(function (r, ri) {
      const s = r.series[col];
      if (!s) return;
      let x = s[0], y = s[1];
      if (opts.scaleX) { const k = r.tokens_per_step; x = x.map(function (v) { return v * k; }); }
      if (opts.mul) y = y.map(function (v) { return v * opts.mul; });
      out.push({label: (runs.length > 1 ? r.name + " " : "") + (opts.label || col), color: opts.color && runs.length === 1 ? opts.color : runColor(ri),
                dash: opts.dash, dots: opts.dots && x.length <= 400, x: x, y: y,
                hx: opts.scaleX ? s[0] : null, hy: opts.mul ? s[1] : null});
    });
    return out;
  }

  const KNOWN = {loss: 1, val_loss: 1, lr: 1, grad_norm: 1, tokens_per_s: 1, mfu: 1, peak_rss_mb: 1, step_seconds: 1};

  function renderCharts(runs, root) {
    const lossLines = function (scaleX) {
      return seriesLines(runs, "loss", {label: "train loss", scaleX: scaleX, color: "#1f77b4"})
        .concat(seriesLines(runs, "val_loss", {label: "val loss", scaleX: scaleX, dash: "6,3", dots: true, color: "#ff7f0e"}));
    };
    chart(root, {id: "loss-step", title: "Loss vs step", xlabel: "step", xname: "step", lines: lossLines(false), vmarks: faultMarks(runs, false), legend: null});
    const haveTokens = runs.some(function (r) { return r.tokens_per_step > 0; });
    chart(root, {id: "loss-tokens", title: "Loss vs tokens", xlabel: "tokens", xname: "tokens", lines: haveTokens ? lossLines(true) : [],
                 vmarks: faultMarks(runs, true), empty: "tokens per step unknown"});
    chart(root, {id: "lr", title: "Learning rate", xlabel: "step", xname: "step", lines: seriesLines(runs, "lr", {color: "#2ca02c"})});
    chart(root, {id: "grad-norm", title: "Gradient norm (before clipping)", xlabel: "step", xname: "step", lines: seriesLines(runs, "grad_norm", {color: "#9467bd"}), vmarks: faultMarks(runs, false)});
    chart(root, {id: "tokens-per-s", title: "Throughput (tokens/s)", xlabel: "step", xname: "step", lines: seriesLines(runs, "tokens_per_s", {color: "#17becf"})});
    chart(root, {id: "mfu", title: "MFU (%; hover shows the recorded fraction)", xlabel: "step", xname: "step", lines: seriesLines(runs, "mfu", {mul: 100, label: "mfu", color: "#ff7f0e"})});
    chart(root, {id: "memory", title: "Peak memory (MiB, resident)", xlabel: "step", xname: "step", lines: seriesLines(runs, "peak_rss_mb", {label: "peak RSS MiB", color: "#a0522d"})});
    chart(root, {id: "step-time", title: "Step time (s)", xlabel: "step", xname: "step", lines: seriesLines(runs, "step_seconds", {color: "#bcbd22"})});
    const extra = {};
    runs.forEach(function (r) { Object.keys(r.series).forEach(function (k) { if (!KNOWN[k]) extra[k] = 1; }); });
    Object.keys(extra).sort().forEach(function (k) {
      chart(root, {id: "extra-" + k, title: k, xlabel: "step", xname: "step", lines: seriesLines(runs, k, {})});
    });
  }

  function renderFaults(runs, root) {
    const points = [], path = [], legend = [];
    const kinds = {};
    runs.forEach(function (r, ri) {
      r.events.forEach(function (e) {
        kinds[e.event] = 1;
        const isFault = e.event === "fault";
        points.push({x: e.t, y: e.step, color: runs.length > 1 && !isFault ? runColor(ri) : (EVCOLOR[e.event] || "#555"), r: isFault ? 6 : 4,
                     tag: isFault ? "\u26A0 " + (e.detector || "fault") + (e.rank >= 0 ? " r" + e.rank : "") : "",
                     label: e.event + (e.detector ? " (" + e.detector + ")" : "") + " step " + e.step + (e.rank >= 0 ? " rank " + e.rank : "") +
                            " lost " + e.steps_lost + " steps / " + fmt(e.time_lost_s) + " s" + (e.detail ? ": " + e.detail : "")});
        path.push({x: e.t, y: e.step, color: runColor(ri)});
      });
    });
    Object.keys(kinds).forEach(function (k) { legend.push({label: k, color: EVCOLOR[k] || "#555"}); });
    chart(root, {id: "fault-timeline", title: "Fault timeline (events: step reached against seconds since start)", xlabel: "seconds since first event",
                 wide: true, points: points, path: runs.length === 1 ? path : [], legend: legend.length ? legend : null,
                 empty: "no events recorded (events.jsonl missing or empty)"});
  }

  function table(head, rows, rowClass) {
    return "<table><tr>" + head.map(function (h) { return "<th>" + esc(h) + "</th>"; }).join("") + "</tr>" +
      rows.map(function (r, i) {
        return "<tr class='" + (rowClass ? rowClass(i) : "") + "'>" + r.map(function (c) {
          return typeof c === "number" ? "<td class='n'>" + esc(fmt(c)) + "</td>" : "<td>" + esc(c === null || c === undefined ? "\u2013" : c) + "</td>";
        }).join("") + "</tr>";
      }).join("") + "</table>";
  }

  function renderGoodput(runs) {
    const kinds = {};
    runs.forEach(function (r) { Object.keys(r.goodput.lost_by_kind).forEach(function (k) { kinds[k] = 1; }); Object.keys(r.goodput.faults_by_kind).forEach(function (k) { kinds[k] = 1; }); });
    const rows = [
      ["wall time (s)"].concat(runs.map(function (r) { return r.goodput.wall_s; })),
      ["productive steps (s)"].concat(runs.map(function (r) { return r.goodput.productive_s; })),
      ["recomputed steps (s)"].concat(runs.map(function (r) { return r.goodput.recomputed_s; })),
      ["skipped updates (s)"].concat(runs.map(function (r) { return r.goodput.skipped_s; }))];
    Object.keys(kinds).sort().forEach(function (k) {
      rows.push(["lost to " + k + " (s)"].concat(runs.map(function (r) { return r.goodput.lost_by_kind[k] || 0; })));
      rows.push(["faults: " + k].concat(runs.map(function (r) { return r.goodput.faults_by_kind[k] || 0; })));
    });
    rows.push(["steps recomputed"].concat(runs.map(function (r) { return r.goodput.steps_recomputed; })));
    rows.push(["effective-training-time ratio"].concat(runs.map(function (r) { return (100 * r.goodput.ratio).toFixed(1) + " %"; })));
    document.getElementById("goodput").innerHTML = "<h2>Goodput</h2>" + table(["goodput"].concat(runs.map(function (r) { return r.name; })), rows);
    let ev = "";
    runs.forEach(function (r) {
      if (!r.events.length) return;
      const rows2 = r.events.map(function (e) {
        return [e.t, e.event, e.detector, e.rank, e.step, e.steps_lost, e.time_lost_s, e.recover_s, e.world_size, e.detail];
      });
      ev += "<h2>Events" + (runs.length > 1 ? ": " + esc(r.name) : "") + "</h2>" +
        table(["t (s)", "event", "detector", "rank", "step", "steps lost", "time lost (s)", "time to recover (s)", "world size", "detail"], rows2,
              function (i) { return r.events[i].event === "fault" ? "fault" : ""; });
    });
    document.getElementById("eventtable").innerHTML = ev;
  }

  function envRows(r) {
    const rows = [];
    const env = r.environment || {};
    Object.keys(env).forEach(function (k) { rows.push([k, typeof env[k] === "object" ? JSON.stringify(env[k]) : String(env[k])]); });
    const cfg = {};
    (r.config || []).forEach(function (kv) { cfg[kv[0]] = kv[1]; });
    ["train.backend", "train.threads", "model.compute_dtype", "model.arch", "train.batch_size", "train.seq_len", "train.grad_accum", "train.steps"].forEach(function (k) {
      if (cfg[k] !== undefined && env[k] === undefined) rows.push([k + " (config)", cfg[k]]);
    });
    const s = r.summary || {};
    Object.keys(s).forEach(function (k) { rows.push(["summary." + k, typeof s[k] === "object" ? JSON.stringify(s[k]) : String(s[k])]); });
    return rows;
  }

  function renderEnv(runs) {
    let h = "";
    runs.forEach(function (r) {
      h += "<h2>" + esc(r.name) + " <small>(" + esc(r.dir) + ")</small></h2>" + table(["key", "value"], envRows(r)) +
        "<details><summary>config.toml</summary><pre>" + esc(r.config_toml || "(missing)") + "</pre></details>";
    });
    document.getElementById("env").innerHTML = h;
  }

  function renderAll() {
    charts.length = 0;
    const runs = D.runs;
    document.getElementById("sub").textContent = (D.live ? "live, refreshed " + new Date().toLocaleTimeString() + "; " : "") +
      "generated " + D.generated + "; " + runs.map(function (r) { return r.dir; }).join(", ");
    let notes = [];
    runs.forEach(function (r) { r.notices.forEach(function (n) { notes.push((runs.length > 1 ? r.name + ": " : "") + n); }); });
    document.getElementById("notices").innerHTML = notes.length ?
      "<div class='notices'><b>Skipped while reading the run directory:</b><ul>" + notes.map(function (n) { return "<li>" + esc(n) + "</li>"; }).join("") + "</ul></div>" : "";
    let cards = "";
    runs.forEach(function (r, ri) {
      const pre = runs.length > 1 ? "<span style='color:" + runColor(ri) + "'>\u25A0</span> " + esc(r.name) + " " : "";
      const c = [["step", r.final_step], ["train loss", r.final.loss], ["val loss", r.final.val_loss],
                 ["faults", r.events.filter(function (e) { return e.event === "fault"; }).length],
                 ["goodput", (100 * r.goodput.ratio).toFixed(1) + " %"], ["wall time", fmt(r.goodput.wall_s) + " s"]];
      c.forEach(function (kv) { cards += "<div class='card'><div class='k'>" + pre + esc(kv[0]) + "</div><div class='v'>" + esc(typeof kv[1] === "number" ? fmt(kv[1]) : kv[1] === null ? "\u2013" : kv[1]) + "</div></div>"; });
    });
    document.getElementById("cards").innerHTML = cards;
    const c1 = document.getElementById("charts"), c2 = document.getElementById("faults");
    c1.innerHTML = ""; c2.innerHTML = "";
    renderCharts(runs, c1);
    renderFaults(runs, c2);
    renderGoodput(runs);
    renderEnv(runs);
    publish();
  }

  // For tests and tools: where each chart's plot is, whether it has data,
  // script errors and the render time, as one attribute on <body>.
  function publish() {
    const sx = window.scrollX, sy = window.scrollY;
    // #hover: move the pointer over the middle of every chart and keep the
    // tooltip text, so a headless browser can check what hovering shows.
    const hover = [];
    if (location.hash === "#hover") charts.forEach(function (c) {
      if (!c.drawn) return;
      const r = c.box.getBoundingClientRect();
      c.box.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + r.width * 0.6, clientY: r.top + r.height / 2, bubbles: true}));
      const tip = c.box.parentNode.querySelector(".tip");
      hover.push({id: c.id, text: tip ? tip.textContent : ""});
      c.box.dispatchEvent(new MouseEvent("mouseleave", {}));
    });
    const boxes = charts.map(function (c) {
      const r = c.box.getBoundingClientRect();
      return {id: c.id, drawn: c.drawn, x: Math.round(r.left + sx), y: Math.round(r.top + sy), w: Math.round(r.width), h: Math.round(r.height)};
    });
    document.body.setAttribute("data-keel-status", JSON.stringify({
      rendered: true, render_ms: Math.round(performance.now() - T0), page_ms: Math.round(performance.now()),
      height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth, charts: boxes, hover: hover, errors: errors}));
  }

  try { renderAll(); } catch (e) { errors.push(String(e && e.stack || e)); publish(); throw e; }
  if (D.live) {
    setInterval(function () {
      fetch("data.json", {cache: "no-store"}).then(function (r) { return r.json(); })
        .then(function (d) { D = d; renderAll(); })
        .catch(function (e) { document.getElementById("sub").textContent = "live: refresh failed (" + e + "), retrying"; });
    }, 3000);
  }
})();
</script>
</body></html>
)KEEL";

}  // namespace keel::cli::report
