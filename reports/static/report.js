// harness reports: sortable tables, leaderboard filters, the sample browser. No dependencies.
(function () {
  "use strict";

  function cellKey(cell) {
    var raw = cell.getAttribute("data-value");
    if (raw === null) raw = cell.textContent.trim();
    var num = parseFloat(raw);
    return raw !== "" && isFinite(num) && String(num) === String(Number(raw)) ? num : raw.toLowerCase();
  }

  function compareKeys(a, b) {
    var aNum = typeof a === "number", bNum = typeof b === "number";
    if (aNum && bNum) return a - b;
    if (aNum !== bNum) return aNum ? -1 : 1;  // numbers before text and blanks
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function sortTable(table, column, header) {
    var body = table.tBodies[0];
    var descending = header.getAttribute("aria-sort") === "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = cellKey(r1.cells[column]), b = cellKey(r2.cells[column]);
      var missingA = a === "", missingB = b === "";
      if (missingA !== missingB) return missingA ? 1 : -1;  // blanks last either way
      var c = compareKeys(a, b);
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  function initSortable() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      if (!table.tHead) return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
        th.addEventListener("click", function () { sortTable(table, i, th); });
      });
    });
  }

  function initLeaderboard() {
    var table = document.getElementById("leaderboard");
    if (!table) return;
    var tag = document.getElementById("filter-tag");
    var suite = document.getElementById("filter-suite");
    var latest = document.getElementById("filter-latest");
    var count = document.getElementById("leaderboard-count");
    function apply() {
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var tags = JSON.parse(row.getAttribute("data-tags") || "[]");
        var ok = (!tag.value || tags.indexOf(tag.value) >= 0) &&
                 (!suite.value || row.getAttribute("data-suite") === suite.value) &&
                 (!latest.checked || row.getAttribute("data-latest") === "1");
        row.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = shown + " of " + table.tBodies[0].rows.length + " runs shown";
    }
    [tag, suite, latest].forEach(function (el) { el.addEventListener("change", apply); });
    apply();
  }

  function textCell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function initSampleBrowser() {
    var data = document.getElementById("samples-data");
    if (!data) return;
    var samples = JSON.parse(data.textContent);
    var search = document.getElementById("sample-search");
    var task = document.getElementById("sample-task");
    var body = document.getElementById("sample-rows");
    var count = document.getElementById("sample-count");
    samples.forEach(function (s) {
      s.haystack = [s.p, s.g, s.a, JSON.stringify(s.m)].join("\n").toLowerCase();
    });
    function render() {
      var needle = search.value.trim().toLowerCase();
      var shown = 0;
      var fragment = document.createDocumentFragment();
      samples.forEach(function (s) {
        if (task.value && s.t !== task.value) return;
        if (needle && s.haystack.indexOf(needle) < 0 && String(s.d) !== needle) return;
        shown += 1;
        var tr = document.createElement("tr");
        tr.className = "sample";
        textCell(tr, s.t);
        textCell(tr, s.d, "num");
        textCell(tr, s.p, "text");
        textCell(tr, s.g, "text");
        textCell(tr, s.a, "text");
        textCell(tr, Object.keys(s.m || {}).map(function (k) { return k + "=" + s.m[k]; }).join(" "));
        fragment.appendChild(tr);
      });
      body.textContent = "";
      body.appendChild(fragment);
      count.textContent = shown + " of " + samples.length + " embedded samples match";
    }
    search.addEventListener("input", render);
    task.addEventListener("change", render);
    render();
  }

  function initTableSearch() {
    document.querySelectorAll("input[data-filter-table]").forEach(function (input) {
      var table = document.getElementById(input.getAttribute("data-filter-table"));
      input.addEventListener("input", function () {
        var needle = input.value.trim().toLowerCase();
        Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
          row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) < 0;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    initSortable();
    initLeaderboard();
    initSampleBrowser();
    initTableSearch();
  });
})();
