// The fleet page (admins): each tenant's jobs against its quota, goodput and lost time over a
// window, and the top failure causes with links to their jobs; charts drawn with uPlot.
"use strict";

(() => {
  const { api, el, duration } = Trainyard;
  const REFRESH_MS = 10000;
  const select = document.getElementById("window");
  const charts = document.getElementById("charts");
  const tenants = document.getElementById("tenants");
  const causes = document.getElementById("causes");
  const status = document.getElementById("updated");
  const COLOURS = ["#017cee", "#e43921", "#00ad46", "#ffb000"];

  function foreground() {
    return getComputedStyle(document.body).color;
  }

  /** A bar chart over the tenants: one bar series, and lines for `limits` (such as quotas). */
  function barChart(id, title, names, bars, limits = null) {
    const card = el("div", { class: "card", "data-chart": id }, el("h3", {}, title));
    const x = names.map((_, i) => i);
    const series = [{}, {
      label: bars.label, fill: COLOURS[0] + "99", stroke: COLOURS[0],
      paths: uPlot.paths.bars({ size: [0.6, 64] }), points: { show: false },
    }];
    const data = [x, bars.values];
    if (limits) {
      series.push({ label: limits.label, stroke: COLOURS[1], width: 2, dash: [6, 4] });
      data.push(limits.values);
    }
    new uPlot({
      width: Math.min(560, charts.clientWidth || 560), height: 220,
      scales: { x: { time: false, range: [-0.5, Math.max(0.5, names.length - 0.5)] } },
      axes: [
        { stroke: foreground(), splits: () => x, values: (_, splits) => splits.map((i) => names[i] ?? "") },
        { stroke: foreground(), label: bars.unit },
      ],
      series,
    }, data, card);
    return card;
  }

  function tenantTable(fleet) {
    const header = ["tenant", "running", "queued", "failed", "max running", "pool slots in use",
      "goodput", "learner h", "GPU h", "lost"];
    return el("table", {},
      el("thead", {}, el("tr", {}, header.map((h) => el("th", {}, h)))),
      el("tbody", {}, fleet.map((t) => el("tr", { "data-tenant": t.tenant },
        el("td", {}, t.tenant), el("td", { class: "num" }, t.running),
        el("td", { class: "num" }, t.queued), el("td", { class: "num" }, t.failed),
        el("td", { class: "num" }, t.max_running_jobs),
        el("td", {}, t.pools.map((p) => `${p.used} of ${p.total} (${p.pool})`).join(", ")),
        el("td", { class: "num goodput" }, t.goodput === null ? "" : `${Math.round(t.goodput * 100)}%`),
        el("td", { class: "num" }, t.learner_hours.toFixed(2)),
        el("td", { class: "num" }, t.gpu_hours.toFixed(2)),
        el("td", { class: "num" }, duration(lostHours(t) * 3600))))));
  }

  function causeTable(fleet) {
    const rows = fleet.flatMap((t) => t.causes.map((c) => ({ tenant: t.tenant, ...c })))
      .sort((a, b) => b.attempts - a.attempts).slice(0, 10);
    if (!rows.length) return el("p", { class: "empty" }, "No failed attempts in this window.");
    return el("table", {},
      el("thead", {}, el("tr", {}, ["tenant", "failure class", "attempts", "jobs"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((c) => el("tr", { class: "cause", "data-class": c.failure_class },
        el("td", {}, c.tenant), el("td", {}, c.failure_class), el("td", { class: "num" }, c.attempts),
        el("td", {}, Object.entries(c.jobs).flatMap(([job, page]) => [el("a", { href: page }, job), " "]))))));
  }

  function lostHours(tenant) {
    return Object.values(tenant.lost_hours_by_class).reduce((a, b) => a + b, 0);
  }

  async function refresh() {
    try {
      const since = select.value ? `?since=${encodeURIComponent(select.value)}` : "";
      const fleet = await api(`/fleet${since}`);
      const names = fleet.map((t) => t.tenant);
      charts.replaceChildren(
        barChart("jobs", "Running jobs and the quota", names,
          { label: "running", unit: "jobs", values: fleet.map((t) => t.running) },
          { label: "max running", values: fleet.map((t) => t.max_running_jobs) }),
        barChart("goodput", "Goodput", names,
          { label: "goodput", unit: "%", values: fleet.map((t) => t.goodput === null ? null : t.goodput * 100) }),
        barChart("lost", "Time lost to faults", names,
          { label: "lost", unit: "hours", values: fleet.map(lostHours) }));
      tenants.replaceChildren(tenantTable(fleet));
      causes.replaceChildren(causeTable(fleet));
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
      status.className = "";
    } catch (error) {
      status.textContent = `could not update: ${error.message}`;
      status.className = "error";
    }
  }

  select.addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
