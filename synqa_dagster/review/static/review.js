/* Keyboard shortcuts for the review form.
 *
 * a = accept, r = reject, 1-5 = reason category (also selects reject), t = focus the explanation box,
 * Esc = leave the text box, Enter = submit (Ctrl/Cmd+Enter inside the text box).
 * This script never reads or writes row text and never builds HTML: it only sets form values and textContent.
 */
(function () {
  "use strict";

  function init() {
    var form = document.getElementById("decision-form");
    if (!form) { return; }
    var accept = document.getElementById("accept");
    var reject = document.getElementById("reject");
    var category = document.getElementById("category");
    var text = document.getElementById("reason-text");
    var hint = document.getElementById("form-hint");
    var categories = [];
    for (var i = 0; i < category.options.length; i++) {
      if (category.options[i].value) { categories.push(category.options[i].value); }
    }

    function say(message) { hint.textContent = message; }

    function valid() {
      if (!accept.checked && !reject.checked) { say("Choose accept (a) or reject (r)."); return false; }
      if (accept.checked && category.value) { category.value = ""; }
      if (reject.checked && !category.value) { say("Choose a reason category (1-5)."); return false; }
      if (reject.checked && category.value === "other" && !text.value.trim()) {
        say("Explain the reason in the text box (t).");
        return false;
      }
      say("");
      return true;
    }

    function submit() {
      if (!valid()) { return; }
      if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
    }

    function typing(element) {
      if (!element) { return false; }
      var tag = element.tagName;
      return tag === "TEXTAREA" || tag === "SELECT" || element.isContentEditable ||
        (tag === "INPUT" && element.type !== "radio" && element.type !== "checkbox" && element.type !== "hidden");
    }

    category.addEventListener("change", function () {
      if (category.value) { reject.checked = true; }
    });
    accept.addEventListener("change", function () { if (accept.checked) { category.value = ""; } });
    form.addEventListener("submit", function (event) { if (!valid()) { event.preventDefault(); } });

    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.isComposing) { return; }
      var active = document.activeElement;
      if (typing(active)) {
        if (event.key === "Escape") { active.blur(); event.preventDefault(); }
        else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); }
        return;
      }
      if (event.ctrlKey || event.metaKey) { return; }
      var handled = true;
      if (event.key === "a") { accept.checked = true; category.value = ""; say(""); }
      else if (event.key === "r") { reject.checked = true; say(""); }
      else if (/^[1-9]$/.test(event.key) && Number(event.key) <= categories.length) {
        reject.checked = true;
        category.value = categories[Number(event.key) - 1];
        say("");
      }
      else if (event.key === "t") { text.focus(); }
      else if (event.key === "Enter") { submit(); }
      else { handled = false; }
      if (handled) { event.preventDefault(); }
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); }
  else { init(); }
}());
