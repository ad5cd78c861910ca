// Shared by Trainyard's pages: Airflow's colour mode, fetching the plugin's API, formatting.
"use strict";

const Trainyard = (() => {
  const body = document.body.dataset;

  /** Airflow's colour mode: the UI around this page (same origin) or the system's. */
  function applyTheme() {
    let dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    try {
      const outer = window.parent !== window ? window.parent.document.documentElement : null;
      if (outer) dark = outer.classList.contains("dark") || outer.style.colorScheme === "dark";
    } catch (_) { /* not embedded by Airflow: keep the system's */ }
    document.documentElement.dataset.theme = dark ? "dark" : "light";
  }

  async function api(path) {
    const response = await fetch(body.api + path, { credentials: "same-origin" });
    if (!response.ok) {
      const detail = await response.json().catch(() => ({}));
      throw new Error(`${response.status}: ${detail.detail || response.statusText}`);
    }
    return response.json();
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const whole = Math.max(0, Math.round(seconds));
    const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    return m ? `${m}m ${String(s).padStart(2, "0")}s` : `${s}s`;
  }

  function time(iso) {
    return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "";
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function stateBadge(state) {
    return el("span", { class: `state ${state}` }, state);
  }

  function progressCell(job) {
    const parts = [];
    if (job.progress !== null && job.progress !== undefined) {
      parts.push(el("span", { class: "bar" },
        el("span", { style: `width:${Math.round(job.progress * 100)}%` })));
      parts.push(`${Math.round(job.progress * 100)}%`);
    }
    if (job.step !== null && job.step !== undefined) {
      parts.push(` step ${job.step}` + (job.total_steps ? ` of ${job.total_steps}` : ""));
    }
    return parts;
  }

  applyTheme();
  return { body, api, el, duration, time, bytes, stateBadge, progressCell };
})();
