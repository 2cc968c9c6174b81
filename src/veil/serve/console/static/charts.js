/* The dataset page's burn-down chart (uPlot, vendored): spent epsilon over time by the
 * PLD accountant and the RDP cross-check, against the budget in force. The figures come
 * from a <script type="application/json"> block the page renders; the same figures are
 * in the table below the chart, for readers and for anyone without JavaScript. */
(function () {
  "use strict";

  var COLOURS = { spent: "#1f5fbf", rdp: "#b35900", budget: "#3b3f46" };

  function series(data) {
    var unit = data.unit === "rho" ? "rho" : "epsilon";
    var out = [
      {},
      { label: "Spent " + unit + " (PLD)", stroke: COLOURS.spent, width: 2, points: { show: false } }
    ];
    var columns = [data.t, data.spent];
    if (unit === "epsilon") {
      out.push({ label: "RDP cross-check", stroke: COLOURS.rdp, width: 2, dash: [6, 4], points: { show: false } });
      columns.push(data.rdp);
    }
    out.push({
      label: "Budget " + unit,
      stroke: COLOURS.budget,
      width: 1.5,
      points: { show: false },
      paths: window.uPlot.paths && window.uPlot.paths.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined
    });
    columns.push(data.budget);
    return { series: out, columns: columns, unit: unit };
  }

  function size(box) {
    var width = Math.max(280, Math.floor(box.clientWidth || 600));
    return { width: width, height: width < 500 ? 220 : 280 };
  }

  function draw(box) {
    var source = document.getElementById(box.getAttribute("data-source") || "");
    if (!source || typeof window.uPlot !== "function") {
      return;
    }
    var data = JSON.parse(source.textContent);
    if (!data.t || data.t.length === 0) {
      return;
    }
    var made = series(data);
    var dims = size(box);
    var options = {
      width: dims.width,
      height: dims.height,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, 1e-9) * 1.05]; } } },
      axes: [{}, { label: made.unit, size: 60 }],
      legend: { live: true },
      series: made.series
    };
    var plot = new window.uPlot(options, made.columns, box);
    box.classList.add("drawn");
    if (typeof window.ResizeObserver === "function") {
      var pending = null;
      new window.ResizeObserver(function () {
        if (pending) {
          window.cancelAnimationFrame(pending);
        }
        pending = window.requestAnimationFrame(function () {
          plot.setSize(size(box));
        });
      }).observe(box);
    }
  }

  function start() {
    var boxes = document.querySelectorAll(".chart[data-source]");
    for (var i = 0; i < boxes.length; i++) {
      draw(boxes[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
