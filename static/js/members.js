// Member pages: suggestions for the company field of the contact form.
// Without this script the form still works: the server lists every company in the
// datalist for small registers and resolves an organisation number or exact name.
(function () {
  "use strict";

  document.querySelectorAll("input[data-company-lookup]").forEach(function (input) {
    var list = document.getElementById(input.getAttribute("list"));
    if (!list) return;
    var url = input.getAttribute("data-company-lookup");
    var timer = null;
    var controller = null;
    var lastQuery = null;

    function fill(items) {
      var fragment = document.createDocumentFragment();
      items.forEach(function (item) {
        var option = document.createElement("option");
        option.value = item.label;
        fragment.appendChild(option);
      });
      list.replaceChildren(fragment);
    }

    function lookup() {
      var query = input.value.trim();
      // A picked suggestion ends with "(123 456 789)": nothing more to look up.
      if (query.length < 2 || query === lastQuery || /\(\d{3} \d{3} \d{3}\)$/.test(query)) return;
      lastQuery = query;
      if (controller) controller.abort();
      controller = new AbortController();
      fetch(url + "?q=" + encodeURIComponent(query), {
        headers: { Accept: "application/json" },
        signal: controller.signal,
      })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(fill)
        .catch(function () {});
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(lookup, 150);
    });
  });
})();
