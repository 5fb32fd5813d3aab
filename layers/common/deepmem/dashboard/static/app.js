// The deepmem admin page: runs, progress, proceed, delete, review and settings, over the
// public API only. Live updates: Supabase Realtime on training_runs where a project is
// configured, else polling every 2 s while a run is active (never otherwise).

import { ApiError, Auth, NetworkError, loadPageConfig, request } from "./api.js";
import { ConfirmDelete, HistoryTable } from "./runs.js";
import { SettingsCard } from "./settings.js";
import { ACTIVE, FAILED, html, render, shortId, useEffect, useRef, useState } from "./ui.js";
import { WorkflowCard } from "./workflow.js";

const POLL_MS = 2000;
const PAGE_SIZE = 10;
const PAIRS_PAGE = 10;

function Banner({ banner, onShowRow, onDismiss }) {
  if (!banner) return null;
  return html`<div class="notice error banner" role="alert">
    <span class="banner-message">${banner.message}</span>
    ${banner.blockingRunId
      ? html` <a href=${`#run-${banner.blockingRunId}`} onClick=${(event) => (event.preventDefault(), onShowRow(banner.blockingRunId))}>
          Show run ${shortId(banner.blockingRunId)}</a>`
      : null}
    <div class="actions">
      ${banner.retry ? html`<button type="button" class="retry" onClick=${banner.retry}>Retry</button>` : null}
      <button type="button" onClick=${onDismiss}>Dismiss</button>
    </div>
  </div>`;
}

/** Where the rate is measured from: the first sample of the run in focus. */
function useRate(focus) {
  const origin = useRef(null);
  if (!focus) return null;
  const now = Date.now();
  if (!origin.current || origin.current.id !== focus.id || origin.current.attempt !== focus.attempt) {
    origin.current = { id: focus.id, attempt: focus.attempt, t: now, processed: focus.processed_chunks };
    return null;
  }
  const seconds = (now - origin.current.t) / 1000;
  const done = focus.processed_chunks - origin.current.processed;
  return seconds > 0 && done > 0 ? done / seconds : null;
}

