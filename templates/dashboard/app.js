// Live updates for the dashboard. The server renders every section; this
// script fetches /ui/live about once a second and swaps each [data-live]
// section whose markup changed, so there is one renderer (html/template) and
// no client-side model. It also keeps relative times and the connection
// indicator current, and flashes what just changed.
(function () {
  "use strict";

  var body = document.body;
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 1000;
  var conn = document.getElementById("conn");
  var connText = conn ? conn.querySelector(".conn-text") : null;
  var updated = document.getElementById("updated");
  var lastOK = Date.now();
  var failures = 0;
  var paused = false;
  var timer = null;

  // The unformatted markup of every live section as last received, to tell
  // real changes from our own time formatting.
  var last = {};
  document.querySelectorAll("[data-live]").forEach(function (el) {
    last[el.id] = el.cloneNode(true);
  });

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function clock(d) {
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  // stamp is the clock for today, with the date for anything older.
  function stamp(d) {
    var now = new Date();
    if (d.toDateString() === now.toDateString()) return clock(d);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock(d);
  }

  function span(ms) {
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m" + pad(s % 60) + "s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + "h" + pad(m % 60) + "m";
    return Math.floor(h / 24) + "d" + pad(h % 24) + "h";
  }

  function when(el) {
    var v = el.getAttribute("datetime");
    if (!v || v.indexOf("0001-01-01") === 0) return null;
    var d = new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }

  // formatTimes renders server timestamps in the browser's zone and keeps
  // "ago" and uptime texts moving between polls.
  function formatTimes(root) {
    var now = Date.now();
    root.querySelectorAll("time.stamp").forEach(function (el) {
      var d = when(el);
      if (!d) { el.textContent = "—"; return; }
      el.textContent = stamp(d);
      el.title = d.toString();
    });
    root.querySelectorAll("time.ago").forEach(function (el) {
      var d = when(el);
      if (!d) { el.textContent = ""; return; }
      var ms = now - d.getTime();
      el.textContent = ms < 1000 ? "(just now)" : "(" + span(ms) + " ago)";
    });
    root.querySelectorAll("tr[data-at]").forEach(function (el) {
      var d = new Date(el.getAttribute("data-at"));
      el.classList.toggle("fresh", now - d.getTime() < 60000);
    });
    root.querySelectorAll("time.since").forEach(function (el) {
      var d = when(el);
      if (d) { el.textContent = span(Math.max(0, now - d.getTime())); el.title = "started " + d.toString(); }
    });
  }

  // Reaction bars on a log scale: 1 ms is a sliver, 10 s the full width.
  function sizeBars(root) {
    root.querySelectorAll(".bar[data-ms]").forEach(function (el) {
      var ms = parseFloat(el.getAttribute("data-ms"));
      if (!(ms > 0)) return;
      var pct = Math.log10(Math.max(ms, 1)) / 4 * 100;
      el.style.width = Math.max(2, Math.min(100, pct)) + "%";
      el.title = ms.toFixed(1) + " ms";
    });
  }

  // sig is what must change for an element to flash: its data-sig when it
  // has one (the state, without fast-moving details), else its markup.
  function sig(el) {
    return el.hasAttribute("data-sig") ? el.getAttribute("data-sig") : el.outerHTML;
  }

  function keyed(root) {
    var m = {};
    root.querySelectorAll("[data-key]").forEach(function (el) { m[el.getAttribute("data-key")] = sig(el); });
    return m;
  }

  function applySummary(el) {
    var title = el.getAttribute("data-title");
    if (title) document.title = title;
    var verdict = el.getAttribute("data-verdict") || "unknown";
    var icon = document.getElementById("favicon");
    var href = body.getAttribute("data-favicon-" + verdict);
    if (icon && href && icon.getAttribute("href") !== href) icon.setAttribute("href", href);
  }

  function swap(html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    tpl.content.querySelectorAll("[data-live]").forEach(function (fresh) {
      var id = fresh.id;
      var cur = document.getElementById(id);
      if (!cur) return;
      var prev = last[id];
      if (prev && prev.outerHTML === fresh.outerHTML) return;
      var before = prev ? keyed(prev) : {};
      last[id] = fresh.cloneNode(true);
      cur.replaceWith(fresh);
      // Flash the cards, rows and pools that are new or changed.
      if (prev) {
        fresh.querySelectorAll("[data-key]").forEach(function (el) {
          if (before[el.getAttribute("data-key")] !== sig(el)) el.classList.add("flash");
        });
      }
      formatTimes(fresh);
      sizeBars(fresh);
      if (id === "summary") applySummary(fresh);
    });
  }

  function setConn(state, text) {
    if (!conn) return;
    conn.classList.toggle("down", state === "down");
    conn.classList.toggle("paused", state === "paused");
    if (connText) connText.textContent = text;
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function poll() {
    if (paused) return;
    if (document.hidden) { schedule(refreshMs * 5); return; }
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var abort = setTimeout(function () { if (ctl) ctl.abort(); }, Math.max(4000, refreshMs * 4));
    fetch("/ui/live", { cache: "no-store", headers: { "Accept": "text/html" }, signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        swap(html);
        failures = 0;
        lastOK = Date.now();
        body.classList.remove("stale");
        setConn("live", "live");
        if (updated) { updated.setAttribute("datetime", new Date(lastOK).toISOString()); updated.textContent = clock(new Date(lastOK)); }
      })
      .catch(function () {
        failures++;
        setConn("down", "agent not answering");
        if (failures >= 2) body.classList.add("stale");
      })
      .then(function () {
        clearTimeout(abort);
        // Back off gently while the agent is away.
        schedule(failures ? Math.min(refreshMs * (1 + failures), 10000) : refreshMs);
      });
  }

  function tick() {
    formatTimes(document);
    if (failures && connText) connText.textContent = "agent not answering · last update " + span(Date.now() - lastOK) + " ago";
  }

  function toggleTheme() {
    var root = document.documentElement;
    var cur = root.getAttribute("data-theme");
    if (!cur) cur = window.matchMedia && window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
    var next = cur === "light" ? "dark" : "light";
    root.setAttribute("data-theme", next);
    try { localStorage.setItem("rca-theme", next); } catch (e) { /* ignore */ }
  }

  function toggleWall() {
    var on = body.classList.toggle("wall");
    var url = new URL(window.location.href);
    if (on) url.searchParams.set("view", "wall"); else url.searchParams.delete("view");
    history.replaceState(null, "", url);
  }

  function togglePause() {
    paused = !paused;
    if (paused) { clearTimeout(timer); setConn("paused", "paused (p to resume)"); }
    else { setConn("live", "live"); poll(); }
  }

  var themeBtn = document.getElementById("theme-toggle");
  if (themeBtn) themeBtn.addEventListener("click", toggleTheme);
  var wallBtn = document.getElementById("wall-toggle");
  if (wallBtn) wallBtn.addEventListener("click", toggleWall);
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    if (e.key === "t") toggleTheme();
    else if (e.key === "w") toggleWall();
    else if (e.key === "p") togglePause();
  });
  document.addEventListener("visibilitychange", function () { if (!document.hidden && !paused) schedule(0); });

  formatTimes(document);
  sizeBars(document);
  setInterval(tick, 1000);
  schedule(refreshMs);
})();
