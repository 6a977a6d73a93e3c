// The dashboard's only script: optional auto-refresh of the overview and a confirmation before a replay.
(function () {
  "use strict";
  var KEY = "sos-ui-refresh";
  var seconds = parseInt(document.body.getAttribute("data-refresh-s") || "0", 10);
  var box = document.getElementById("auto-refresh");
  if (box && seconds > 0) {
    box.checked = window.localStorage.getItem(KEY) === "on";
    box.addEventListener("change", function () {
      window.localStorage.setItem(KEY, box.checked ? "on" : "off");
    });
    window.setInterval(function () {
      if (box.checked && document.visibilityState === "visible") { window.location.reload(); }
    }, seconds * 1000);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
