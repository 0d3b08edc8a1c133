// protobench leaderboard pages: sort by any column, filter by setting and method, and
// open a row's detail view. Plain DOM, no dependencies, nothing fetched.
"use strict";

(function () {
  const table = document.getElementById("board");
  if (!table) return;
  const body = table.tBodies[0];
  const records = JSON.parse(document.getElementById("records").textContent);
  const settingFilter = document.getElementById("setting-filter");
  const methodFilter = document.getElementById("method-filter");
  const shown = document.getElementById("shown");
  const dialog = document.getElementById("detail");
  const detail = document.getElementById("detail-body");

  function cellValue(row, key, type) {
    const cell = row.querySelector(`td[data-key="${key}"]`);
    const raw = cell ? cell.dataset.sort : "";
    if (type === "num") return raw === "" ? NaN : Number(raw);
    return raw.toLowerCase();
  }

  function sortBy(th) {
    const key = th.dataset.key, type = th.dataset.type;
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    for (const other of table.tHead.rows[0].cells) other.setAttribute("aria-sort", "none");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = cellValue(a, key, type), y = cellValue(b, key, type);
      if (type === "num") {
        if (Number.isNaN(x) && Number.isNaN(y)) return 0;
        if (Number.isNaN(x)) return 1;  // empty cells last either way
        if (Number.isNaN(y)) return -1;
        return ascending ? x - y : y - x;
      }
      return ascending ? x.localeCompare(y) : y.localeCompare(x);
    });
    for (const row of rows) body.appendChild(row);
  }

  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => sortBy(th));
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sortBy(th); });
  }

  function applyFilters() {
    const setting = settingFilter.value;
    const text = methodFilter.value.trim().toLowerCase();
    let n = 0;
    for (const row of body.rows) {
      const ok = (!setting || row.dataset.setting === setting) &&
        (!text || row.dataset.method.toLowerCase().includes(text));
      row.hidden = !ok;
      if (ok) n += 1;
    }
    shown.textContent = `${n} shown`;
  }
  settingFilter.addEventListener("change", applyFilters);
  methodFilter.addEventListener("input", applyFilters);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function show(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function kvTable(title, obj) {
    const section = el("section");
    section.appendChild(el("h3", title));
    const t = el("table", undefined, "kv");
    const keys = Object.keys(obj || {}).sort();
    if (!keys.length) section.appendChild(el("p", "(none)", "muted"));
    for (const k of keys) {
      const tr = t.insertRow();
      tr.appendChild(el("th", k));
      tr.appendChild(el("td", show(obj[k])));
    }
    section.appendChild(t);
    return section;
  }

  function command(title, text) {
    const section = el("section", undefined, "command");
    section.appendChild(el("h3", title));
    section.appendChild(el("pre", text || "(this row records no job to re-run)"));
    return section;
  }

  function matrix(m) {
    const section = el("section");
    section.appendChild(el("h3", `accuracy matrix, seed ${m.seed} (% on experience j after experience i)`));
    const t = el("table", undefined, "matrix");
    m.rows.forEach((row) => {
      const tr = t.insertRow();
      row.forEach((v) => {
        const td = tr.insertCell();
        if (v === null) { td.className = "empty"; return; }
        td.textContent = (100 * v).toFixed(0);
        td.style.background = `hsl(${Math.round(120 * v)}, 55%, ${85 - 30 * v}%)`;
      });
    });
    section.appendChild(t);
    return section;
  }

  function renderRecord(r) {
    const box = el("article", undefined, "record");
    box.dataset.recordId = r.id;
    box.appendChild(el("h2", `row ${r.id}: ${r.method} (${r.setting})`));
    const metrics = {};
    for (const [k, m] of Object.entries(r.metrics)) {
      metrics[k] = m.ci95 === null ? m.value : `${m.value} ± ${m.ci95} (n=${m.n})`;
    }
    box.appendChild(command("reproduce", r.rerun));
    box.appendChild(command("full command line", r.cli));
    box.appendChild(kvTable("run", {
      "seeds": r.seeds.join(", "), "episode manifest / stream hash": r.hashes.join(", "),
      "preset": r.preset, "primary metric": r.primary_metric, "wall time (s)": r.wall_time_s,
      "timestamp": r.timestamp, "git revision": r.git_revision, "device": r.device,
      "sweep grid": r.sweep.grid || "", "sweep cell": r.sweep.cell || "",
    }));
    box.appendChild(kvTable("method parameters", r.method_params));
    box.appendChild(kvTable("protocol", r.protocol));
    box.appendChild(kvTable("dataset options", r.dataset_options));
    box.appendChild(kvTable("data (checksums, streams)", r.data));
    box.appendChild(kvTable("metrics", metrics));
    box.appendChild(kvTable("versions", r.versions));
    box.appendChild(kvTable("machine", r.machine));
    for (const m of r.matrices) box.appendChild(matrix(m));
    return box;
  }

  function open(row) {
    detail.replaceChildren();
    const ids = row.dataset.rows.split(",").filter((s) => s);
    detail.appendChild(el("p", `${row.dataset.method}: ${ids.length} row(s), seeds ${row.dataset.seeds}`, "lead"));
    for (const id of ids) {
      if (records[id]) detail.appendChild(renderRecord(records[id]));
    }
    dialog.showModal();
  }

  for (const row of body.rows) {
    row.addEventListener("click", () => open(row));
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(row); });
  }
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
})();
