// Klynge's own small script. Pages work without it; it adds search as you type
// and confirmation prompts. No inline scripts: CSP forbids them.
(function () {
  "use strict";

  // The menu on a phone: folded away behind the Menu button (CSS shows the button only
  // on narrow screens). Without this script the menu simply stays open.
  document.documentElement.classList.remove("no-js");
  var navToggle = document.querySelector(".nav-toggle");
  if (navToggle) {
    navToggle.addEventListener("click", function () {
      var open = navToggle.getAttribute("aria-expanded") !== "true";
      navToggle.setAttribute("aria-expanded", open ? "true" : "false");
      document.querySelector(".topbar").classList.toggle("nav-open", open);
    });
  }

  // Forms with data-live-search reload their results region as the user types.
  document.querySelectorAll("form[data-live-search]").forEach(function (form) {
    var target = document.querySelector(form.getAttribute("data-live-search"));
    if (!target) return;
    var timer = null;
    var controller = null;
    function refresh() {
      var params = new URLSearchParams(new FormData(form));
      params.set("page", "1");
      var url = form.getAttribute("action") + "?" + params.toString();
      if (controller) controller.abort();
      controller = new AbortController();
      fetch(url + "&partial=1", { headers: { "X-Requested-With": "fetch" }, signal: controller.signal })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          target.innerHTML = html;
          history.replaceState(null, "", url);
        })
        .catch(function () {});
    }
    form.addEventListener("input", function (event) {
      if (event.target.matches("input[type=search], input[type=text]")) {
        clearTimeout(timer);
        timer = setTimeout(refresh, 200);
      }
    });
    form.addEventListener("change", function (event) {
      if (event.target.matches("select, input[type=checkbox]")) refresh();
    });
  });

  // Buttons and forms with data-confirm ask before they act.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
