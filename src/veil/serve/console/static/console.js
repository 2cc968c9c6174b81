// Veil console: small progressive enhancements; every page works without this file.
(function () {
  "use strict";
  // Buttons that ask before acting (revoke a key, remove a grant): data-confirm="question".
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    // One submission per click: a slow query is not charged twice by an impatient double click.
    if (form.dataset.sent === "1") {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "1";
    var buttons = form.querySelectorAll("button[type=submit]");
    for (var i = 0; i < buttons.length; i++) buttons[i].setAttribute("aria-busy", "true");
  });
  // Times shown in UTC get the reader's local time as a tooltip.
  var times = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < times.length; i++) {
    var t = new Date(times[i].getAttribute("datetime"));
    if (!isNaN(t)) times[i].title = t.toLocaleString();
  }
})();
