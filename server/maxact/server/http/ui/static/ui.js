// The UI's few behaviours beyond htmx: progress bars fed by the scan's Server-Sent Events
// (JSON documents, drawn here instead of swapped in), a "scan-finished" event that lets a
// page fetch its answers, and the arrow keys stepping between channels.
(function () {
  "use strict";
  var FINAL = { succeeded: 1, failed: 1, cancelled: 1 };

  function draw(box, scan) {
    var total = scan.images_total || 0;
    var done = scan.images_done || 0;
    var pct = scan.state === "succeeded" ? 100 : (total ? 100 * done / total : 0);
    box.className = box.className.replace(/\bstate-\S+/, "state-" + scan.state);
    box.querySelector(".state").textContent = scan.state;
    var fill = box.querySelector(".fill");
    fill.style.width = pct.toFixed(1) + "%";
    box.querySelector(".bar").setAttribute("aria-valuenow", pct.toFixed(1));
    var failed = scan.images_failed ? ", " + scan.images_failed + " skipped" : "";
    box.querySelector(".count").textContent = done + " / " + (total || "?") + " images" + failed;
  }

  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var box = event.detail.elt.closest ? event.detail.elt.closest(".progress") : null;
    if (!box) { return; }
    event.preventDefault();  // the data is JSON: draw it, never swap it in as HTML
    var scan;
    try { scan = JSON.parse(event.detail.data); } catch (e) { return; }
    if (scan && scan.scan) { scan = scan.scan; }
    if (!scan || !scan.state) { return; }
    draw(box, scan);
    if (!FINAL[scan.state]) {
      document.body.dispatchEvent(new CustomEvent("scan-progress", { detail: { id: box.getAttribute("data-scan") } }));
    }
    if (FINAL[scan.state]) {
      box.removeAttribute("sse-connect");  // no reconnection once the scan has ended
      var internal = box["htmx-internal-data"];
      if (internal && internal.sseEventSource) { internal.sseEventSource.close(); }
      document.body.dispatchEvent(new CustomEvent("scan-finished", { detail: { id: box.getAttribute("data-scan"), state: scan.state } }));
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    var tag = (event.target && event.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") { return; }
    var rel = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : "";
    var link = rel && document.querySelector("a[rel=" + rel + "]");
    if (link) { event.preventDefault(); window.location.assign(link.href); }
  });
})();