function Dashboard({ config, auth, onAuthProblem }) {
  const [settings, setSettings] = useState(null);
  const [page, setPage] = useState(null);
  const [offset, setOffset] = useState(0);
  const [expandedId, setExpandedId] = useState(null);
  const [focusId, setFocusId] = useState(null);
  const [focus, setFocus] = useState(null);
  const [refreshing, setRefreshing] = useState(new Set());
  const [busy, setBusy] = useState(false);
  const [banner, setBanner] = useState(null);
  const [confirm, setConfirm] = useState(null);
  const [realtime, setRealtime] = useState(false);
  const latest = useRef({});
  latest.current = { offset, focusId };
  const rate = useRate(focus && ACTIVE.has(focus.status) ? focus : null);

  const api = async (method, path, body) => {
    try {
      return await request(config, auth, method, path, body);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        onAuthProblem(error);
      }
      throw error;
    }
  };

  const show = (error, retry) => {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return;
    const message = error instanceof NetworkError ? `${error.message}.` : error.message;
    setBanner({ message, retry, blockingRunId: error.body ? error.body.blocking_run_id : null });
  };

  const reload = async () => {
    const { offset: at, focusId: id } = latest.current;
    try {
      const [nextSettings, nextPage] = await Promise.all([
        api("GET", "/settings"),
        api("GET", `/runs?limit=${PAGE_SIZE}&offset=${at}`),
      ]);
      setSettings(nextSettings);
      setPage(nextPage);
      if (id) setFocus(nextPage.runs.find((run) => run.id === id) || (await api("GET", `/runs/${id}`)));
      setBanner((current) => (current && current.retry ? null : current));
    } catch (error) {
      show(error, reload);
    }
  };

  const act = async (work) => {
    setBusy(true);
    setBanner(null);
    try {
      await work();
    } catch (error) {
      show(error, null);
    } finally {
      setBusy(false);
      await reload();
    }
  };

  useEffect(() => void reload(), [offset, focusId]);

  const anyActive =
    (settings && settings.has_blocking_run && ACTIVE.has(settings.blocking_run_status)) ||
    (page && page.runs.some((run) => ACTIVE.has(run.status))) ||
    (focus && ACTIVE.has(focus.status));
  useEffect(() => {
    if (!anyActive || realtime) return undefined;
    const timer = setInterval(reload, POLL_MS);
    return () => clearInterval(timer);
  }, [anyActive, realtime]);

  useEffect(() => {
    // One reload for a burst of changes (a generating run writes one per batch).
    let pending = null;
    const changed = () => (pending = pending || setTimeout(() => ((pending = null), reload()), 500));
    const stop = auth.subscribeToRuns(changed, (status) => setRealtime(status === "SUBSCRIBED"));
    return () => (clearTimeout(pending), stop && stop());
  }, []);

  const showRow = (id) => {
    const run = page && page.runs.find((item) => item.id === id);
    if (!run) return setOffset(0);
    if (ACTIVE.has(run.status) || FAILED.has(run.status)) setExpandedId(id);
    else setFocusId(id);
    const row = document.getElementById(`run-${id}`);
    if (row) {
      row.scrollIntoView({ block: "center" });
      const button = row.querySelector("button");
      if (button) button.focus();
    }
  };

  const actions = {
    onGenerate: () => act(async () => {
      const started = await api("POST", "/generate");
      setExpandedId(null);
      setFocusId(started.training_run_id);
    }),
    onTrain: (run) => act(() => api("POST", "/train", { training_run_id: run.id })),
    onProceed: (run) => act(async () => {
      await api("POST", "/proceed", { training_run_id: run.id });
      setExpandedId(null);
      setFocusId(run.id);
    }),
    onCancel: (run) => act(() => api("POST", `/runs/${run.id}/cancel`)),
    onDelete: (run) => setConfirm(run),
    onToggle: (run) => setExpandedId((current) => (current === run.id ? null : run.id)),
    onSelect: (run) => {
      setExpandedId(null);
      setFocusId(run.id);
      setFocus(run);
    },
    onShowRow: showRow,
    onPage: (next) => setOffset(next),
    onRefresh: async (run) => {
      setRefreshing((current) => new Set([...current, run.id]));
      try {
        const fresh = await api("GET", `/runs/${run.id}`);
        setPage((current) => ({ ...current, runs: current.runs.map((item) => (item.id === fresh.id ? fresh : item)) }));
        if (latest.current.focusId === fresh.id) setFocus(fresh);
      } catch (error) {
        show(error, null);
      } finally {
        setRefreshing((current) => new Set([...current].filter((id) => id !== run.id)));
      }
    },
    loadPairs: (id, at) => api("GET", `/runs/${id}/pairs?limit=${PAIRS_PAGE}&offset=${at}`),
  };

  const confirmDelete = () => {
    const run = confirm;
    setConfirm(null);
    act(async () => {
      await api("DELETE", `/runs/${run.id}`);
      setExpandedId(null);
      if (latest.current.focusId === run.id) (setFocusId(null), setFocus(null));
    });
  };

  const saveSettings = async (body) => {
    if (Object.keys(body).length === 0) return true;
    setBanner(null);
    try {
      setSettings(await api("PUT", "/settings", body));
      return true;
    } catch (error) {
      show(error, null);
      await reload(); // a refusal (409) names a run the page may not know of yet
      return false;
    }
  };

  return html`<${Banner} banner=${banner} onShowRow=${showRow} onDismiss=${() => setBanner(null)} />
    <div class="grid">
      <div>
        <${WorkflowCard} settings=${settings} focus=${focus} rate=${rate} busy=${busy} actions=${actions} />
        <section class="card history" aria-labelledby="history-title">
          <h2 id="history-title">Training history</h2>
          <p class="muted live-status">${realtime ? "Live: Supabase Realtime." : anyActive ? "Live: refreshing every 2 s while a run is active." : "No run is active."}</p>
          <${HistoryTable} page=${page} expandedId=${expandedId} selectedId=${focusId}
            refreshing=${refreshing} busy=${busy} actions=${actions} />
        </section>
      </div>
      <${SettingsCard} settings=${settings} busy=${busy} onSave=${saveSettings} />
    </div>
    ${confirm ? html`<${ConfirmDelete} run=${confirm} onCancel=${() => setConfirm(null)} onConfirm=${confirmDelete} />` : null}`;
}

