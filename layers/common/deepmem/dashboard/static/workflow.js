// The training workflow card: Generate (or why not), then the run in focus: its live progress,
// its pairs for review with Train, or its recall before → after.

import { BLOCKING_MESSAGES, Badge, appliedText, html, shortId, useEffect, useState } from "./ui.js";

function GenerateControl({ settings, busy, onGenerate, onShowRow }) {
  const blocked = settings && settings.has_blocking_run;
  const status = blocked ? settings.blocking_run_status : null;
  const show = (event) => {
    event.preventDefault();
    onShowRow(settings.blocking_run_id);
  };
  return html`<div class="actions">
      <button type="button" class="primary generate" onClick=${onGenerate}
        disabled=${!settings || blocked || busy} aria-describedby=${blocked ? "blocking" : undefined}>
        Generate</button>
      ${blocked
        ? html`<span id="blocking" class="blocking-message">Generate is unavailable: ${BLOCKING_MESSAGES[status] || status}
            ${" "}(<a href=${`#run-${settings.blocking_run_id}`} onClick=${show}>run ${shortId(settings.blocking_run_id)}</a>).</span>`
        : null}
    </div>`;
}

function Progress({ run, rate }) {
  const total = run.total_chunks || 0;
  return html`<dl class="facts run-progress">
      <dt>Processed</dt><dd class="processed">${run.processed_chunks}/${total} chunks</dd>
      <dt>Pairs</dt><dd class="pair-total">${run.pair_count}</dd>
      <dt>Rate</dt><dd class="rate">${rate === null ? "—" : `${rate.toFixed(1)} chunks/s`}</dd>
    </dl>
    <progress max=${Math.max(total, 1)} value=${run.processed_chunks}
      aria-label=${`Generation progress: ${run.processed_chunks} of ${total} chunks`}></progress>`;
}

function PairsReview({ run, load }) {
  const [offset, setOffset] = useState(0);
  const [page, setPage] = useState(null);
  const [problem, setProblem] = useState(null);
  useEffect(() => {
    let live = true;
    load(run.id, offset)
      .then((answer) => live && (setPage(answer), setProblem(null)))
      .catch((error) => live && setProblem(error.message));
    return () => (live = false);
  }, [run.id, offset]);
  if (problem) return html`<div class="notice error" role="alert">${problem}</div>`;
  if (!page) return html`<p class="muted">Loading pairs…</p>`;
  return html`<h3>Pairs for review</h3>
    <table class="pairs-table" aria-label="Question-chunk pairs">
      <thead><tr><th scope="col">Question</th><th scope="col">Chunk</th></tr></thead>
      <tbody>${page.pairs.map((pair) => html`<tr key=${pair.id}>
        <td class="question">${pair.question}</td><td><code>${pair.chunk_id}</code></td></tr>`)}
      </tbody>
    </table>
    <p class="muted">The API gives each pair's chunk id; the chunk's text stays in the dataset.</p>
    <div class="pager">
      <button type="button" onClick=${() => setOffset(Math.max(0, offset - page.limit))}
        disabled=${offset === 0}>Previous pairs</button>
      <span class="muted">pairs ${page.pairs.length ? offset + 1 : 0}–${offset + page.pairs.length} of ${run.pair_count}</span>
      <button type="button" onClick=${() => setOffset(page.next_offset)}
        disabled=${page.next_offset === null}>Next pairs</button>
    </div>`;
}

const GUARD_METRICS = ["recall@1", "recall@5", "recall@10", "ndcg@10"];
const pct = (value) => (value === undefined || value === null ? "—" : `${(value * 100).toFixed(1)}%`);

function GuardTable({ guard }) {
  const before = guard.before || {};
  const after = guard.after || {};
  const previous = guard.previous || null;
  const keys = GUARD_METRICS.filter((key) => key in before || key in after);
  return html`<table class="recall" aria-label="Held-out recall and nDCG before and after training">
      <thead><tr><th scope="col">Metric</th><th scope="col">Before → after</th>
        ${previous ? html`<th scope="col">Active adapter</th>` : null}</tr></thead>
      <tbody>${keys.map((key) => html`<tr key=${key} data-metric=${key}><td>${key}</td>
        <td class="num">${pct(before[key])} → ${pct(after[key])}</td>
        ${previous ? html`<td class="num previous">${pct(previous[key])}</td>` : null}</tr>`)}</tbody>
    </table>
    <p class="applied" data-applied=${String(guard.applied)}>
      <strong>${appliedText(guard.applied)}</strong>${guard.reason ? `: ${guard.reason}` : ""}</p>
    <p class="muted">On ${guard.questions ?? "the"} held-out generated questions, never trained on
      (binary relevance).</p>`;
}

function Recall({ run }) {
  const metrics = run.metrics || {};
  const trainer = html`<p>Trainer: <strong class="trainer">${(metrics.trainer || "unknown").replace("_", " ")}</strong></p>`;
  if (metrics.guard) {
    return html`<h3>Recall</h3>${trainer}<${GuardTable} guard=${metrics.guard} />`;
  }
  const before = metrics.recall_before || {};
  const after = metrics.recall_after || {};
  const keys = Object.keys(after).length ? Object.keys(after) : Object.keys(before);
  return html`<h3>Recall</h3>${trainer}
    <table class="recall" aria-label="Recall before and after training">
      <thead><tr><th scope="col">Metric</th><th scope="col">Before → after</th></tr></thead>
      <tbody>${keys.map((key) => html`<tr key=${key}><td>${key}</td>
        <td class="num">${pct(before[key])} → ${pct(after[key])}</td></tr>`)}</tbody>
    </table>`;
}

function FocusRun({ run, rate, busy, onTrain, loadPairs }) {
  return html`<div class="focus-run" data-run-id=${run.id} data-status=${run.status}>
    <h3>Run <code>${shortId(run.id)}</code> <${Badge} status=${run.status} /></h3>
    ${run.status === "completed" ? null : html`<${Progress} run=${run} rate=${rate} />`}
    ${run.status === "training" ? html`<p>Training is in progress.</p>` : null}
    ${run.error_message ? html`<p class="error-message">Error: ${run.error_message}</p>` : null}
    ${run.status === "generated"
      ? html`<div class="actions"><button type="button" class="primary train"
          onClick=${() => onTrain(run)} disabled=${busy}>Train</button></div>
          <${PairsReview} run=${run} load=${loadPairs} />`
      : null}
    ${run.status === "completed" ? html`<${Recall} run=${run} />` : null}
  </div>`;
}

export function WorkflowCard({ settings, focus, rate, busy, actions }) {
  return html`<section class="card workflow" aria-labelledby="workflow-title">
    <h2 id="workflow-title">Training workflow</h2>
    <p class="muted">Generate question-chunk pairs from the dataset, review them, then train.</p>
    <${GenerateControl} settings=${settings} busy=${busy} onGenerate=${actions.onGenerate}
      onShowRow=${actions.onShowRow} />
    ${focus ? html`<${FocusRun} run=${focus} rate=${rate} busy=${busy} onTrain=${actions.onTrain}
      loadPairs=${actions.loadPairs} />` : null}
  </section>`;
}
