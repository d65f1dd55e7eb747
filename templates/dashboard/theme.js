// Runs before the first paint so a chosen theme does not flash: the choice
// lives in localStorage; without one the page follows prefers-color-scheme.
(function () {
  try {
    var t = localStorage.getItem("rca-theme");
    if (t === "light" || t === "dark") document.documentElement.setAttribute("data-theme", t);
  } catch (e) { /* storage disabled: follow the system */ }
})();
