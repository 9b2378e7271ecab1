/* coachrec dashboard: small page scripts over the dashboard's JSON API (same keys as /v1). */
"use strict";
const BASE = document.body.dataset.base || "/ui";

function toast(text, bad) {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = text;
  t.className = bad ? "show bad" : "show";
  clearTimeout(t._timer);
  t._timer = setTimeout(() => { t.className = ""; }, 4000);
}

async function api(path, body) {
  const r = await fetch(BASE + path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Accept": "application/json" },
    body: JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch (e) { data = { detail: r.statusText }; }
  if (!r.ok) throw new Error(`${r.status}: ${data.detail || r.statusText}`);
  return data;
}

/* -- traces: pick two rows, compare -------------------------------------------------- */
function initTraces() {
  const button = document.getElementById("compare");
  if (!button) return;
  const picks = () => [...document.querySelectorAll("input.pick:checked")].map(i => i.value);
  document.querySelectorAll("input.pick").forEach(i => i.addEventListener("change", () => {
    button.disabled = picks().length !== 2;
  }));
  button.addEventListener("click", () => {
    const [a, b] = picks();
    location.href = `${BASE}/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`;
  });
}

/* -- a trace: other traces of the same request --------------------------------------- */
function initSameRequest() {
  const box = document.getElementById("same-request");
  if (!box) return;
  document.getElementById("find-same").addEventListener("click", async () => {
    const id = box.dataset.trace;
    const r = await fetch(`${BASE}/api/traces/${id}/same-request`, { credentials: "same-origin" });
    const data = await r.json();
    if (!r.ok) return toast(`${r.status}: ${data.detail}`, true);
    box.textContent = data.traces.length ? "Same request in other traces: " : "No other trace of this request.";
    data.traces.forEach((t, n) => {
      const a = document.createElement("a");
      a.className = "mono";
      a.href = `${BASE}/compare?a=${id}&b=${t.trace_id}`;
      a.textContent = `compare with ${t.trace_id.slice(0, 12)}`;
      if (n) box.append(", ");
      box.append(a);
    });
  });
}

/* -- review: keyboard-driven annotation ------------------------------------------------ */
function initReview() {
  const queue = document.getElementById("queue");
  if (!queue) return;
  const items = () => [...queue.querySelectorAll("li.item")];
  let current = 0;
  function select(i) {
    const all = items();
    if (!all.length) return;
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach((el, n) => el.classList.toggle("current", n === current));
    all[current].scrollIntoView({ block: "nearest" });
  }
  function nextPending() {
    const all = items();
    for (let n = 1; n <= all.length; n++) {
      const i = (current + n) % all.length;
      if (!all[i].classList.contains("done")) return select(i);
    }
  }
  async function annotate(action, label) {
    const el = items()[current];
    if (!el || el.classList.contains("done")) return;
    const note = el.querySelector("textarea.note").value.trim();
    const fix = el.querySelector("textarea.correction").value.trim();
    const text = [note, fix ? `correction: ${fix}` : ""].filter(Boolean).join("\n") || null;
    let body = { action, note: text };
    if (label) body = label === el.dataset.judge ? { action: "accept", note: text } : { action: "correct", label, note: text };
    try {
      const out = await api(`/api/review/${el.dataset.id}`, body);
      el.classList.add("done", out.status);
      el.querySelector(".done-mark").textContent = ` → ${out.status}${out.human_label ? " " + out.human_label : ""} by ${out.reviewer}`;
      document.getElementById("counts").innerHTML = Object.entries(out.counts).sort()
        .map(([k, v]) => `<span class="tag">${k} ${v}</span>`).join(" ");
      toast(`${out.status}${out.human_label ? ": " + out.human_label : ""}`);
      nextPending();
    } catch (e) { toast(e.message, true); }
  }
  async function saveNote() {
    const el = items()[current];
    const note = el.querySelector("textarea.note").value.trim();
    if (!note) return;
    try { await api(`/api/review/${el.dataset.id}`, { action: "note", note }); toast("note saved"); }
    catch (e) { toast(e.message, true); }
  }
  document.addEventListener("keydown", ev => {
    const inText = ev.target instanceof HTMLTextAreaElement || ev.target instanceof HTMLInputElement;
    if (inText) {
      if (ev.key === "Escape") { ev.target.blur(); ev.preventDefault(); }
      else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && ev.target.classList.contains("note")) { saveNote(); ev.preventDefault(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const el = items()[current];
    switch (ev.key) {
      case "j": case "ArrowDown": select(current + 1); break;
      case "k": case "ArrowUp": select(current - 1); break;
      case "p": annotate(null, "pass"); break;
      case "f": annotate(null, "fail"); break;
      case "s": annotate("skip"); break;
      case "n": if (el) el.querySelector("textarea.note").focus(); break;
      case "e": if (el) el.querySelector("textarea.correction").focus(); break;
      default: return;
    }
    ev.preventDefault();
  });
  items().forEach((el, n) => el.addEventListener("click", () => select(n)));
  select(0);
}

/* -- golden sets: publish ----------------------------------------------------------------- */
function initGolden() {
  const form = document.getElementById("publish");
  if (!form) return;
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const name = form.elements.name.value.trim();
    try {
      const out = await api(`/api/golden/${encodeURIComponent(name)}`, { description: form.elements.description.value || null });
      toast(`published ${out.set_name} v${out.version} (${out.n_cases} cases)`);
      location.href = `${BASE}/golden/${encodeURIComponent(out.set_name)}?version=${out.version}`;
    } catch (e) { toast(e.message, true); }
  });
}

/* -- registry: rollback (admin) ----------------------------------------------------------- */
function initRollback() {
  const form = document.getElementById("rollback");
  if (!form) return;
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      const out = await api("/api/registry/rollback", { to: form.elements.to.value || null, note: form.elements.note.value });
      document.getElementById("champion").textContent = out.champion;
      toast(`champion is now ${out.champion}`);
    } catch (e) { toast(e.message, true); }
  });
}

