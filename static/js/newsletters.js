// Newsletters: live preview and recipient count while composing, live progress while
// sending. Static file (CSP forbids inline scripts); pages work without it.
(function () {
  "use strict";

  var lang = document.documentElement.lang === "nb" ? "nb-NO" : "en-GB";
  var numbers = new Intl.NumberFormat(lang);
  var decimals = new Intl.NumberFormat(lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 });

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  // -- compose: live preview and recipient count ----------------------------------------
  var compose = document.getElementById("compose-form");
  var previewForm = document.getElementById("preview-form");
  if (compose && previewForm) {
    var previewButton = compose.querySelector("[data-preview-button]");
    if (previewButton) previewButton.hidden = true; // the preview follows the typing

    var refreshPreview = function () {
      ["subject", "preheader", "body"].forEach(function (name) {
        var source = compose.elements[name];
        previewForm.elements[name].value = source ? source.value : "";
      });
      previewForm.submit();
    };
    var audienceNames = ["kind", "event", "topics", "networks", "municipalities", "membership", "roles"];
    var countTarget = compose.querySelector("[data-recipient-count]");
    var basisTarget = compose.querySelector("[data-basis-counts]");
    var countController = null;
    var refreshCount = function () {
      if (!countTarget) return;
      var params = new URLSearchParams();
      var data = new FormData(compose);
      audienceNames.forEach(function (name) {
        data.getAll(name).forEach(function (value) { params.append(name, value); });
      });
      if (countController) countController.abort();
      countController = new AbortController();
      fetch(compose.getAttribute("data-audience-url") + "?" + params.toString(), {
        headers: { Accept: "application/json" },
        signal: countController.signal,
      })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (body) {
          countTarget.textContent = numbers.format(body.recipients);
          if (basisTarget) {
            // Why they may be mailed: consent, or membership of a network (network mail).
            basisTarget.textContent = "";
            (body.by_basis || []).forEach(function (line) {
              var item = document.createElement("li");
              item.textContent = line.label + ": " + numbers.format(line.recipients);
              basisTarget.appendChild(item);
            });
          }
        })
        .catch(function () {});
    };
    var previewSoon = debounce(refreshPreview, 450);
    compose.addEventListener("input", function (event) {
      var name = event.target.name;
      if (name === "subject" || name === "preheader" || name === "body") previewSoon();
    });
    compose.addEventListener("change", function (event) {
      if (audienceNames.indexOf(event.target.name) !== -1) refreshCount();
    });
    refreshPreview();
    refreshCount();
  }

  // -- sending: live progress -------------------------------------------------------------
  // The time left comes worded by the server (`time_left`), in the page's language.
  var card = document.querySelector("[data-progress-url]");
  if (card) {
    var initialState = card.getAttribute("data-state");
    var field = function (name) { return card.querySelector('[data-progress="' + name + '"]'); };
    var show = function (name, text) {
      var el = field(name);
      if (el) el.textContent = text;
    };
    var poll = function () {
      fetch(card.getAttribute("data-progress-url"), { headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (p) {
          show("done", numbers.format(p.done));
          show("total", numbers.format(p.total));
          show("sent", numbers.format(p.sent));
          show("failed", numbers.format(p.failed));
          show("skipped", numbers.format(p.skipped));
          show("pending", numbers.format(p.pending));
          show("rate", decimals.format(p.rate));
          show("percent", decimals.format(p.percent));
          var eta = field("eta");
          if (eta) eta.textContent = p.time_left || eta.getAttribute("data-unknown");
          var bar = field("bar");
          if (bar) bar.value = p.percent;
          card.setAttribute("data-state", p.state);
          if (p.state !== initialState) {
            // Finished, paused or cancelled: the page's actions change with it.
            setTimeout(function () { window.location.reload(); }, 600);
            return;
          }
          if (p.state === "sending" || p.state === "paused") {
            setTimeout(poll, p.state === "sending" ? 1000 : 4000);
          }
        })
        .catch(function () { setTimeout(poll, 5000); });
    };
    if (initialState === "sending" || initialState === "paused") setTimeout(poll, 1000);
  }

  // -- lists: filters apply on change ---------------------------------------------------------
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
