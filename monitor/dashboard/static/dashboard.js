// spikewire dashboard: draws what /api/layout declares (populations, marked ports, devices, links, nodes,
// phases) from the frames of /ws. Nothing here names an element kind. window.spikewire is the page's own
// state, for tests and for the curious (counts received per port, resistances shown, interlocks, controls).
"use strict";

const WINDOW_S = 10, RATE_WINDOW_S = 2, HISTORY_S = 120;
const TYPE_STYLE = { 0: ["psp", "#9aa3ad", "dot"], 1: ["stimulated AP", "#c0392b", "tick"], 2: ["spontaneous AP", "#2471a3", "tick"] };
const COLORS = ["#2471a3", "#c0392b", "#1e8449", "#b9770e", "#7d3c98", "#148f77", "#a04000", "#34495e"];
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);

const S = window.spikewire = {
  mode: null, connected: false, frames: 0, now: null, ended: false,
  spikes: {}, events: {}, typed: {}, firstT: {}, lastT: {}, stimuli: {}, marks: [], holds: [],
  resistances: {}, interlock: {}, nodes: {}, links: {}, probe: null,
  lastControl: null, controlLog: [], forbidden: 0, controlsEnabled: false, notes: [],
};

let L = null;                 // the layout
const buf = {};               // port key -> [[t, id, value], ...] of the last WINDOW_S (+ margin)
const devSeries = {};         // device or set key -> [[t, r...], ...]
let pulses = [];              // [t, key, direction, n]
const rateHist = { t: [], v: {} };
const probeHist = { t: [], p50: [], p99: [] };
let lastFrameAt = 0, lastFrameNow = null, ws = null, held = false;
const plots = {};

function fmt(x, d = 0) { return x == null || !isFinite(x) ? "-" : Number(x).toLocaleString("en", { maximumFractionDigits: d, minimumFractionDigits: d }); }
function us(x) { return x == null ? "-" : fmt(x * 1e6); }
function el(tag, attrs = {}, text) { const e = document.createElement(tag); Object.assign(e, attrs); if (text != null) e.textContent = text; return e; }

