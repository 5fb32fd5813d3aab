// The training history: newest first, paged; one expandable row at a time; generated and
// completed rows select their run into the workflow card instead.

import {
  ACTIVE, Badge, FAILED, appliedText, html, progressText, shortId, useEffect, useRef, when,
} from "./ui.js";

const SELECTABLE = new Set(["generated", "completed"]);

function RefreshButton({ run, spinning, onRefresh }) {
  const click = (event) => {
    event.stopPropagation(); // never selects or expands the row
    onRefresh(run);
  };
  return html`<button type="button" class="icon refresh" onClick=${click} disabled=${spinning}
    aria-label=${`Refresh run ${shortId(run.id)}`} title="Refresh this run">
    <span class=${spinning ? "spinning" : ""} aria-hidden="true">⟳</span>
  </button>`;
}

function RowButton({ run, expanded, selected, onToggle, onSelect }) {
  const label = shortId(run.id);
  const click = (event) => {
    event.stopPropagation();
    (SELECTABLE.has(run.status) ? onSelect : onToggle)(run);
  };
  if (SELECTABLE.has(run.status)) {
    return html`<button type="button" class="icon row-select" onClick=${click}
      aria-pressed=${selected ? "true" : "false"}
      aria-label=${`Show run ${label} in the workflow card`}>${label}</button>`;
  }
  return html`<button type="button" class="icon row-toggle" onClick=${click}
    aria-expanded=${expanded ? "true" : "false"} aria-controls=${`detail-${run.id}`}
    aria-label=${`Details of run ${label}`}>
    <span aria-hidden="true">${expanded ? "▾" : "▸"}</span> ${label}</button>`;
}

function Detail({ run, spinning, busy, actions }) {
  if (ACTIVE.has(run.status)) {
    return html`<p>This run is ${run.status}; it can be stopped (it then ends as failed, and can be
      proceeded later).</p>
      <div class="actions">
        <${RefreshButton} run=${run} spinning=${spinning} onRefresh=${actions.onRefresh} />
        <button type="button" onClick=${() => actions.onCancel(run)} disabled=${busy}>Cancel run</button>
      </div>`;
  }
  return html`<p><strong>Error:</strong> <span class="error-message">${run.error_message || "(no message recorded)"}</span></p>
    <div class="actions">
      <button type="button" class="primary" onClick=${() => actions.onProceed(run)} disabled=${busy}>Proceed</button>
      <button type="button" class="danger" onClick=${() => actions.onDelete(run)} disabled=${busy}>Delete</button>
    </div>`;
}

function Row({ run, expanded, selected, spinning, busy, actions }) {
  const toggle = () => (SELECTABLE.has(run.status) ? actions.onSelect : actions.onToggle)(run);
  const classes = `run${selected ? " selected" : ""}${expanded ? " expanded" : ""}`;
  const rows = [
    html`<tr key=${run.id} id=${`run-${run.id}`} class=${classes} data-run-id=${run.id}
      data-status=${run.status} onClick=${toggle}>
      <td><${RowButton} run=${run} expanded=${expanded} selected=${selected}
        onToggle=${actions.onToggle} onSelect=${actions.onSelect} /></td>
      <td><${Badge} status=${run.status} />${run.status === "completed" && run.metrics?.guard
        ? html` <span class="applied-flag" data-applied=${String(run.metrics.guard.applied)}>${appliedText(run.metrics.guard.applied)}</span>`
        : null}</td>
      <td>${run.dataset}</td>
      <td>${when(run.created_at)}</td>
      <td class="num">${run.attempt}</td>
      <td class="num pairs">${run.pair_count}</td>
      <td class="num progress">${progressText(run)}</td>
      <td>${ACTIVE.has(run.status)
        ? html`<${RefreshButton} run=${run} spinning=${spinning} onRefresh=${actions.onRefresh} />`
        : null}</td>
    </tr>`,
  ];
  if (expanded && (ACTIVE.has(run.status) || FAILED.has(run.status))) {
    rows.push(html`<tr key=${`${run.id}-detail`} class="detail" id=${`detail-${run.id}`}>
      <td colspan="8"><${Detail} run=${run} spinning=${spinning} busy=${busy} actions=${actions} /></td>
    </tr>`);
  }
  return rows;
}

export function HistoryTable({ page, expandedId, selectedId, refreshing, busy, actions }) {
  if (!page) return html`<p class="muted">Loading runs…</p>`;
  return html`<table aria-label="Training runs, newest first">
      <thead><tr>
        <th scope="col">Run</th><th scope="col">Status</th><th scope="col">Dataset</th>
        <th scope="col">Created</th><th scope="col">Attempt</th><th scope="col">Pairs</th>
        <th scope="col">Progress</th><th scope="col"><span class="visually-hidden">Refresh</span></th>
      </tr></thead>
      <tbody>
        ${page.runs.length === 0
          ? html`<tr><td colspan="8" class="muted">No runs yet: press Generate.</td></tr>`
          : page.runs.map((run) => html`<${Row} key=${run.id} run=${run}
              expanded=${expandedId === run.id} selected=${selectedId === run.id}
              spinning=${refreshing.has(run.id)} busy=${busy} actions=${actions} />`)}
      </tbody>
    </table>
    <div class="pager">
      <button type="button" onClick=${() => actions.onPage(Math.max(0, page.offset - page.limit))}
        disabled=${page.offset === 0}>Newer</button>
      <span class="muted">runs ${page.runs.length ? page.offset + 1 : 0}–${page.offset + page.runs.length}</span>
      <button type="button" onClick=${() => actions.onPage(page.next_offset)}
        disabled=${page.next_offset === null}>Older</button>
    </div>`;
}

/** Delete, behind a modal that names the run and its pair count. */
export function ConfirmDelete({ run, onCancel, onConfirm }) {
  const dialog = useRef(null);
  useEffect(() => {
    const element = dialog.current;
    if (element && !element.open) element.showModal();
    const cancel = (event) => {
      event.preventDefault();
      onCancel();
    };
    element.addEventListener("cancel", cancel);
    return () => element.removeEventListener("cancel", cancel);
  }, [run.id]);
  return html`<dialog ref=${dialog} aria-labelledby="delete-title" aria-describedby="delete-text">
    <h2 id="delete-title">Delete run ${shortId(run.id)}?</h2>
    <p id="delete-text">Run <code>${run.id}</code> (${run.status.replace("_", " ")}) and its
      ${" "}<strong class="pair-count">${run.pair_count} pairs</strong> will be deleted. This cannot be undone.</p>
    <div class="actions">
      <button type="button" onClick=${onCancel} autofocus>Cancel</button>
      <button type="button" class="danger" onClick=${onConfirm}>Delete run</button>
    </div>
  </dialog>`;
}