function SignIn({ auth, problem, onSignedIn }) {
  const [fields, setFields] = useState({ token: "", email: "", password: "" });
  const [error, setError] = useState(null);
  const set = (name) => (event) => setFields({ ...fields, [name]: event.target.value });
  const submit = async (event) => {
    event.preventDefault();
    try {
      await auth.signIn(fields);
      onSignedIn();
    } catch (failure) {
      setError(failure.message);
    }
  };
  const why = problem
    ? problem.status === 403
      ? html`<div class="notice error auth-problem" role="alert">${problem.message}: sign in with an admin account.</div>`
      : html`<div class="notice error auth-problem" role="alert">${problem.message}: sign in again.</div>`
    : null;
  const local = auth.kind !== "supabase";
  return html`<section class="card signin-card" aria-labelledby="signin-title">
    <h2 id="signin-title">Sign in</h2>
    ${why}
    ${error ? html`<div class="notice error" role="alert">${error}</div>` : null}
    <form class="signin" onSubmit=${submit}>
      ${local
        ? html`<p class="muted">Paste the admin token that <code>deepmem serve</code> printed (or open the page URL it printed).</p>
            <label>Admin token<input type="password" name="token" autocomplete="off" value=${fields.token} onInput=${set("token")} required /></label>`
        : html`<label>Email<input type="email" name="email" autocomplete="username" value=${fields.email} onInput=${set("email")} required /></label>
            <label>Password<input type="password" name="password" autocomplete="current-password" value=${fields.password} onInput=${set("password")} required /></label>`}
      <div class="actions"><button type="submit" class="primary">Sign in</button></div>
    </form>
  </section>`;
}

function App() {
  const [state, setState] = useState({ phase: "loading" });
  const [problem, setProblem] = useState(null);
  const [, setVersion] = useState(0);
  // A new sign-in starts the dashboard afresh; a refreshed token (Supabase, hourly) does not.
  const [session, setSession] = useState(0);
  const signedIn = () => (setProblem(null), setSession((n) => n + 1));

  const start = async () => {
    setState({ phase: "loading" });
    try {
      const config = await loadPageConfig();
      const auth = new Auth(config, () => setVersion((v) => v + 1));
      await auth.start();
      setState({ phase: "ready", config, auth });
    } catch (error) {
      setState({ phase: "failed", message: error.message });
    }
  };
  useEffect(() => void start(), []);
  useEffect(() => {
    if (state.phase !== "ready") return undefined;
    // The page's URL opened again in this tab with another token: only the fragment changed.
    const onHash = () => state.auth.takeFragmentToken() && signedIn();
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, [state]);

  let body;
  if (state.phase === "loading") body = html`<p class="muted">Loading the admin page…</p>`;
  else if (state.phase === "failed") {
    body = html`<div class="notice error" role="alert">The admin page could not start: ${state.message}.
      <div class="actions"><button type="button" class="retry" onClick=${start}>Retry</button></div></div>`;
  } else if (!state.auth.token || problem) {
    body = html`<${SignIn} auth=${state.auth} problem=${problem} onSignedIn=${signedIn} />`;
  } else {
    body = html`<${Dashboard} key=${session} config=${state.config} auth=${state.auth} onAuthProblem=${setProblem} />`;
  }
  const hasToken = state.phase === "ready" && state.auth.token;
  return html`<header>
      <h1>deepmem admin</h1>
      ${hasToken ? html`<button type="button" onClick=${() => (setProblem(null), state.auth.signOut())}>Sign out</button>` : null}
    </header>
    <main>${body}</main>`;
}

const root = document.getElementById("root");
root.textContent = ""; // the static "Loading" text, replaced by the page
render(html`<${App} />`, root);