// --- layout --------------------------------------------------------------------------------------------
function build() {
  $("title").textContent = `spikewire: ${L.network}`;
  const rasters = $("rasters");
  for (const p of L.populations) {
    const h = Math.max(28, Math.min(160, 14 + p.size * 6));
    const div = el("div", { className: "raster" });
    const lbl = el("div", { className: "lbl" });
    lbl.append(el("span", {}, `${p.name} (${p.node}.${p.port}, ${p.size} neuron${p.size > 1 ? "s" : ""})`), el("span", { id: `rate-${p.key}` }, ""));
    const c = el("canvas", { id: `raster-${p.key}`, height: h });
    c.style.height = h + "px";
    div.append(lbl, c); rasters.append(div);
    S.spikes[p.key] = 0; S.events[p.key] = 0;
  }
  if (L.marks.length) {
    const h = 16 * L.marks.length + 8;
    const div = el("div", { className: "raster" });
    const lbl = el("div", { className: "lbl" });
    lbl.append(el("span", {}, "stimuli and synaptic output: " + L.marks.map((m) => `${m.node}.${m.port} (${m.role})`).join(", ")));
    const c = el("canvas", { id: "raster-marks", height: h }); c.style.height = h + "px";
    div.append(lbl, c); rasters.append(div);
    for (const m of L.marks) S.stimuli[m.key] = 0;
  }
  const legend = $("raster-legend");
  if (L.populations.some((p) => p.typed)) for (const k of [0, 1, 2]) legend.append(swatch(TYPE_STYLE[k][1], TYPE_STYLE[k][0]));
  if (L.marks.length) legend.append(swatch("#b9770e", "stimulus / synaptic"));
  // rates
  const rs = [{ label: "s" }].concat(L.populations.map((p, i) => ({ label: p.name, stroke: COLORS[i % COLORS.length], width: 1.5 })));
  plots.rates = new uPlot(plotOpts(rs, 150, "Hz"), [[]].concat(L.populations.map(() => [])), $("rates"));
  // devices: one plot per node (each device, or each set's mean/min/max past aggregate_above)
  const byNode = {};
  for (const d of L.devices) if (!d.set) (byNode[d.node] = byNode[d.node] || { devs: [], sets: [] }).devs.push(d);
  for (const s of L.sets) (byNode[s.node] = byNode[s.node] || { devs: [], sets: [] }).sets.push(s);
  for (const [node, g] of Object.entries(byNode)) {
    const series = [{ label: "s" }], keys = [];
    g.devs.forEach((d, i) => { series.push({ label: d.name, stroke: COLORS[i % COLORS.length], width: 1.5, paths: uPlot.paths.stepped({ align: 1 }) }); keys.push([d.key, 1]); });
    g.sets.forEach((s, i) => {
      const c = COLORS[i % COLORS.length];
      series.push({ label: `${s.group} mean (${s.n})`, stroke: c, width: 1.5 }); keys.push([s.key, 1]);
      series.push({ label: "min", stroke: c, dash: [4, 3], width: 1 }); keys.push([s.key, 2]);
      series.push({ label: "max", stroke: c, dash: [4, 3], width: 1 }); keys.push([s.key, 3]);
    });
    const host = el("div", { id: `dev-${node}` }); $("devices").append(el("div", {}, node), host);
    const opts = plotOpts(series, 170, "kOhm");
    opts.hooks = { draw: [(u) => drawPulses(u, keys)] };
    plots[`dev-${node}`] = { plot: new uPlot(opts, [[]].concat(keys.map(() => [])), host), keys };
  }
  if (!L.devices.length) $("devices").append(el("div", { className: "pill" }, "no devices declared"));
  if (L.probe) plots.probe = new uPlot(plotOpts([{ label: "s" }, { label: "p50 us", stroke: COLORS[0] }, { label: "p99 us", stroke: COLORS[1] }], 120, "us"), [[], [], []], $("probe"));
  else $("probe-text").textContent = "(no probe_from in the network)";
  for (const ln of L.links) {
    const tr = el("tr", { id: `link-${ln.label}` });
    tr.append(el("td", { className: "lbl", title: ln.label }, ln.label));
    for (let i = 0; i < 10; i++) tr.append(el("td"));
    tr.children[8].append(el("canvas", { width: 90, height: 18 }));
    $("links").tBodies[0].append(tr);
  }
  for (const n of L.nodes) {
    const tr = el("tr", { id: `node-${n.name}` });
    tr.append(el("td", { title: n.kind }, n.name), el("td", {}, n.site || ""));
    for (let i = 0; i < 6; i++) tr.append(el("td"));
    $("nodes").tBodies[0].append(tr);
  }
  for (const [name, a, b] of L.phases) {
    const tr = el("tr"); for (const v of [name, fmt(a, 1), fmt(b, 1), "pending", ""]) tr.append(el("td", {}, v));
    $("phases").tBodies[0].append(tr);
  }
  if (!L.phases.length) { const tr = el("tr"); tr.append(el("td", { colSpan: 5 }, "no protocol phases: one session")); $("phases").tBodies[0].append(tr); }
}

function swatch(color, text) { const s = el("span"); const b = el("span", { className: "sw" }); b.style.background = color; s.append(b, text); return s; }

function plotOpts(series, height, unit) {
  const w = Math.max(300, (document.querySelector("main section:nth-child(2)").clientWidth || 420) - 24);
  return { width: w, height, series, legend: { live: false }, cursor: { show: false },
    scales: { x: { time: false } }, axes: [{ size: 28 }, { size: 52, label: unit, labelSize: 12 }] };
}

