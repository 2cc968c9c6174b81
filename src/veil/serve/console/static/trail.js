// Veil console, trail page: while a verification runs, poll its status and show the progress;
// reload the page when it ends (the page itself works without this file: it has a refresh link).
(function () {
  "use strict";
  var box = document.getElementById("verification");
  var line = document.getElementById("trail-running");
  if (!box || !line || line.getAttribute("data-running") !== "1") return;
  var url = box.getAttribute("data-status-url");
  var number = function (n) { return Math.round(n).toLocaleString("en"); };
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (status) {
        var run = status.running;
        if (!run || run.state !== "running") {
          window.location.reload();
          return;
        }
        var text = "Verification " + run.number + " by " + run.actor + " is running";
        if (run.total) text += ": " + number(run.completed) + " of " + number(run.total) + " entries";
        line.textContent = text + ".";
        window.setTimeout(poll, 1000);
      })
      .catch(function () {
        line.textContent = "The verification's progress could not be read; refresh the page to see it.";
      });
  }
  window.setTimeout(poll, 1000);
})();
