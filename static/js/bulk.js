// Bulk selection on the company and contact lists: ticked rows are remembered per list
// in sessionStorage, so a selection can span pages and live-search refreshes. Without
// JavaScript the ticked rows of the current page are still posted (form="bulk-form").
(function () {
  function storageKey(form) { return "klynge-bulk:" + form.getAttribute("data-bulk-key"); }
  function load(form) {
    try { return JSON.parse(sessionStorage.getItem(storageKey(form)) || "[]"); } catch (e) { return []; }
  }
  function save(form, ids) { sessionStorage.setItem(storageKey(form), JSON.stringify(ids)); }

  function sync() {
    var form = document.getElementById("bulk-form");
    if (!form) return;
    var ids = load(form);
    var chosen = {};
    ids.forEach(function (id) { chosen[id] = true; });
    var boxes = document.querySelectorAll("input.row-select");
    var allOnPage = boxes.length > 0;
    boxes.forEach(function (box) { box.checked = !!chosen[box.value]; allOnPage = allOnPage && box.checked; });
    var pageBox = document.querySelector("input[data-select-page]");
    if (pageBox) pageBox.checked = allOnPage;
    form.querySelector("[data-bulk-ids]").value = ids.join(",");
    var count = form.querySelector("[data-bulk-count]");
    if (ids.length) count.textContent = ids.length + " " + form.getAttribute("data-selected-label");
  }

  document.addEventListener("change", function (event) {
    var form = document.getElementById("bulk-form");
    var box = event.target;
    if (!form || !box.matches) return;
    if (box.matches("input.row-select") || box.matches("input[data-select-page]")) {
      var ids = load(form);
      var targets = box.matches("input.row-select") ? [box] : document.querySelectorAll("input.row-select");
      targets.forEach(function (row) {
        var at = ids.indexOf(row.value);
        var on = box.checked;
        if (on && at < 0) ids.push(row.value);
        if (!on && at >= 0) ids.splice(at, 1);
      });
      save(form, ids);
      sync();
    }
  });

  document.addEventListener("click", function (event) {
    var form = document.getElementById("bulk-form");
    if (form && event.target.matches && event.target.matches("[data-bulk-clear]")) {
      save(form, []);
      sync();
      form.querySelector("[data-bulk-count]").textContent = "0 " + form.getAttribute("data-selected-label");
    }
    // Applying ends the selection: the list starts afresh afterwards.
    if (event.target.matches && event.target.matches("[data-bulk-apply]")) {
      var page = event.target.closest("form");
      sessionStorage.removeItem("klynge-bulk:" + page.getAttribute("data-bulk-key"));
    }
  });

  var results = document.getElementById("results");
  if (results && window.MutationObserver) {
    new MutationObserver(sync).observe(results, { childList: true });
  }
  sync();
})();