// --- frames -----------------------------------------------------------------------------------------
function take(f) {
  S.frames++; S.mode = f.mode; S.ended = !!f.ended;
  if (f.replace) { for (const k in buf) buf[k] = []; for (const k in devSeries) devSeries[k] = []; pulses = []; resetCounts(); }
  if (f.now != null) { S.now = f.now; lastFrameNow = f.now; lastFrameAt = performance.now(); }
  for (const [key, evs] of Object.entries(f.events || {})) {
    const b = buf[key] || (buf[key] = []);
    for (const e of evs) b.push(e);
    count(key, evs);
  }
  for (const [key, pts] of Object.entries(f.devices || {})) (devSeries[key] = devSeries[key] || []).push(...pts);
  for (const [key, pts] of Object.entries(f.sets || {})) (devSeries[key] = devSeries[key] || []).push(...pts);
  for (const p of f.pulses || []) pulses.push(p);
  for (const [t, action, text, source] of f.controls || []) (action === "mark" ? S.marks : S.holds).push({ t, action, text, source });
  if (f.resistance) S.resistances = f.resistance;
  if (f.nodes) { S.nodes = f.nodes; nodesTable(f.nodes); }
  if (f.links) { S.links = f.links; linksTable(f.links); }
  S.probe = f.probe || null;
  if (f.control) controlState(f.control);
  if (f.notes && f.notes.length) S.notes = f.notes;
  if (f.mode === "recorded" && f.counts) S.counts = f.counts;
  trim();
  sampleRates(f);
  $("mode").textContent = f.mode === "recorded" ? "recorded session" : f.ended ? "run ended" : "live";
  $("mode").className = "pill " + (f.mode === "live" && !f.ended ? "live" : "");
  if (f.mode === "live" && f.ended) banner("The run ended: the values shown are its final ones.");
}

function resetCounts() {
  for (const k in S.spikes) S.spikes[k] = 0; for (const k in S.events) S.events[k] = 0;
  for (const k in S.stimuli) S.stimuli[k] = 0; S.marks = []; S.holds = []; S.typed = {}; S.firstT = {}; S.lastT = {};
}

function count(key, evs) {
  if (!evs.length) return;
  const pop = L.populations.find((p) => p.key === key);
  if (pop) {
    let spikes = 0;
    const ty = S.typed[key] || (S.typed[key] = {});
    for (const e of evs) {
      if (pop.typed) { const name = (TYPE_STYLE[Math.round(e[2])] || ["other"])[0]; ty[name] = (ty[name] || 0) + 1; if (e[2] >= 1) spikes++; }
      else spikes++;
    }
    S.spikes[key] += spikes; S.events[key] += evs.length;
  } else if (key in S.stimuli) S.stimuli[key] += evs.length;
  if (!(key in S.firstT)) S.firstT[key] = evs[0][0];
  S.lastT[key] = evs[evs.length - 1][0];
}

function trim() {
  const now = currentNow();
  if (now == null) return;
  for (const b of Object.values(buf)) { let i = 0; while (i < b.length && b[i][0] < now - WINDOW_S - 1) i++; if (i) b.splice(0, i); }
}

function currentNow() {
  if (S.mode === "recorded") return S.now;
  if (lastFrameNow == null) return null;
  return S.ended ? lastFrameNow : lastFrameNow + (performance.now() - lastFrameAt) / 1000;
}

function sampleRates(f) {
  const now = currentNow();
  if (now == null || (f.mode === "live" && rateHist.t.length && now - rateHist.t[rateHist.t.length - 1] < 0.5)) return;
  if (f.mode === "recorded") { rateHist.t = []; rateHist.v = {}; }
  rateHist.t.push(now);
  for (const p of L.populations) {
    const b = buf[p.key] || [];
    let n = 0; for (let i = b.length - 1; i >= 0 && b[i][0] > now - RATE_WINDOW_S; i--) if (!p.typed || b[i][2] >= 1) n++;
    const r = n / RATE_WINDOW_S / p.size;
    (rateHist.v[p.key] = rateHist.v[p.key] || []).push(r);
    const lbl = $(`rate-${p.key}`); if (lbl) lbl.textContent = `${fmt(r, 2)} Hz per neuron` + (p.size > 1 ? `, ${fmt(r * p.size, 1)} Hz in all` : "");
  }
  while (rateHist.t.length && rateHist.t[0] < now - HISTORY_S) { rateHist.t.shift(); for (const v of Object.values(rateHist.v)) v.shift(); }
  plots.rates.setData([rateHist.t.slice()].concat(L.populations.map((p) => (rateHist.v[p.key] || []).slice())));
  if (f.probe && f.probe.p50 != null && plots.probe) {
    probeHist.t.push(now); probeHist.p50.push(f.probe.p50 * 1e6); probeHist.p99.push(f.probe.p99 * 1e6);
    while (probeHist.t[0] < now - HISTORY_S) { probeHist.t.shift(); probeHist.p50.shift(); probeHist.p99.shift(); }
    plots.probe.setData([probeHist.t, probeHist.p50, probeHist.p99]);
    $("probe-text").textContent = `p50 ${us(f.probe.p50)} us, p99 ${us(f.probe.p99)} us over ${f.probe.count} probes; lost ${fmt(f.probe.lost)}`;
  }
  devicesPlot(now);
}

