// Shared pieces of the page: htm bound to Preact (the vendored standalone build), badges,
// the Progress column's text.

export const { html, render, useState, useEffect, useRef, useCallback } = window.htmPreact;

export const ACTIVE = new Set(["generating", "training"]);
export const FAILED = new Set(["generating_failed", "training_failed"]);

// A mark beside the words: the status reads the same without colour.
const MARKS = {
  generating: "●",
  training: "●",
  generated: "◆",
  completed: "✓",
  generating_failed: "✕",
  training_failed: "✕",
};

export const BLOCKING_MESSAGES = {
  generating: "a run is generating",
  generated: "a run is awaiting review",
  training: "a run is training",
  generating_failed: "a failed run must be resolved first",
  training_failed: "a failed run must be resolved first",
};

export function statusLabel(status) {
  return status.replace("_", " ");
}

export function Badge({ status }) {
  const active = ACTIVE.has(status) ? " active" : "";
  return html`<span class=${`badge ${status}${active}`} data-status=${status}>
    <span class="mark" aria-hidden="true">${MARKS[status] || "•"}</span>${statusLabel(status)}
  </span>`;
}

/** processed/total for generating and both failed statuses, "In progress" while training. */
export function progressText(run) {
  if (run.status === "training") return "In progress";
  if (run.status === "generating" || FAILED.has(run.status)) {
    return `${run.processed_chunks}/${run.total_chunks}`;
  }
  return "—";
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function when(iso) {
  return new Date(iso).toLocaleString();
}

export function Notice({ kind, children }) {
  return html`<div class=${`notice ${kind}`}>${children}</div>`;
}

// Whether the trainer's guard applied a completed run's adapter (null: it cannot tell).
export function appliedText(applied) {
  if (applied === true) return "applied";
  if (applied === false) return "not applied";
  return "applied: unknown";
}
