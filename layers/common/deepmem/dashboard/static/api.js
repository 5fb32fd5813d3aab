// The page's only way to the data: the public API, with the admin's bearer token.
// Sign-in: Supabase Auth (supabase-js) when /dashboard/config.json names a project; else a
// local admin token (what `deepmem serve` prints), taken from the URL fragment `#token=...`
// and kept in this tab's session storage.

const TOKEN_KEY = "deepmem.token";

export class ApiError extends Error {
  constructor(status, body) {
    super(formatDetail(body && body.detail !== undefined ? body.detail : `HTTP ${status}`));
    this.status = status;
    this.body = body || {};
  }
}

export class NetworkError extends Error {
  constructor(cause) {
    super(`cannot reach the API (${cause && cause.message ? cause.message : cause})`);
  }
}

/** `detail` as the API gives it: a message, or the list of invalid fields of a 422. */
export function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        const where = (item.loc || []).filter((part) => part !== "body").join(".");
        return where ? `${where}: ${item.msg}` : item.msg;
      })
      .join("; ");
  }
  return JSON.stringify(detail);
}

export async function loadPageConfig() {
  let answer;
  try {
    answer = await fetch("/dashboard/config.json", { cache: "no-store" });
  } catch (cause) {
    throw new NetworkError(cause);
  }
  if (!answer.ok) throw new ApiError(answer.status, await answer.json().catch(() => null));
  return answer.json();
}

/** Signs in and out, and knows the current access token. */
export class Auth {
  constructor(config, onChange) {
    this.config = config;
    this.onChange = onChange;
    this.client = null;
    this.token = null;
  }

  get kind() {
    return this.config.auth;
  }

  async start() {
    if (this.kind === "supabase") {
      this.client = window.supabase.createClient(
        this.config.supabase_url,
        this.config.supabase_anon_key,
      );
      const { data } = await this.client.auth.getSession();
      this.token = data.session ? data.session.access_token : null;
      this.client.auth.onAuthStateChange((_event, session) => {
        this.token = session ? session.access_token : null;
        this.onChange();
      });
      return;
    }
    this.takeFragmentToken();
    this.token = sessionStorage.getItem(TOKEN_KEY);
  }

  /** A `#token=...` in the address (the URL `deepmem serve` prints): kept, then removed. */
  takeFragmentToken() {
    if (this.kind === "supabase") return false;
    const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
    if (!token) return false;
    sessionStorage.setItem(TOKEN_KEY, token);
    this.token = token;
    // The token leaves the address bar (and the history) at once.
    history.replaceState(null, "", window.location.pathname + window.location.search);
    return true;
  }

  async signIn(fields) {
    if (this.kind === "supabase") {
      const { error } = await this.client.auth.signInWithPassword({
        email: fields.email,
        password: fields.password,
      });
      if (error) throw new Error(error.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, fields.token.trim());
    this.token = fields.token.trim();
    this.onChange();
  }

  async signOut() {
    if (this.client) await this.client.auth.signOut();
    sessionStorage.removeItem(TOKEN_KEY);
    this.token = null;
    this.onChange();
  }

  /** Live changes of training_runs over Supabase Realtime; null where there is no project. */
  subscribeToRuns(onChange, onStatus) {
    if (!this.client) return null;
    if (this.token) this.client.realtime.setAuth(this.token);
    const channel = this.client
      .channel("deepmem-training-runs")
      .on("postgres_changes", { event: "*", schema: "public", table: "training_runs" }, onChange)
      .subscribe((status) => onStatus(status));
    return () => this.client.removeChannel(channel);
  }
}

/** `method path` on the API: the JSON answer, or ApiError (with `detail`) / NetworkError. */
export async function request(config, auth, method, path, body) {
  const headers = { Accept: "application/json" };
  if (auth.token) headers.Authorization = `Bearer ${auth.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(config.api_base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (cause) {
    throw new NetworkError(cause);
  }
  const data = await answer.json().catch(() => null);
  if (!answer.ok) throw new ApiError(answer.status, data);
  return data;
}