/* -- charts (uPlot) --------------------------------------------------------------------- */
const COLORS = ["#2b7bba", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d"];

function plot(el, title, xs, series, yLabel) {
  if (!el || !xs.length || typeof uPlot === "undefined") return;
  const opts = {
    width: Math.max(320, el.clientWidth || 600), height: 220, title,
    scales: { x: xs.length > 1 ? { time: true } : { time: true, range: [xs[0] - 3600, xs[0] + 3600] } },
    axes: [{}, { label: yLabel }],
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: xs.length < 60 } }))],
  };
  new uPlot(opts, [xs, ...series.map(s => s.values)], el);
}

function aligned(pointsBySeries, key) {
  const xs = [...new Set(pointsBySeries.flatMap(s => s.points.map(p => p.bucket_ns)))].sort((a, b) => a - b);
  const series = pointsBySeries.map(s => {
    const m = new Map(s.points.map(p => [p.bucket_ns, p[key]]));
    return { label: s.label, values: xs.map(x => (m.has(x) ? m.get(x) : null)) };
  });
  return [xs.map(x => x / 1e9), series];
}

function initFailureCharts() {
  const node = document.getElementById("failure-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  document.querySelectorAll(".plot[data-mode]").forEach(el => {
    const m = data.modes[Number(el.dataset.mode)];
    const rate = { label: "rate (%)", points: m.over_time.map(p => ({ bucket_ns: p.bucket_ns, v: p.rate === null ? null : 100 * p.rate })) };
    const spans = m.by_span.map(s => ({ label: `${s.span} (traces)`, points: s.points.map(p => ({ bucket_ns: p.bucket_ns, v: p.failed })) }));
    const [xs, series] = aligned([rate, ...spans], "v");
    plot(el, m.name, xs, series, "% / traces");
  });
}

function initCostCharts() {
  const node = document.getElementById("cost-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  const tiers = Object.entries(data.series);
  const lat = tiers.flatMap(([tier, points]) => [
    { label: `${tier} p50`, points: points.map(p => ({ bucket_ns: p.bucket_ns, v: p.p50_ms })) },
    { label: `${tier} p95`, points: points.map(p => ({ bucket_ns: p.bucket_ns, v: p.p95_ms })) },
  ]);
  let [xs, series] = aligned(lat, "v");
  plot(document.getElementById("latency-plot"), "latency per tier", xs, series, "ms");
  const cost = tiers.flatMap(([tier, points]) => [
    { label: `${tier} USD`, points: points.map(p => ({ bucket_ns: p.bucket_ns, v: p.cost })) },
    { label: `${tier} requests`, points: points.map(p => ({ bucket_ns: p.bucket_ns, v: p.requests })) },
  ]);
  [xs, series] = aligned(cost, "v");
  plot(document.getElementById("cost-plot"), "cost and requests per tier", xs, series, "USD / requests");
}

initTraces();
initSameRequest();
initReview();
initGolden();
initRollback();
initFailureCharts();
initCostCharts();
