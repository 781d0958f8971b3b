// DCE live page: seeded from GET /v1/calls, then fed by the /v1/events WebSocket.
// The read key comes from the URL fragment (#key=...) or a prompt, and stays in this tab.
"use strict";
(function () {
  const frag = new URLSearchParams(location.hash.slice(1));
  let key = frag.get("key") || sessionStorage.getItem("dce-key");
  if (!key) key = prompt("DCE read key") || "";
  sessionStorage.setItem("dce-key", key);
  const calls = new Map();           // call_id -> row data
  const offered = [];                // timestamps (ms) of call.started / call.rejected
  let answered = 0, finished = 0;    // for ASR: answered / routed calls that ended
  let verified = 0, judged = 0;      // STIR/SHAKEN: calls verified A/B/C / calls with a verdict
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const hhmmss = (t) => new Date(t).toLocaleTimeString();
  // Events arrive with numbers masked; /v1/calls gives them whole: a wall screen masks them
  // the same way (all but the first four and last two characters).
  const mask = (n) => { n = String(n || ""); const h = n.length > 8 ? 4 : 0; return [...n].map((c, i) => (i < h || i + 2 >= n.length ? c : "*")).join(""); };

  // A STIR/SHAKEN verdict as shown: A/B/C verified, the rest as DCE names them.
  const stirCell = (v) => v ? `<span class="${/^[ABC]$/.test(v) ? "ok" : v.startsWith("failed") ? "bad" : "warn"}">${esc(v)}</span>` : "";
  function judge(v) {
    if (!v || v === "pending") return;
    judged++;
    if (/^[ABC]$/.test(v)) verified++;
  }

  function render() {
    const rows = [...calls.values()].sort((a, b) => a.since - b.since).map((c) =>
      `<tr data-call="${esc(c.id)}"><td>${esc(c.id.slice(0, 8))}</td><td>${esc(c.campaign)}</td><td>${esc(c.caller)}</td>` +
      `<td>${esc(c.buyer || "")}</td><td>${esc(c.state)}</td><td>${stirCell(c.stir)}</td><td>${Math.round((Date.now() - c.since) / 1000)} s</td></tr>`);
    $("calls").innerHTML = rows.join("");
    $("active").textContent = calls.size;
    const now = Date.now();
    while (offered.length && now - offered[0] > 60000) offered.shift();
    $("cps").textContent = (offered.length / 60).toFixed(2);
    $("asr").textContent = finished ? Math.round((100 * answered) / finished) + " %" : "–";
    $("stir").textContent = judged ? Math.round((100 * verified) / judged) + " %" : "–";
  }
  function prepend(id, html, max) {
    const tb = $(id);
    tb.insertAdjacentHTML("afterbegin", html);
    while (tb.rows.length > max) tb.deleteRow(tb.rows.length - 1);
  }
  function onEvent(e) {
    const t = Date.parse(e.at) || Date.now();
    switch (e.type) {
      case "call.started":
        offered.push(t);
        calls.set(e.call_id, { id: e.call_id, campaign: e.campaign, caller: e.caller, state: "ringing", stir: e.stir, since: t });
        judge(e.stir);
        break;
      case "auction.completed":
        prepend("auctions", `<tr><td>${hhmmss(t)}</td><td>${esc(e.campaign)}</td><td>${esc((e.bids || []).map((b) => `${b.buyer} ${(b.bid_cents / 100).toFixed(2)} (${b.outcome})`).join(", "))}</td></tr>`, 15);
        break;
      case "call.answered": {
        const c = calls.get(e.call_id);
        if (c) { c.state = "connected"; c.buyer = e.buyer; }
        break;
      }
      case "call.completed":
        calls.delete(e.call_id);
        finished++;
        if (e.disposition === "answered") answered++;
        break;
      case "call.rejected":
        offered.push(t);
        judge(e.stir);
        prepend("rejections", `<tr><td>${hhmmss(t)}</td><td>${esc(e.code)}</td><td>${esc(e.reason)}${e.compliance && e.compliance.startsWith("reject:") ? " (" + esc(e.compliance.slice(7)) + ")" : ""}</td><td>${stirCell(e.stir)}</td><td>${esc(e.campaign)}</td></tr>`, 15);
        break;
    }
    render();
  }
  async function seed() {
    try {
      const r = await fetch("/v1/calls", { headers: { Authorization: "Bearer " + key } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const body = await r.json();
      for (const c of body.calls) {
        if (!calls.has(c.id)) calls.set(c.id, { id: c.id, campaign: c.campaign, caller: mask(c.caller), buyer: c.buyer, state: c.state, stir: c.stir, since: Date.now() - c.age_s * 1000 });
      }
      render();
    } catch (err) {
      $("status").textContent = "cannot read calls: " + err.message;
      $("status").className = "bad";
    }
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol.
    const ws = new WebSocket(`${proto}//${location.host}/v1/events`, ["dce.events", "bearer." + key]);
    ws.onopen = () => { $("status").textContent = "live"; $("status").className = "ok"; seed(); };
    ws.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (err) { console.error(err); } };
    ws.onclose = () => { $("status").textContent = "disconnected — retrying"; $("status").className = "bad"; setTimeout(connect, 2000); };
  }
  setInterval(render, 1000);
  connect();
})();
