// Operator actions: confirm, POST to the JSON API (same origin, the admin cookie
// goes along), show the answer, and refresh the live part of the page: no reload.
(function () {
  "use strict";
  function flash(text, ok) {
    var box = document.getElementById("flash");
    box.textContent = text;
    box.className = ok ? "ok" : "bad";
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-post]");
    if (!button) return;
    event.preventDefault();
    var options = { method: "POST", credentials: "same-origin", headers: {} };
    if (button.dataset.prompt) {
      // Resolve: the note is the confirmation (cancel or nothing written: no request).
      var note = window.prompt(button.dataset.prompt);
      if (!note) return;
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify({ note: note });
    } else if (!window.confirm(button.dataset.confirm || "Are you sure?")) {
      return;
    }
    if (button.dataset.action === "abort") {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify({ reason: "aborted from the dashboard" });
    }
    button.disabled = true;
    fetch(button.dataset.post, options)
      .then(function (response) {
        return response.text().then(function (text) {
          var body = {};
          try { body = JSON.parse(text); } catch (e) { body = { detail: text }; }
          if (response.ok) {
            flash(button.dataset.action + ": " + (body.status || body.action || "accepted") +
                  " (" + (body.id || body.order_id || "") + ")", true);
          } else {
            flash(button.dataset.action + " failed: " + response.status + " " + (body.detail || text), false);
          }
        });
      })
      .catch(function (error) { flash(button.dataset.action + " failed: " + error, false); })
      .finally(function () {
        button.disabled = false;
        var live = document.getElementById("live");
        if (live && window.htmx) window.htmx.trigger(live, "refresh");
      });
  });
})();
