// The status page: swaps in the server-rendered live part every few seconds and draws the
// utilisation history it carries (uPlot, vendored beside this file). No build step.
(function () {
  "use strict";
  var page = document.getElementById("page");
  var refresh = Math.max(1, parseFloat(page.dataset.refresh || "5")) * 1000;
  var colours = { database: "#3366cc", redis: "#dc3912", websocket: "#109618", nginx: "#990099" };
  var chart = null;
  var shape = "";

  function chartData() {
    var node = document.getElementById("history-data");
    if (!node) return null;
    var history = JSON.parse(node.textContent);
    var tiers = history.tiers || [];
    var xs = history.points.map(function (p) { return p.at; });
    var data = [xs];
    var series = [{}];
    tiers.forEach(function (tier) {
      data.push(history.points.map(function (p) { return p[tier]; }));
      series.push({ label: tier, stroke: colours[tier] || "#333", width: 2, spanGaps: true });
    });
    var levels = {};
    tiers.forEach(function (tier) {
      var t = history.thresholds[tier];
      if (!t) return;
      levels["warning " + t.warningFrom + " %"] = [t.warningFrom, "#e6a100"];
      levels["critical " + t.criticalFrom + " %"] = [t.criticalFrom, "#d0342c"];
    });
    Object.keys(levels).sort().forEach(function (label) {
      var value = levels[label][0];
      data.push(xs.map(function () { return value; }));
      series.push({ label: label, stroke: levels[label][1], width: 1, dash: [6, 4], points: { show: false } });
    });
    return { data: data, series: series };
  }

  function draw() {
    var found = chartData();
    var place = document.getElementById("chart");
    if (!found || !place) return;
    var key = found.series.map(function (s) { return s.label || ""; }).join("|");
    if (chart && key === shape) {
      chart.setData(found.data);
      return;
    }
    if (chart) chart.destroy();
    shape = key;
    chart = new uPlot({
      width: Math.max(320, place.clientWidth || 900),
      height: 260,
      series: found.series,
      scales: { y: { range: [0, 100] } },
      axes: [{}, { label: "% of capacity" }],
    }, found.data, place);
  }

  function update() {
    fetch("/partials/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.assign("/login"); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        document.getElementById("live").innerHTML = html;
        draw();
      })
      .catch(function () { /* the next round tries again */ })
      .finally(function () { window.setTimeout(update, refresh); });
  }

  draw();
  window.setTimeout(update, refresh);
})();
