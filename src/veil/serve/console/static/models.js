// The model page's live numbers: every 10 s, read /console/models/NAME/live (same origin, the
// session cookie) and update the usage counts; say when a newer alert than the page's exists.
// Without JavaScript the page shows the numbers as they were when it was rendered.
(function () {
  "use strict";
  var section = document.querySelector("[data-live]");
  if (!section || !window.fetch) { return; }
  var url = section.getAttribute("data-live");
  var table = document.querySelector("table.alerts");
  var newest = table ? Number(table.getAttribute("data-newest") || 0) : 0;

  function set(el, value) {
    if (el && value !== undefined && value !== null) { el.textContent = String(value); }
  }

  function apply(data) {
    if (data.mine) {
      set(document.querySelector('[data-live-mine="used"]'), data.mine.used);
      set(document.querySelector('[data-live-mine="left"]'), data.mine.left);
    }
    (data.keys || []).forEach(function (key) {
      var row = document.querySelector('tr[data-key="' + CSS.escape(key.key_id) + '"]');
      if (!row) { return; }
      set(row.querySelector('[data-live-key="used"]'), key.used);
      if (key.left !== null) { set(row.querySelector('[data-live-key="left"]'), key.left); }
    });
    var note = document.querySelector("[data-live-alerts]");
    if (note && data.newest_alert && data.newest_alert > newest) { note.hidden = false; }
  }

  function tick() {
    if (document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { /* the next tick tries again */ });
  }

  window.setInterval(tick, 10000);
})();
