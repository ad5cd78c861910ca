// The job list: newest first, filtered by state, refreshed while the page is open.
"use strict";

(() => {
  const { body, api, el, duration, time, stateBadge, progressCell } = Trainyard;
  const REFRESH_MS = 3000;
  const filter = document.getElementById("state-filter");
  const rows = document.getElementById("jobs");
  const status = document.getElementById("updated");

  function row(job) {
    return el("tr", { "data-job": job.job_id, "data-state": job.state },
      el("td", {}, el("a", { href: job.page }, job.job_id)),
      el("td", {}, stateBadge(job.state)),
      el("td", { class: "num" }, progressCell(job)),
      el("td", { class: "num" }, duration(job.elapsed_s)),
      el("td", { class: "num" }, job.eta_s === null ? "" : duration(job.eta_s)),
      el("td", { class: "num" }, job.attempt || ""),
      el("td", {}, job.failure_class || ""),
      el("td", {}, job.model_version === null ? "" : `v${job.model_version}`),
      el("td", { class: "num" }, time(job.created_at)));
  }

  async function refresh() {
    const state = filter.value;
    const query = state ? `?state=${encodeURIComponent(state)}` : "";
    try {
      const listing = await api(`/tenants/${encodeURIComponent(body.tenant)}/jobs${query}`);
      rows.replaceChildren(...listing.jobs.map(row));
      if (!listing.jobs.length) {
        rows.append(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No jobs.")));
      }
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
      status.className = "";
    } catch (error) {
      status.textContent = `could not update: ${error.message}`;
      status.className = "error";
    }
  }

  filter.addEventListener("change", () => {
    const url = new URL(window.location.href);
    if (filter.value) url.searchParams.set("state", filter.value);
    else url.searchParams.delete("state");
    window.history.replaceState(null, "", url);
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
