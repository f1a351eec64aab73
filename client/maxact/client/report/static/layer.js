// A layer page: rows drawn from the page's JSON, one page at a time, so thousands of channels
// stay responsive. Sorting and filtering work on the data; images load lazily.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("neuron-data").textContent);
  var settings = JSON.parse(document.getElementById("settings").textContent);
  var list = document.getElementById("neurons");
  var sortKey = document.getElementById("sort");
  var descending = document.getElementById("descending");
  var hideDead = document.getElementById("hide-dead");
  var filter = document.getElementById("filter");
  var count = document.getElementById("count");
  var pageText = document.getElementById("page");
  var prev = document.getElementById("prev");
  var next = document.getElementById("next");
  var page = 0;
  var shown = [];

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function number(value) {
    var v = value + 0;
    return Math.abs(v) < 1e5 ? String(parseFloat(v.toPrecision(4))) : v.toExponential(3);
  }
  function row(n) {
    var section = el("section", "neuron");
    section.id = "c" + n.channel;
    section.setAttribute("data-channel", n.channel);
    var info = el("div", "info");
    var title = el("div", "channel", "channel " + n.channel + (n.label ? " · " + n.label : ""));
    if (n.dead) {
      var dead = el("span", "badge dead", "dead");
      dead.title = "never fires (max ≤ 0 on every image)";
      title.appendChild(dead);
    }
    if (n.flat) {
      var flat = el("span", "badge flat", "non-selective");
      flat.title = "fires for everything: firing rate at least " + settings.firesForEverything + ", class selectivity below " + settings.nonSelective;
      title.appendChild(flat);
    }
    info.appendChild(title);
    var facts = [["max", number(n.max)], ["mean max", number(n.mean)],
                 ["firing", (100 * n.firing).toFixed(1) + "%"]];
    if (settings.labelled) {
      facts.push(["selectivity", n.selectivity.toFixed(3)]);
      if (n.prefers) { facts.push(["prefers", n.prefers]); }
    }
    var dl = el("dl");
    facts.forEach(function (f) { dl.appendChild(el("dt", "", f[0])); dl.appendChild(el("dd", "", f[1])); });
    info.appendChild(dl);
    if (n.hist && n.hist.length) {
      var hist = el("div", "hist");
      var peak = Math.max.apply(null, n.hist) || 1;
      hist.title = "how many images respond how strongly (per-image maximum, " + n.hist.length + " bins from its smallest to its largest response)";
      n.hist.forEach(function (count) {
        var bin = el("span");
        bin.style.height = Math.round(100 * count / peak) + "%";
        hist.appendChild(bin);
      });
      info.appendChild(hist);
    }
    if (n.classes.length) {
      var classes = el("div", "classes");
      n.classes.forEach(function (c) {
        var bar = el("div", "cls");
        bar.title = c[0] + ": " + c[1] + " of the top-" + settings.k + " images";
        bar.appendChild(el("span", "name", c[0]));
        var track = el("span", "track");
        var fill = el("span", "fill");
        fill.style.width = Math.round(100 * c[1] / Math.max(1, settings.k)) + "%";
        track.appendChild(fill);
        bar.appendChild(track);
        bar.appendChild(el("span", "count", c[1] + "/" + settings.k));
        classes.appendChild(bar);
      });
      info.appendChild(classes);
    }
    section.appendChild(info);
    var patches = el("div", "patches");
    n.patches.forEach(function (p) {
      var figure = el("figure");
      var img = el("img");
      img.src = p[0];
      img.loading = "lazy";
      img.decoding = "async";
      img.width = settings.tile;
      img.height = settings.tile;
      img.alt = "channel " + n.channel + " rank " + p[1];
      img.title = p[3];
      figure.appendChild(img);
      var caption = el("figcaption", "", "#" + p[1] + " " + p[2]);
      caption.appendChild(el("span", "image", p[3]));
      caption.title = p[3];
      figure.appendChild(caption);
      patches.appendChild(figure);
    });
    section.appendChild(patches);
    return section;
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / settings.pageSize));
    page = Math.min(Math.max(0, page), pages - 1);
    var fragment = document.createDocumentFragment();
    shown.slice(page * settings.pageSize, (page + 1) * settings.pageSize).forEach(function (n) {
      fragment.appendChild(row(n));
    });
    list.textContent = "";
    list.appendChild(fragment);
    count.textContent = shown.length + " of " + data.length + " neurons";
    pageText.textContent = "page " + (page + 1) + " of " + pages;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  function apply() {
    var key = sortKey.value, sign = descending.checked ? -1 : 1;
    var query = filter.value.trim().toLowerCase();
    shown = data.filter(function (n) {
      return !(hideDead.checked && n.dead) && (query === "" || n.text.indexOf(query) >= 0);
    });
    shown.sort(function (a, b) {
      var d = (a[key] - b[key]) * sign;
      return d !== 0 && !isNaN(d) ? d : a.channel - b.channel;
    });
    page = 0;
    draw();
  }
  function showHash() {  // index links to #c<channel>: open the page holding that channel
    var match = /^#c(\d+)$/.exec(window.location.hash);
    if (!match) { return; }
    var at = shown.findIndex(function (n) { return n.channel === parseInt(match[1], 10); });
    if (at < 0) { return; }
    page = Math.floor(at / settings.pageSize);
    draw();
    var target = document.getElementById("c" + match[1]);
    if (target) { target.scrollIntoView(); }
  }
  sortKey.addEventListener("change", function () {
    descending.checked = sortKey.value !== "channel";
    apply();
  });
  [descending, hideDead].forEach(function (node) { node.addEventListener("change", apply); });
  filter.addEventListener("input", apply);
  prev.addEventListener("click", function () { page -= 1; draw(); window.scrollTo(0, 0); });
  next.addEventListener("click", function () { page += 1; draw(); window.scrollTo(0, 0); });
  window.addEventListener("hashchange", showHash);
  apply();
  showHash();
})();
