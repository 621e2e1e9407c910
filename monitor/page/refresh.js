// Fetches the runs again every few seconds and replaces them in place.
(function () {
  var ms = parseInt(document.body.dataset.refreshMs, 10) || 5000;
  function tick() {
    fetch("?fragment=1", {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { throw new Error(r.status); }
      return r.text();
    }).then(function (html) {
      document.getElementById("runs").innerHTML = html;
      document.getElementById("updated").textContent = "as of " + new Date().toISOString().replace("T", " ").slice(0, 19) + "Z";
    }).catch(function () {}).then(function () { setTimeout(tick, ms); });
  }
  setTimeout(tick, ms);
})();
