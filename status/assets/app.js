// mtftpd status page: polls ../api/transfers once a second and redraws.
// Names come from the network (TFTP file names, DHCP host names): they are
// only ever set as text, never parsed as HTML.
"use strict";

const api = "../api/transfers";
const pollMs = 1000;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

function bytes(n) {
  if (n < 0) return "?";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function rate(r) { return (r * 8 / 1e6).toFixed(1) + " Mbit/s"; }

function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}
const ago = (t, now) => span(now - new Date(t));
const until = (t, now) => span(new Date(t) - now);

function bar(done, total) {
  const pct = total > 0 ? Math.min(100, 100 * done / total) : 0;
  const inner = el("div");
  inner.style.width = pct.toFixed(1) + "%";
  return el("div", { class: "bar", role: "progressbar", "aria-valuenow": pct.toFixed(0), "aria-valuemin": "0", "aria-valuemax": "100" }, inner);
}

function row(cells) {
  const tr = el("tr");
  for (const [label, content, cls] of cells) {
    tr.append(el("td", cls ? { "data-label": label, class: cls } : { "data-label": label }, content));
  }
  return tr;
}

function fill(id, rows) {
  const tbody = document.querySelector("#" + id + " tbody");
  tbody.replaceChildren(...rows);
  document.getElementById(id).hidden = rows.length === 0;
  document.getElementById(id + "-empty").hidden = rows.length !== 0;
}

function fetching(t) {
  const pct = t.size > 0 ? " " + (100 * t.bytes / t.size).toFixed(0) + " %" : "";
  return el("div", { class: "fetch" },
    el("code", { class: "file" }, t.file),
    bar(t.bytes, t.size),
    el("span", { class: "muted" },
      bytes(t.bytes) + " / " + bytes(t.size) + pct + " · " + rate(t.rate) +
      " · " + t.retransmits + " retransmits · blksize " + t.blksize + " × " + t.windowsize));
}

function render(s) {
  const now = new Date(s.time);
  const byId = new Map(s.transfers.map(t => [t.id, t]));
  fill("clients", s.clients.map(c => {
    const what = el("div");
    for (const id of c.transfers || []) if (byId.has(id)) what.append(fetching(byId.get(id)));
    for (const g of c.sessions || []) what.append(el("div", { class: "muted" }, "multicast " + g));
    if (!what.childElementCount) what.append(el("span", { class: "muted" }, "idle"));
    return row([
      ["MAC", c.mac || "—"], ["IP", c.ip], ["Arch", c.arch || "—"],
      ["Lease", c.lease_expiry ? (c.static ? "static, " : "") + "ends in " + until(c.lease_expiry, now) : "—"],
      ["Fetching", what],
    ]);
  }));
  fill("sessions", s.sessions.map(m => {
    const rx = el("div");
    for (const r of m.receivers) {
      rx.append(el("div", {}, r.addr + (r.mac ? " " + r.mac : "") + (r.master ? " (master)" : "")));
    }
    return row([
      ["File", el("div", {}, el("code", { class: "file" }, m.file), el("div", { class: "muted" }, m.dialect + " · " + bytes(m.size)))],
      ["Group", m.group],
      ["Progress", el("div", {}, bar(m.position, m.blocks), el("span", { class: "muted" }, "block " + m.position + " / " + m.blocks))],
      ["Repairs", String(m.repairs), "num"],
      ["Receivers", rx],
    ]);
  }));
  fill("recent", s.recent.slice(0, 20).map(t => row([
    ["Ended", ago(t.end, now) + " ago", "num"],
    ["Client", t.client + (t.mac ? " " + t.mac : "")],
    ["File", el("code", { class: "file" }, t.file)],
    ["Size", bytes(t.bytes), "num"],
    ["Rate", rate(t.rate), "num"],
    ["Retransmits", String(t.retransmits), "num"],
    ["Outcome", el("span", { class: t.outcome === "ok" || t.outcome === "ok-unconfirmed" || t.outcome === "probe" ? "ok" : "bad" }, t.outcome)],
  ])));
  const total = s.transfers.reduce((a, t) => a + t.rate, 0);
  document.getElementById("summary").textContent =
    s.clients.length + " clients · " + s.transfers.length + " transfers running (" + rate(total) + ") · " +
    s.sessions.length + " multicast sessions";
  document.getElementById("updated").textContent = "updated " + now.toLocaleTimeString();
}

// The reimaging table: shown only when the server has tasks
// (/api/imaging answers; 404 without imaging.dir).
async function pollImaging() {
  try {
    const r = await fetch("../api/imaging", { cache: "no-store" });
    if (!r.ok) return;
    const o = await r.json();
    document.getElementById("imaging-section").hidden = o.tasks.length === 0;
    fill("imaging", o.machines.map(m => row([
      ["Machine", m.mac + (m.host ? " " + m.host : "")],
      ["Task", m.task],
      ["State", el("span", { class: m.state === "done" ? "ok" : m.state === "failed" ? "bad" : "" }, m.state + (m.attempts > 1 ? " (attempt " + m.attempts + ")" : ""))],
      ["Progress", el("div", {}, bar(m.written, m.total), el("span", { class: "muted" }, m.total > 0 ? (100 * m.written / m.total).toFixed(0) + " %" : "—"))],
      ["Time", m.started ? span(m.seconds * 1000) : "—", "num"],
      ["Reason", m.reason || ""],
    ])));
    // Per image stream: receivers, rate, bytes on the wire per byte of
    // the image, and the estimated time until all are done.
    fill("imaging-sessions", o.sessions.map(x => row([
      ["Image stream", x.file + " (" + x.dialect + ")"],
      ["Receivers", String(x.receivers), "num"],
      ["Rate", rate(x.rate_MBps * 1e6), "num"],
      ["Wire", x.wire_ratio > 0 ? x.wire_ratio.toFixed(2) + "×" : "—", "num"],
      ["To go", x.eta_seconds >= 0 ? span(x.eta_seconds * 1000) : "—", "num"],
    ])));
  } catch (e) {
    // The transfers poll reports an unreachable server.
  }
}

async function poll() {
  pollImaging();
  try {
    const r = await fetch(api, { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    render(await r.json());
  } catch (e) {
    document.getElementById("summary").textContent = "cannot reach the server: " + e.message;
  }
  setTimeout(poll, pollMs);
}

poll();