// --- drawing ------------------------------------------------------------------------------------------
function drawRasters() {
  const now = currentNow();
  if (now != null) $("now").textContent = fmt(now, 1);
  const t0 = (now == null ? 0 : now) - WINDOW_S;
  for (const p of L.populations) {
    const c = $(`raster-${p.key}`); if (!c) continue;
    const w = c.clientWidth; if (c.width !== w) c.width = w;
    const g = c.getContext("2d"), h = c.height, row = h / p.size;
    g.clearRect(0, 0, w, h); grid(g, w, h, t0);
    for (const e of buf[p.key] || []) {
      if (e[0] < t0) continue;
      const x = (e[0] - t0) / WINDOW_S * w, y = (p.size - 1 - Math.min(e[1], p.size - 1)) * row;
      if (p.typed) {
        const [, color, shape] = TYPE_STYLE[Math.round(e[2])] || ["", "#000", "tick"];
        g.fillStyle = color;
        if (shape === "dot") { g.beginPath(); g.arc(x, y + row / 2, Math.max(1.5, Math.min(3, row / 4)), 0, 6.283); g.fill(); }
        else g.fillRect(x - 1, y + 1, 2, Math.max(1, row - 2));
      } else { g.fillStyle = "#1d232b"; g.fillRect(x - 0.5, y + (row > 4 ? 1 : 0), row > 4 ? 1.5 : 1, Math.max(1, row - (row > 4 ? 2 : 0))); }
    }
  }
  const c = $("raster-marks");
  if (c) {
    const w = c.clientWidth; if (c.width !== w) c.width = w;
    const g = c.getContext("2d"); g.clearRect(0, 0, w, c.height); grid(g, w, c.height, t0);
    L.marks.forEach((m, i) => {
      const y = 4 + 16 * i; g.fillStyle = "#6b7380"; g.font = "10px sans-serif"; g.fillText(`${m.node}.${m.port}`, 3, y + 10);
      g.fillStyle = m.role === "stimuli" ? "#b9770e" : "#148f77";
      for (const e of buf[m.key] || []) { if (e[0] < t0) continue; const x = (e[0] - t0) / WINDOW_S * w; g.beginPath(); g.moveTo(x, y + 2); g.lineTo(x - 3, y + 13); g.lineTo(x + 3, y + 13); g.fill(); }
    });
  }
  for (const cv of document.querySelectorAll("#rasters canvas")) operatorLines(cv, t0);
  requestAnimationFrame(drawRasters);
}

function operatorLines(c, t0) {
  const g = c.getContext("2d"), w = c.width, h = c.height;
  g.save(); g.setLineDash([3, 3]); g.font = "10px sans-serif";
  for (const m of S.marks.concat(S.holds)) {
    if (m.t < t0 || m.t > t0 + WINDOW_S) continue;
    const x = Math.round((m.t - t0) / WINDOW_S * w) + 0.5;
    g.strokeStyle = m.action === "mark" ? "#7d3c98" : m.action === "hold" ? "#c0392b" : "#1e8449";
    g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke();
    if (c.id === `raster-${L.populations.length ? L.populations[0].key : "marks"}`) { g.fillStyle = g.strokeStyle; g.fillText(m.action === "mark" ? m.text.slice(0, 40) : m.action, x + 3, 10); }
  }
  g.restore();
}

function grid(g, w, h, t0) {
  g.strokeStyle = "#eef0f3"; g.lineWidth = 1;
  for (let s = Math.ceil(t0); s < t0 + WINDOW_S; s++) { const x = Math.round((s - t0) / WINDOW_S * w) + 0.5; g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke(); }
}

function valueAt(points, t, col) { let v = null; for (const p of points) { if (p[0] > t) break; v = p[col]; } return v; }

