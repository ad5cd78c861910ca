// One sweep: the metric of every trial over steps (pruned trials dashed, the best one bold),
// and the trials best first with their values; refreshed until the sweep ends.
"use strict";

(() => {
  const { body, api, el, time, stateBadge } = Trainyard;
  const REFRESH_MS = 5000;
  const COLOURS = ["#017cee", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#1098ad", "#c2255c"];
  const main = document.getElementById("sweep");
  const foreground = () => getComputedStyle(document.body).getPropertyValue("--fg").trim();
  let plot = null;
  let timer = null;

  const short = (jobId) => jobId.slice(jobId.lastIndexOf(".") + 1);

  /** uPlot wants one x array: every trial's steps, each trial null where it has none. */
  function chart(detail, width) {
    const trials = detail.trials.filter((t) => t.series.length);
    const card = el("div", { class: "card", id: "trials-chart" }, el("h3", {}, detail.metric));
    if (!trials.length) {
      card.append(el("p", { class: "empty" }, "No metric yet."));
      return card;
    }
    const steps = [...new Set(trials.flatMap((t) => t.series.map(([step]) => step)))]
      .sort((a, b) => a - b);
    const data = [steps, ...trials.map((t) => {
      const byStep = new Map(t.series);
      return steps.map((step) => byStep.get(step) ?? null);
    })];
    plot = new uPlot({
      width, height: 280,
      scales: { x: { time: false } },
      axes: [{ label: "step", stroke: foreground() }, { stroke: foreground() }],
      series: [{ label: "step" }, ...trials.map((t, i) => ({
        label: `${short(t.trial.job_id)} (${t.trial.state})`,
        stroke: COLOURS[i % COLOURS.length],
        width: t.trial.job_id === detail.best_job_id ? 3 : 1.5,
        dash: t.trial.state === "pruned" ? [6, 4] : undefined,
        spanGaps: true,
      }))],
    }, data, card);
    return card;
  }

  function trialsTable(detail) {
    const headers = ["trial", ...detail.parameters, detail.metric, "state", "steps"];
    return el("table", { id: "trials" }, el("tr", {}, headers.map((h) => el("th", {}, h))),
      detail.trials.map(({ trial, page }) => el("tr", {
        class: trial.job_id === detail.best_job_id ? "trial best" : "trial",
        "data-job": trial.job_id, "data-state": trial.state,
      },
      el("td", {}, el("a", { href: page }, trial.job_id),
        trial.job_id === detail.best_job_id ? " (best)" : ""),
      detail.parameters.map((name) => el("td", { class: "num" }, String(trial.values[name]))),
      el("td", { class: "num" }, trial.metric === null ? "" : trial.metric.toPrecision(4)),
      el("td", {}, stateBadge(trial.state)),
      el("td", { class: "num" }, trial.step ?? ""))));
  }

  function render(detail) {
    if (plot) plot.destroy();
    plot = null;
    const width = Math.max(320, Math.min(900, main.clientWidth - 32));
    const best = detail.trials.find((t) => t.trial.job_id === detail.best_job_id);
    main.replaceChildren(
      el("h1", {}, detail.sweep_id, " ", stateBadge(detail.state)),
      el("p", { id: "summary" },
        `${detail.trials.length} of ${detail.trials_to_run} trials drawn · ${detail.algorithm}`
        + ` search · ${detail.goal} ${detail.metric} · early stopping ${detail.early_stopping}`
        + ` · updated ${time(detail.updated_at)} UTC`),
      best ? el("p", { id: "best" }, "Best trial: ",
        el("a", { href: best.page }, best.trial.job_id),
        ` (${detail.metric} ${best.trial.metric})`) : null,
      el("div", { class: "cards" }, chart(detail, width)),
      el("h2", {}, "Trials"),
      trialsTable(detail));
    document.body.dataset.loaded = detail.state;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const detail = await api(`/tenants/${encodeURIComponent(body.tenant)}/sweeps/${encodeURIComponent(body.job)}`);
      render(detail);
      if (detail.state === "running") timer = setTimeout(refresh, REFRESH_MS);
    } catch (error) {
      main.replaceChildren(el("p", { class: "error" }, `could not load the sweep: ${error.message}`));
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }
  refresh();
})();
