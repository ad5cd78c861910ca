// One job: a chart per metric (a line per attempt, retries' resume points marked), attempts,
// checkpoints, evaluation and gate, model versions; refreshed until the job ends.
"use strict";

(() => {
  const { body, api, el, duration, time, bytes, stateBadge, progressCell } = Trainyard;
  const REFRESH_MS = 5000;
  const COLOURS = ["#017cee", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#1098ad", "#c2255c"];
  const main = document.getElementById("job");
  let charts = [];
  const foreground = () => getComputedStyle(document.body).getPropertyValue("--fg").trim();

  function table(headers, rows, empty) {
    if (!rows.length) return el("p", { class: "empty" }, empty);
    return el("table", {}, el("tr", {}, headers.map((h) => el("th", {}, h))), rows);
  }

  /** uPlot wants one x array: the steps of every attempt, each attempt null where absent. */
  function seriesOf(rows, metric) {
    const byAttempt = new Map();
    for (const row of rows) {
      if (typeof row.step !== "number" || typeof row[metric] !== "number") continue;
      const attempt = row.attempt ?? 1;
      if (!byAttempt.has(attempt)) byAttempt.set(attempt, new Map());
      byAttempt.get(attempt).set(row.step, row[metric]);
    }
    const attempts = [...byAttempt.keys()].sort((a, b) => a - b);
    const steps = [...new Set(attempts.flatMap((a) => [...byAttempt.get(a).keys()]))]
      .sort((a, b) => a - b);
    const data = [steps, ...attempts.map((a) => steps.map((s) => byAttempt.get(a).get(s) ?? null))];
    return { attempts, data };
  }

  function resumeMarks(resumes) {
    return {
      hooks: {
        draw: [(u) => {
          const { ctx } = u;
          const { top, height } = u.bbox;
          ctx.save();
          ctx.strokeStyle = getComputedStyle(document.body).getPropertyValue("--failed");
          ctx.fillStyle = ctx.strokeStyle;
          ctx.setLineDash([5, 4]);
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.font = `${11 * devicePixelRatio}px sans-serif`;
          for (const resume of resumes) {
            const x = Math.round(u.valToPos(resume.step, "x", true));
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.fillText(` attempt ${resume.attempt} resumed`, x, top + 12 * devicePixelRatio);
          }
          ctx.restore();
        }],
      },
    };
  }

  function chart(detail, metric, width) {
    const { attempts, data } = seriesOf(detail.rows, metric);
    const card = el("div", { class: "card", "data-metric": metric }, el("h3", {}, metric));
    const resumes = detail.resumes.filter((r) => attempts.includes(r.attempt));
    const plot = new uPlot({
      width, height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "step", stroke: foreground() }, { stroke: foreground() }],
      series: [
        { label: "step" },
        ...attempts.map((a, i) => ({
          label: `attempt ${a}`, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: false,
        })),
      ],
      plugins: [resumeMarks(resumes)],
    }, data, card);
    charts.push(plot);
    card.append(el("ul", { class: "resumes" }, resumes.map((r) =>
      el("li", { class: "resume", "data-attempt": r.attempt, "data-step": r.step },
        `attempt ${r.attempt} resumed at step ${r.step}`))));
    return card;
  }

  /** What the learners used over time: one chart per measure, a line per attempt and rank. */
  const USAGE = [
    ["CPU cores used", (r) => (r.interval_s > 0 ? r.cpu_s / r.interval_s : null)],
    ["memory (GiB)", (r) => r.rss_bytes / 2 ** 30],
    ["GPU utilisation (%)", (r) => (r.gpus && r.gpus.length
      ? r.gpus.reduce((sum, g) => sum + g.util, 0) / r.gpus.length : null)],
  ];

  function usageChart(detail, [title, value], width) {
    const lines = new Map();
    for (const row of detail.utilisation) {
      const y = value(row);
      if (typeof row.time !== "number" || typeof y !== "number") continue;
      const key = `attempt ${row.attempt ?? 1}, rank ${row.rank ?? 0}`;
      if (!lines.has(key)) lines.set(key, new Map());
      lines.get(key).set(row.time, y);
    }
    if (!lines.size) return null;
    const keys = [...lines.keys()].sort();
    const times = [...new Set(keys.flatMap((k) => [...lines.get(k).keys()]))].sort((a, b) => a - b);
    const data = [times, ...keys.map((k) => times.map((t) => lines.get(k).get(t) ?? null))];
    const card = el("div", { class: "card", "data-usage": title }, el("h3", {}, title));
    charts.push(new uPlot({
      width, height: 200,
      axes: [{ stroke: foreground() }, { stroke: foreground() }],
      series: [
        { label: "time" },
        ...keys.map((k, i) => ({ label: k, stroke: COLOURS[i % COLOURS.length], width: 1.5 })),
      ],
    }, data, card));
    return card;
  }

  function attemptsTable(detail) {
    return table(["attempt", "started (UTC)", "ended (UTC)", "took", "failure class", "cause", "fix"],
      detail.attempts.map((a) => el("tr", { class: "attempt", "data-attempt": a.attempt },
        el("td", { class: "num" }, a.attempt),
        el("td", { class: "num" }, time(a.started_at)),
        el("td", { class: "num" }, time(a.ended_at)),
        el("td", { class: "num" }, duration((Date.parse(a.ended_at) - Date.parse(a.started_at)) / 1000)),
        el("td", { class: "failure-class" }, a.failure_class || "succeeded"),
        el("td", {}, a.message),
        el("td", {}, a.fix))),
      "No learner attempt has ended yet.");
  }

  function checkpointsTable(detail) {
    return table(["step", "committed (UTC)", "size", "files"],
      detail.checkpoints.map((c) => el("tr", {},
        el("td", { class: "num" }, c.step), el("td", { class: "num" }, time(c.committed_at)),
        el("td", { class: "num" }, bytes(c.size)), el("td", { class: "num" }, c.files))),
      "No committed checkpoint.");
  }

  function evaluationSection(detail) {
    const metrics = Object.entries(detail.evaluation || {});
    const parts = [table(["metric", "value"],
      metrics.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v))),
      "No evaluation yet.")];
    if (detail.gate) {
      parts.push(el("p", { id: "gate" }, "Gate: ", el("strong", {}, detail.gate.status),
        ` (v${detail.gate.version}) — ${detail.gate.reason}`));
    }
    return parts;
  }

  /** What a version was made from: code and data digests, checkpoint, Airflow run. */
  function lineageText(lineage) {
    const short = (digest) => (digest || "").replace(/^sha256:/, "").slice(0, 12);
    return [
      lineage.code_digest ? `code ${short(lineage.code_digest)}` : null,
      lineage.data_digest ? `data ${short(lineage.data_digest)}` : null,
      lineage.parent_checkpoint !== null ? `checkpoint step ${lineage.parent_checkpoint}` : null,
      `run ${lineage.airflow_run_id}`,
    ].filter(Boolean).join(", ");
  }

  function versionsTable(detail) {
    return table(["version", "status", "value", "created (UTC)", "job", "lineage"],
      detail.versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
        el("td", { class: v.version === detail.production_version ? "production" : "" },
          `v${v.version}`, v.version === detail.production_version ? " (production)" : ""),
        el("td", {}, v.status),
        el("td", { class: "num" }, v.value === null ? "" : `${v.metric} = ${v.value}`),
        el("td", { class: "num" }, time(v.created_at)),
        el("td", {}, v.job_id === detail.job.job_id ? el("strong", {}, "this job") :
          el("a", { href: detail.job_pages[v.job_id] }, v.job_id)),
        el("td", { class: "mono" }, lineageText(v.lineage)))),
      "No model version.");
  }

  // The actions a user allowed to act (detail.may_act) may take in each state.
  const ACTIONS = {
    queued: ["pause", "cancel"], running: ["pause", "cancel"], paused: ["resume", "cancel"],
    failed: ["resume"],
  };
  let timer = null;

  async function act(action) {
    if (!window.confirm(`${action[0].toUpperCase()}${action.slice(1)} job ${body.job}?`)) return;
    const response = await fetch(`${body.api}/jobs/${encodeURIComponent(body.job)}/${action}`,
      { method: "POST", credentials: "same-origin" });
    if (!response.ok) {
      const detail = await response.json().catch(() => ({}));
      document.getElementById("action-error").textContent =
        `could not ${action} the job: ${response.status}: ${detail.detail || response.statusText}`;
      return;
    }
    refresh();
  }

  function actionsBar(detail) {
    const actions = detail.may_act ? ACTIONS[detail.job.state] || [] : [];
    if (!actions.length) return null;
    return el("div", { class: "actions", id: "actions" },
      actions.map((action) => {
        const button = el("button", { type: "button", "data-action": action },
          `${action[0].toUpperCase()}${action.slice(1)}`);
        button.addEventListener("click", () => act(action));
        return button;
      }),
      el("span", { class: "error", id: "action-error" }));
  }

  function render(detail) {
    charts.forEach((c) => c.destroy());
    charts = [];
    const job = detail.job;
    const links = detail.links;
    const width = Math.max(320, Math.min(640, main.clientWidth - 32));
    const failure = job.failure_class ? el("p", { class: "error", id: "failure" },
      `${job.failure_class} in ${detail.failure_task}: ${job.failure}`,
      detail.failure_fix ? el("br") : null, detail.failure_fix ? `Fix: ${detail.failure_fix}` : null) : null;
    const sections = [
      el("h1", {}, job.job_id, " ", stateBadge(job.state)),
      actionsBar(detail),
      el("p", { id: "progress" }, progressCell(job),
        job.elapsed_s === null ? "" : ` · ${duration(job.elapsed_s)} elapsed`,
        job.eta_s === null ? "" : ` · about ${duration(job.eta_s)} left`,
        job.max_runtime_s === null ? "" : ` · ${duration(job.runtime_s || 0)} of max_runtime ${duration(job.max_runtime_s)}`,
        job.attempt ? ` · attempt ${job.attempt}` : ""),
      failure,
      el("div", { class: "links" },
        el("a", { href: links.run, target: "_top" }, "Airflow run"),
        el("a", { href: links.learner_logs, target: "_top" }, "Task logs (learner)"),
        el("a", { href: links.trigger, target: "_top" }, "Trigger form (re-run)"),
        detail.sweep_page ? el("a", { href: detail.sweep_page, id: "sweep-link" }, "Sweep") : null),
      el("h2", {}, "Metrics"),
      detail.metrics.length
        ? el("div", { class: "cards", id: "charts" }, detail.metrics.map((m) => chart(detail, m, width)))
        : el("p", { class: "empty" }, "No metric rows yet."),
      el("h2", {}, "Utilisation"),
      detail.utilisation.length
        ? el("div", { class: "cards", id: "usage" },
          USAGE.map((measure) => usageChart(detail, measure, width)).filter((c) => c !== null))
        : el("p", { class: "empty" }, "No utilisation sampled yet."),
      el("h2", {}, "Attempts"), attemptsTable(detail),
      el("h2", {}, "Checkpoints"), checkpointsTable(detail),
      el("h2", {}, "Evaluation"), el("div", { id: "evaluation" }, evaluationSection(detail)),
      el("h2", {}, "Model versions"), versionsTable(detail)];
    main.replaceChildren(...sections.filter((section) => section !== null));
    document.body.dataset.loaded = job.state;
  }

  async function refresh() {
    clearTimeout(timer);  // one refresh loop, also after an action
    try {
      const detail = await api(`/tenants/${encodeURIComponent(body.tenant)}/jobs/${encodeURIComponent(body.job)}`);
      render(detail);
      if (!detail.job.terminal) timer = setTimeout(refresh, REFRESH_MS);
    } catch (error) {
      main.replaceChildren(el("p", { class: "error" }, `could not load the job: ${error.message}`));
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }
  refresh();
})();