function devicesPlot(now) {
  for (const [id, { plot, keys }] of Object.entries(plots)) {
    if (!id.startsWith("dev-")) continue;
    const times = new Set();
    for (const [key] of keys) for (const p of devSeries[key] || []) times.add(p[0]);
    if (now != null) times.add(now);
    const xs = Array.from(times).sort((a, b) => a - b);
    const data = [xs];
    for (const [key, col] of keys) {
      const pts = devSeries[key] || []; let j = 0, v = null; const ys = [];
      for (const x of xs) { while (j < pts.length && pts[j][0] <= x) { v = pts[j][col] / 1e3; j++; } ys.push(v); }
      data.push(ys);
    }
    plot.setData(data);
  }
}

function drawPulses(u, keys) {
  const g = u.ctx; g.save();
  const idx = {}; keys.forEach(([k, col], i) => { if (col === 1 && !(k in idx)) idx[k] = i + 1; });
  for (const [t, key, dir, n] of pulses) {
    const si = idx[key]; if (!si) continue;
    const r = valueAt(devSeries[key] || [], t, 1); if (r == null) continue;
    const x = u.valToPos(t, "x", true), y = u.valToPos(r / 1e3, "y", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    const s = 4 * devicePixelRatio; g.fillStyle = dir === "ltp" ? "#1e8449" : "#c0392b"; g.beginPath();
    if (dir === "ltp") { g.moveTo(x - s, y - s - 2); g.lineTo(x + s, y - s - 2); g.lineTo(x, y - 2); }   // LTP: R falls, a mark pointing down
    else { g.moveTo(x - s, y + s + 2); g.lineTo(x + s, y + s + 2); g.lineTo(x, y + 2); }                  // LTD: R rises, pointing up
    g.fill();
    if (n > 1) { g.font = `${9 * devicePixelRatio}px sans-serif`; g.fillText(String(n), x + s, y); }
  }
  g.restore();
}

function linksTable(links) {
  for (const ln of L.links) {
    const tr = document.getElementById(`link-${ln.label}`), v = links[ln.label]; if (!tr || !v) continue;
    const c = tr.children;
    c[1].textContent = v.up == null ? "?" : v.up ? "up" : "DOWN"; c[1].className = v.up === false ? "down" : v.up ? "up" : "";
    c[2].textContent = fmt(v.sent); c[3].textContent = fmt(v.received); c[4].textContent = fmt(v.dropped);
    c[5].textContent = fmt(v.malformed); c[6].textContent = us(v.p50); c[7].textContent = us(v.p99);
    c[9].textContent = ln.inter_site ? us(v.offset) : "-"; c[10].textContent = ln.inter_site ? us(v.rtt) : "-";
    const cv = c[8].firstChild, g = cv.getContext("2d"); g.clearRect(0, 0, cv.width, cv.height);
    const hist = (v.histogram || []).filter((b) => b[1] >= 0); const max = Math.max(1, ...hist.map((b) => b[1]));
    const bw = cv.width / Math.max(1, hist.length); g.fillStyle = "#2471a3";
    hist.forEach((b, i) => { const bh = b[1] / max * cv.height; g.fillRect(i * bw, cv.height - bh, Math.max(1, bw - 1), bh); });
    cv.title = hist.map((b) => `<= ${b[0] == null ? "inf" : us(b[0])} us: ${b[1]}`).join("\n");
  }
}

function nodesTable(nodes) {
  const held = [];
  S.interlock = {};
  for (const n of L.nodes) {
    const tr = document.getElementById(`node-${n.name}`), v = nodes[n.name]; if (!tr || !v) continue;
    const c = tr.children;
    c[2].textContent = v.up ? (v.ready === false ? "starting" : "up") : "down"; c[2].className = v.up ? "up" : "down"; c[2].title = v.error || "";
    c[3].textContent = us(v.tick_p99); c[4].textContent = fmt(v.overruns); c[5].textContent = fmt(v.cpu, 1); c[6].textContent = fmt(v.rss_mb);
    const lock = v.interlock;
    if (lock && lock.held != null) {
      S.interlock[n.name] = { held: !!lock.held, reason: lock.reason || "", holds: lock.holds, heldEvents: lock.held_events };
      c[7].textContent = lock.held ? `HELD: ${lock.reason || "?"}` : `clear (${fmt(lock.holds)} holds, ${fmt(lock.held_events)} held)`;
      c[7].className = lock.held ? "held" : ""; if (lock.held) held.push(n.name);
    } else c[7].textContent = "-";
  }
  $("interlock-summary").innerHTML = "";
  $("interlock-summary").append(el("span", { className: held.length ? "pill bad" : "pill" }, held.length ? `INTERLOCK HOLDS ${held.join(", ")}` : "interlock clear"));
}
let held_ = false;  // the operator's hold, as the last successful control left it

function phasesTable() {
  const now = currentNow(); const rows = $("phases").tBodies[0].children;
  let cur = null;
  L.phases.forEach(([name, a, b], i) => {
    const tr = rows[i]; if (!tr || now == null) return;
    const state = now >= b ? "done" : now >= a ? "running" : "pending";
    tr.children[3].textContent = state;
    if (state === "running") cur = [name, b - now];
    if (state !== "pending") {
      const seen = L.populations.map((p) => { const n = (buf[p.key] || []).filter((e) => e[0] >= a && e[0] < b).length; return n ? `${p.name} ${n}` : null; }).filter(Boolean);
      if (seen.length || state === "running") tr.children[4].textContent = seen.join(", ");
    }
  });
  $("phase").textContent = cur ? `phase ${cur[0]}, ${fmt(cur[1], 1)} s left` : L.phases.length && now != null && now >= L.phases[L.phases.length - 1][2] ? "protocol done" : "";
}

// --- controls -----------------------------------------------------------------------------------------
function controlState(c) {
  S.forbidden = c.forbidden; S.controlLog = c.log; S.controlsEnabled = c.enabled;
  const can = c.enabled && !!token && S.mode === "live" && !S.ended;
  $("hold").disabled = !can; $("mark").disabled = !can; $("mark-text").disabled = !can;
  if (!token) $("control-result").textContent = "read-only (no token)";
  $("forbidden").textContent = `${c.forbidden} refused without the token`;
  const log = $("log"); log.textContent = "";
  for (const e of c.log.slice().reverse()) log.append(el("div", {}, `${e.time} ${e.action}${e.text ? ` "${e.text}"` : ""} from ${e.peer}: ${e.ok ? "ok" : "refused: " + e.error}`));
}

async function control(action, body) {
  const r = await fetch(`/api/control/${action}`, { method: "POST", headers: { "Content-Type": "application/json", "X-Spikewire-Token": token }, body: JSON.stringify(body || {}) });
  let reply; try { reply = await r.json(); } catch (e) { reply = { ok: false, error: `HTTP ${r.status}` }; }
  S.lastControl = { action, status: r.status, ...reply };
  if (reply.ok && (action === "hold" || action === "release")) { held_ = action === "hold"; $("hold").textContent = held_ ? "Release" : "Hold stimulation"; }
  $("control-result").textContent = reply.ok ? `${action}: ok` : `${action}: ${reply.error}`;
  $("control-result").className = "pill " + (reply.ok ? "live" : "bad");
  return S.lastControl;
}
S.control = control;

$("hold").onclick = () => control(held_ ? "release" : "hold");
$("mark").onclick = async () => { const t = $("mark-text").value.trim(); if (!t) return; const r = await control("mark", { text: t }); if (r.ok) $("mark-text").value = ""; };
$("mark-text").onkeydown = (e) => { if (e.key === "Enter") $("mark").click(); };

function banner(text) { const b = $("banner"); b.textContent = text; b.style.display = "block"; }

// --- start ----------------------------------------------------------------------------------------------
function connect() {
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.onopen = () => { S.connected = true; };
  ws.onmessage = (m) => { take(JSON.parse(m.data)); phasesTable(); };
  ws.onclose = () => { S.connected = false; if (S.mode !== "recorded" && !S.ended) setTimeout(connect, 1000); };
}

async function start() {
  L = await (await fetch("/api/layout")).json();
  S.layout = L; S.mode = L.mode;
  build();
  if (L.mode === "recorded") {
    const sl = $("slider"); $("slider-row").style.display = "flex"; sl.max = L.end; sl.value = L.end; $("slider-t").textContent = `${fmt(L.end, 1)} s`;
    let pending = null;
    sl.oninput = () => { $("slider-t").textContent = `${fmt(+sl.value, 1)} s`; clearTimeout(pending); pending = setTimeout(() => ws.send(JSON.stringify({ t: +sl.value })), 60); };
    S.seek = (t) => { sl.value = t; ws.send(JSON.stringify({ t })); };
  }
  connect();
  requestAnimationFrame(drawRasters);
}
start();
