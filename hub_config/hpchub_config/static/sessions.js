// hpchub: live session cards (home page, spawn-pending page).
// The page is complete without this script; it refreshes the cards' fields from
// GET /hub/api/hpchub/sessions/<user> every few seconds and counts the remaining
// walltime down each second. On the home page (data-reload) a server that appears,
// disappears or changes state reloads the page, which renders the new cards.
(function () {
  "use strict";
  const root = document.getElementById("hpchub-sessions");
  if (!root) return;
  const api = root.dataset.api;
  const reload = root.dataset.reload === "1";
  let offset = 0; // server clock - browser clock (seconds)

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function localTime(epoch) {
    return epoch ? new Date(epoch * 1000).toLocaleString() : "";
  }

  function setField(card, name, text) {
    const element = card.querySelector('[data-field="' + name + '"]');
    if (element && text !== undefined && text !== null && text !== "") {
      element.textContent = text;
    }
  }

  function tick() {
    const now = Date.now() / 1000 + offset;
    for (const card of root.querySelectorAll(".hpchub-session")) {
      const ends = Number(card.dataset.endsAt);
      if (ends && card.dataset.status === "running") {
        setField(card, "remaining_text", duration(ends - now));
      }
    }
  }

  function cardsOf() {
    const seen = {};
    for (const card of root.querySelectorAll(".hpchub-session")) {
      seen[card.dataset.server] = card.dataset.status;
    }
    return seen;
  }

  async function refresh() {
    let data;
    try {
      const response = await fetch(api, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      data = await response.json();
    } catch (e) {
      return;
    }
    offset = data.now - Date.now() / 1000;
    const before = cardsOf();
    let changed = false;
    for (const s of data.sessions) {
      const card = root.querySelector('.hpchub-session[data-server="' + CSS.escape(s.name) + '"]');
      const shown = s.status !== "stopped" || (s.last_end && s.last_end.job_id);
      if (!card) {
        changed = changed || (shown && s.status !== "stopped");
        continue;
      }
      if (card.dataset.status !== s.status) changed = true;
      card.dataset.endsAt = s.ends_at || "";
      card.dataset.expectedStart = s.expected_start || "";
      setField(card, "summary", s.summary);
      setField(card, "job_id", s.job_id);
      setField(card, "node", s.node);
      setField(card, "log_path", s.log_path);
      if (s.reason_text) {
        setField(card, "reason_text", s.reason_text + (s.reason ? " (Slurm: " + s.reason + ")" : ""));
      }
      setField(card, "expected_text", localTime(s.expected_start));
      setField(card, "started_text", localTime(s.started_at));
      delete before[s.name];
    }
    for (const name in before) {
      if (before[name] !== "stopped") changed = true; // its server is gone
    }
    if (changed && reload) window.location.reload();
    tick();
  }

  refresh();
  setInterval(refresh, 5000);
  setInterval(tick, 1000);
})();
