// The settings card: editable while no run is generating or training (the API refuses a change
// then, with a 409 whose detail is shown as it is), and the trainer in effect.

import { ACTIVE, html, useEffect, useState } from "./ui.js";

const NUMBERS = [
  ["questions_per_chunk", "Questions per chunk", 1, 10],
  ["batch_size", "Chunks per batch", 1, 1000],
  ["concurrency", "LLM calls in flight per lane", 1, 128],
  ["lanes", "Parallel lanes", 1, 40],
  ["max_chunks_per_run", "Max chunks per run (empty: all)", 1, 10000000],
];
const TEXTS = [
  ["llm_model", "LLM model"],
  ["embedding_model", "Embedding model"],
];
const TRAINERS = ["auto", "deep_memory", "query_adapter", "feedback_adapter"];
const FIELDS = [...NUMBERS.map((f) => f[0]), ...TEXTS.map((f) => f[0]), "trainer"];

function formOf(settings) {
  const form = {};
  for (const name of FIELDS) form[name] = settings[name] === null ? "" : String(settings[name]);
  return form;
}

/** Only what changed; numbers as numbers; an emptied cap as null (no cap). */
function changes(settings, form) {
  const body = {};
  for (const name of FIELDS) {
    const before = settings[name] === null ? "" : String(settings[name]);
    if (form[name] === before) continue;
    const isNumber = NUMBERS.some((field) => field[0] === name);
    body[name] = isNumber ? (form[name] === "" ? null : Number(form[name])) : form[name];
  }
  return body;
}

export function SettingsCard({ settings, busy, onSave }) {
  const [form, setForm] = useState(null);
  const [saved, setSaved] = useState(false);
  useEffect(() => settings && setForm(formOf(settings)), [settings && JSON.stringify(settings)]);
  if (!settings || !form) return html`<section class="card"><h2>Settings</h2><p class="muted">Loading…</p></section>`;
  const locked = settings.has_blocking_run && ACTIVE.has(settings.blocking_run_status);
  const set = (name) => (event) => (setForm({ ...form, [name]: event.target.value }), setSaved(false));
  const submit = async (event) => {
    event.preventDefault();
    setSaved(await onSave(changes(settings, form)));
  };
  const effective = settings.effective_trainer ? settings.effective_trainer.replace("_", " ") : "none: the trainer setting cannot be honoured on this dataset";
  return html`<section class="card settings-card" aria-labelledby="settings-title">
    <h2 id="settings-title">Settings</h2>
    <p>Trainer in effect: <strong class="effective-trainer">${effective}</strong></p>
    ${settings.is_cloud
      ? null
      : html`<div class="notice info local-dataset">Deep Memory needs a <code>hub://</code> dataset.
          This dataset is not one, so runs train the query adapter instead.</div>`}
    ${locked ? html`<div class="notice warn">Settings cannot change while a run is ${settings.blocking_run_status}.</div>` : null}
    <form class="settings" onSubmit=${submit}>
      <fieldset disabled=${locked || busy}>
        <legend class="visually-hidden">Generation and training settings</legend>
        ${NUMBERS.map(([name, label, min, max]) => html`<label key=${name}>${label}
          <input type="number" name=${name} min=${min} max=${max} value=${form[name]} onInput=${set(name)} /></label>`)}
        ${TEXTS.map(([name, label]) => html`<label key=${name}>${label}
          <input type="text" name=${name} value=${form[name]} onInput=${set(name)} /></label>`)}
        <label>Trainer
          <select name="trainer" value=${form.trainer} onChange=${set("trainer")}>
            ${TRAINERS.map((kind) => html`<option key=${kind} value=${kind}>${kind.replace("_", " ")}</option>`)}
          </select></label>
        <div class="actions"><button type="submit">Save settings</button>
          ${saved ? html`<span role="status">Saved.</span>` : null}</div>
      </fieldset>
    </form>
  </section>`;
}
