"""The admin page's scenarios (issue #12), one test each, on one shared server per module.

Each test starts and ends with no unfinished run (`Stack.reset`); completed runs stay, as
history rows. Screenshots go to tests/browser/artifacts/ and every state screenshotted is
checked with axe-core (no serious or critical violation)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from deepmem.domain.models import SettingsUpdate
from deepmem.domain.status import Phase, RunStatus
from playwright.sync_api import Locator, Page, Request, Route, expect

from tests.browser.conftest import CHUNKS, Stack, non_admin_token, snap

DESTRUCTIVE = "rgb(180, 35, 24)"  # --danger in style.css


@pytest.fixture(autouse=True)
def clean(stack: Stack) -> Iterator[None]:
    stack.reset()
    yield
    stack.reset()


def open_page(page: Page, stack: Stack) -> None:
    page.goto(stack.page_url())
    expect(page.get_by_role("heading", name="Training workflow")).to_be_visible()


def generate(page: Page) -> str:
    page.get_by_role("button", name="Generate", exact=True).click()
    focus = page.locator(".focus-run")
    expect(focus).to_be_visible()
    run_id = focus.get_attribute("data-run-id")
    assert run_id
    return run_id


def row(page: Page, run_id: str) -> Locator:
    return page.locator(f"#run-{run_id}")


def badge_of(page: Page, run_id: str) -> Locator:
    return row(page, run_id).locator(".badge")


def test_a_generation_failure_is_shown_and_proceeded_to_generated(stack: Stack, page: Page) -> None:
    stack.arm(Phase.GENERATING, after_chunks=4)
    open_page(page, stack)
    run_id = generate(page)

    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generating_failed")
    run = stack.run(run_id)
    assert 0 < run.processed_chunks < CHUNKS
    expect(row(page, run_id).locator("td.progress")).to_have_text(
        f"{run.processed_chunks}/{CHUNKS}"
    )
    colour = badge_of(page, run_id).evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == DESTRUCTIVE
    expect(badge_of(page, run_id)).to_contain_text("generating failed")  # words, not colour only
    snap(page, "generating-failed")

    toggle = row(page, run_id).locator("button.row-toggle")
    toggle.press("Enter")  # the keyboard opens it
    expect(toggle).to_have_attribute("aria-expanded", "true")
    detail = page.locator(f"#detail-{run_id}")
    expect(detail.locator(".error-message")).to_contain_text("injected fault")
    expect(detail.get_by_role("button", name="Delete")).to_be_visible()
    snap(page, "generating-failed-expanded")

    stack.fault.disarm()
    stack.pace.seconds_per_chunk = 0.2
    detail.get_by_role("button", name="Proceed").click()

    expect(detail).to_have_count(0)
    focus = page.locator(".focus-run")
    expect(focus).to_have_attribute("data-run-id", run_id)
    expect(focus).to_have_attribute("data-status", "generating")
    expect(focus.locator("progress")).to_be_visible()
    expect(focus).to_have_attribute("data-status", "generated")
    expect(focus.locator(".processed")).to_have_text(f"{CHUNKS}/{CHUNKS} chunks")
    assert stack.run(run_id).attempt == 2


def test_a_training_failure_is_shown_and_proceeded_to_completed(stack: Stack, page: Page) -> None:
    open_page(page, stack)
    run_id = generate(page)
    focus = page.locator(".focus-run")
    expect(focus).to_have_attribute("data-status", "generated")

    stack.arm(Phase.TRAINING)
    focus.get_by_role("button", name="Train").click()
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "training_failed")
    expect(row(page, run_id).locator("td.progress")).to_have_text(f"{CHUNKS}/{CHUNKS}")
    colour = badge_of(page, run_id).evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == DESTRUCTIVE

    row(page, run_id).locator("button.row-toggle").click()
    detail = page.locator(f"#detail-{run_id}")
    expect(detail.locator(".error-message")).to_contain_text("the training job crashed")
    snap(page, "training-failed-expanded")

    stack.fault.disarm()
    detail.get_by_role("button", name="Proceed").click()
    expect(detail).to_have_count(0)
    expect(focus).to_have_attribute("data-status", "completed")
    expect(focus.locator(".trainer")).to_have_text("feedback adapter")
    expect(focus.locator("table.recall td.num").first).to_have_text(re.compile(r"\d.*% → \d.*%"))
    snap(page, "training-proceeded-completed")


def test_delete_asks_first_and_cancel_keeps_the_run(stack: Stack, page: Page) -> None:
    stack.arm(Phase.GENERATING, after_chunks=4)
    open_page(page, stack)
    run_id = generate(page)
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generating_failed")
    pairs = stack.run(run_id).pair_count
    assert pairs > 0
    generate_button = page.get_by_role("button", name="Generate", exact=True)
    expect(generate_button).to_be_disabled()

    row(page, run_id).locator("button.row-toggle").click()
    page.locator(f"#detail-{run_id}").get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(run_id)
    expect(dialog).to_contain_text(f"{pairs} pairs")
    snap(page, "delete-confirmation")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(row(page, run_id)).to_be_visible()
    assert stack.run(run_id).status is RunStatus.GENERATING_FAILED

    page.locator(f"#detail-{run_id}").get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete run").click()
    expect(row(page, run_id)).to_have_count(0)
    expect(generate_button).to_be_enabled()
    assert stack.service.store.find_blocking_run() is None


def test_generate_is_disabled_with_a_message_for_each_blocking_status(
    stack: Stack, page: Page
) -> None:
    message = page.locator(".blocking-message")
    generate_button = page.get_by_role("button", name="Generate", exact=True)
    stack.pace.generation.clear()
    stack.pace.training.clear()
    open_page(page, stack)
    run_id = generate(page)

    expect(message).to_contain_text("a run is generating")
    expect(generate_button).to_be_disabled()
    snap(page, "blocked-generating")

    stack.pace.generation.set()
    expect(message).to_contain_text("a run is awaiting review")
    expect(generate_button).to_be_disabled()

    page.locator(".focus-run").get_by_role("button", name="Train").click()
    expect(message).to_contain_text("a run is training")
    expect(generate_button).to_be_disabled()
    expect(row(page, run_id).locator("td.progress")).to_have_text("In progress")
    snap(page, "blocked-training")

    stack.arm(Phase.TRAINING)
    stack.pace.training.set()
    expect(message).to_contain_text("a failed run must be resolved first")
    expect(generate_button).to_be_disabled()

    message.get_by_role("link").click()  # the link leads to that run's row, opened
    toggle = row(page, run_id).locator("button.row-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(toggle).to_be_focused()


def ensure_history(stack: Stack) -> None:
    """At least one completed run, so the table has rows besides the one under test."""
    if any(run.status is RunStatus.COMPLETED for run in stack.service.list_runs(limit=50)):
        return
    run_id = str(stack.service.start_generation(None).run.id)
    stack.wait_for(run_id, RunStatus.GENERATED)
    stack.service.start_training(stack.run(run_id).id)
    stack.wait_for(run_id, RunStatus.COMPLETED)


def test_refresh_updates_only_its_row_and_does_not_expand_it(stack: Stack, page: Page) -> None:
    ensure_history(stack)
    stack.pace.generation.clear()
    open_page(page, stack)
    run_id = generate(page)
    progress = row(page, run_id).locator("td.progress")
    expect(progress).to_have_text(f"0/{CHUNKS}")
    others = page.locator(f"tr.run:not(#run-{run_id})")
    before = others.all_inner_texts()
    assert before, "the table has other rows"

    frozen: dict[str, object] = {}

    def stale_list(route: Route) -> None:  # the table's own refresh sees nothing new
        if "body" not in frozen:
            frozen["body"] = route.fetch().text()
        route.fulfill(status=200, content_type="application/json", body=str(frozen["body"]))

    page.route(re.compile(r".*/runs\?.*"), stale_list)
    page.wait_for_timeout(2500)  # at least one poll answered by the frozen list
    stack.pace.seconds_per_chunk = 0.3
    stack.pace.generation.set()
    deadline = time.monotonic() + 30
    while stack.run(run_id).processed_chunks == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    expect(progress).to_have_text(f"0/{CHUNKS}")

    held: list[Route] = []  # the row's own GET, held until the spinner is seen

    def hold(route: Route) -> None:  # a bound method: Playwright's wrapper refuses it
        held.append(route)

    page.route(re.compile(rf".*/runs/{run_id}$"), hold)
    row(page, run_id).locator("button.refresh").click()
    expect(row(page, run_id).locator("button.refresh .spinning")).to_be_visible()
    assert len(held) == 1
    held[0].continue_()

    expect(row(page, run_id).locator(".spinning")).to_have_count(0)
    expect(progress).not_to_have_text(f"0/{CHUNKS}")
    expect(progress).to_have_text(re.compile(rf"^(\d+/{CHUNKS}|—)$"))
    assert others.all_inner_texts() == before
    expect(row(page, run_id).locator("button.row-toggle")).to_have_count(
        1 if stack.run(run_id).status is RunStatus.GENERATING else 0
    )
    expect(page.locator(f"#detail-{run_id}")).to_have_count(0)
    expect(page.locator("tr.run.expanded")).to_have_count(0)
    page.unroute(re.compile(r".*/runs\?.*"))


def test_an_active_run_expands_to_its_refresh_and_cancel(stack: Stack, page: Page) -> None:
    stack.pace.generation.clear()
    open_page(page, stack)
    run_id = generate(page)
    toggle = row(page, run_id).locator("button.row-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    detail = page.locator(f"#detail-{run_id}")
    expect(detail.get_by_role("button", name=re.compile("Refresh run"))).to_be_visible()
    snap(page, "generating-expanded")

    detail.get_by_role("button", name="Cancel run").click()
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generating_failed")
    expect(page.locator(f"#detail-{run_id} .error-message")).to_have_text("cancelled")
    assert stack.run(run_id).error_message == "cancelled"


def test_a_generated_row_shows_its_pairs_and_trains_and_a_completed_row_selects(
    stack: Stack, page: Page
) -> None:
    open_page(page, stack)
    run_id = generate(page)
    expect(page.locator(".focus-run")).to_have_attribute("data-status", "generated")
    page.reload()  # a fresh page: nothing in focus until the row is chosen
    expect(page.locator(".focus-run")).to_have_count(0)

    row(page, run_id).locator("td").nth(2).click()  # anywhere on the row
    focus = page.locator(".focus-run")
    expect(focus).to_have_attribute("data-run-id", run_id)
    expect(focus.locator(".pairs-table tbody tr")).to_have_count(10)
    expect(focus.locator(".pairs-table .question").first).not_to_be_empty()
    expect(page.locator(f"#detail-{run_id}")).to_have_count(0)
    focus.get_by_role("button", name="Next pairs").click()
    expect(focus).to_contain_text("pairs 11\u2013")  # an en dash, as the page writes ranges
    snap(page, "generated-review")

    focus.get_by_role("button", name="Train").click()
    expect(focus).to_have_attribute("data-status", "completed")
    expect(focus.locator("table.recall")).to_be_visible()
    expect(focus.locator(".trainer")).to_have_text("feedback adapter")

    page.reload()
    select = row(page, run_id).locator("button.row-select")
    select.focus()
    page.keyboard.press("Enter")
    expect(select).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".focus-run table.recall")).to_be_visible()
    expect(page.locator(f"#detail-{run_id}")).to_have_count(0)
    expect(row(page, run_id).locator("[aria-expanded]")).to_have_count(0)
    snap(page, "completed-selected")


def test_progress_advances_live_without_a_reload(stack: Stack, page: Page) -> None:
    stack.pace.seconds_per_chunk = 1.0  # 6 batches of 2 chunks: ~6 s, three polls or more
    open_page(page, stack)
    page.evaluate("window.notReloaded = true")
    run_id = generate(page)
    progress = row(page, run_id).locator("td.progress")
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while stack.run(run_id).status is RunStatus.GENERATING:
        assert time.monotonic() < deadline
        text = progress.inner_text() if progress.count() else ""
        if re.fullmatch(rf"\d+/{CHUNKS}", text) and (
            not seen or int(text.split("/")[0]) != seen[-1]
        ):
            seen.append(int(text.split("/")[0]))
        time.sleep(0.1)
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generated")
    assert len(seen) >= 2 and seen == sorted(seen), seen
    assert page.evaluate("window.notReloaded") is True


def test_settings_are_edited_and_a_refusal_is_shown_as_its_detail(stack: Stack, page: Page) -> None:
    open_page(page, stack)
    card = page.locator(".settings-card")
    expect(card.locator(".local-dataset")).to_contain_text("hub://")
    expect(card.locator(".effective-trainer")).to_have_text("feedback adapter")
    field = card.get_by_label("Chunks per batch")
    field.fill("3")
    card.get_by_role("button", name="Save settings").click()
    expect(card.get_by_role("status")).to_have_text("Saved.")
    assert stack.service.get_settings_view().settings.batch_size == 3

    card.get_by_label("LLM model").fill("not a model name")
    card.get_by_role("button", name="Save settings").click()
    expect(page.locator(".banner-message")).to_contain_text("llm_model: String should match")
    card.get_by_label("LLM model").fill("gpt-4o-mini")

    stack.pace.generation.clear()  # a run starts elsewhere (the CLI) while the form is open
    stack.service.start_generation(None)
    field.fill("2")
    card.get_by_role("button", name="Save settings").click()
    expect(page.locator(".banner-message")).to_contain_text("generating")
    expect(page.locator(".banner").get_by_role("link")).to_have_text(re.compile("Show run"))
    expect(field).to_be_disabled()  # and the page now knows why
    snap(page, "settings-locked")
    stack.reset()
    stack.service.update_settings(SettingsUpdate(batch_size=2))


def test_a_network_failure_offers_a_retry(stack: Stack, page: Page) -> None:
    open_page(page, stack)
    page.route(re.compile(r".*/v1/api/deep-memory/.*"), lambda route: route.abort())
    page.get_by_role("button", name="Generate", exact=True).click()
    banner = page.locator(".banner")
    expect(banner).to_contain_text("cannot reach the API")
    snap(page, "network-failure")
    page.unroute(re.compile(r".*/v1/api/deep-memory/.*"))
    banner.get_by_role("button", name="Retry").click()
    expect(page.locator(".banner")).to_have_count(0)
    expect(page.get_by_role("heading", name="Training history")).to_be_visible()


def test_an_invalid_token_asks_to_sign_in_and_a_non_admin_sees_the_403(
    stack: Stack, page: Page
) -> None:
    page.goto(stack.page_url("not-a-token"))
    problem = page.locator(".auth-problem")
    expect(problem).to_contain_text("a valid access token is required")
    expect(page).to_have_url(f"{stack.url}/")  # the token left the address bar
    snap(page, "sign-in-401")
    page.get_by_label("Admin token").fill(stack.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Training history")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    page.goto(stack.page_url(non_admin_token(stack)))
    expect(problem).to_contain_text("only admins may use this API")
    expect(problem).to_contain_text("sign in with an admin account")
    snap(page, "sign-in-403")


#: supabase-js as far as the page uses it (Auth, Realtime), for a project that cannot run here:
#: Supabase's servers are not installable, so the cloud sign-in and the Realtime path are the
#: page's own code against this stand-in, and the tokens it hands out are the local server's.
FAKE_SUPABASE = """
window.fakeSupabase = {calls: [], listeners: [], changes: []};
window.supabase = {createClient(url, key) {
  const fake = window.fakeSupabase;
  fake.calls.push(["createClient", url, key]);
  let session = null;
  const tell = (event) => fake.listeners.forEach((listener) => listener(event, session));
  return {
    auth: {
      async getSession() { return {data: {session}}; },
      onAuthStateChange(listener) { fake.listeners.push(listener); return {data: {}}; },
      async signInWithPassword({email, password}) {
        fake.calls.push(["signInWithPassword", email]);
        if (password !== "right") return {data: {}, error: {message: "Invalid login credentials"}};
        session = {access_token: TOKEN};
        tell("SIGNED_IN");
        return {data: {session}, error: null};
      },
      async signOut() { session = null; tell("SIGNED_OUT"); },
    },
    realtime: {setAuth(token) { fake.calls.push(["setAuth", token]); }},
    channel(name) {
      const channel = {
        on(kind, filter, listener) { fake.changes.push({kind, filter, listener}); return channel; },
        subscribe(listener) { listener("SUBSCRIBED"); return channel; },
      };
      return channel;
    },
    removeChannel() {},
  };
}};
window.fakeSupabase.emit = () => window.fakeSupabase.changes.forEach((c) => c.listener({}));
"""


def test_supabase_sign_in_and_realtime_updates_without_polling(stack: Stack, page: Page) -> None:
    config = {
        "api_base": "/v1/api/deep-memory",
        "auth": "supabase",
        "supabase_url": "https://ref.supabase.co",
        "supabase_anon_key": "anon-key",
    }
    page.route(re.compile(r".*/dashboard/config\.json$"), lambda r: r.fulfill(json=config))
    script = FAKE_SUPABASE.replace("TOKEN", f'"{stack.token}"')
    page.route(
        re.compile(r".*/dashboard/vendor/supabase\.js$"),
        lambda r: r.fulfill(body=script, content_type="text/javascript"),
    )
    page.goto(f"{stack.url}/")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid login credentials")
    page.get_by_label("Password").fill("right")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Training history")).to_be_visible()
    calls = page.evaluate("window.fakeSupabase.calls")
    assert calls[0] == ["createClient", "https://ref.supabase.co", "anon-key"]
    assert ["setAuth", stack.token] in calls
    changes = page.evaluate("window.fakeSupabase.changes.map((c) => [c.kind, c.filter])")
    assert changes == [
        ["postgres_changes", {"event": "*", "schema": "public", "table": "training_runs"}]
    ]
    expect(page.locator(".live-status")).to_have_text("Live: Supabase Realtime.")

    stack.pace.generation.clear()
    run_id = generate(page)
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generating")
    listed: list[str] = []

    def note_list_request(request: Request) -> None:
        if "/runs?" in request.url:
            listed.append(request.url)

    page.on("request", note_list_request)
    stack.pace.generation.set()
    stack.wait_for(run_id, RunStatus.GENERATED)
    page.wait_for_timeout(2500)  # longer than a poll: none comes, Realtime is the live path
    assert listed == []
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generating")

    page.evaluate("window.fakeSupabase.emit()")  # training_runs changed
    expect(badge_of(page, run_id)).to_have_attribute("data-status", "generated")
    expect(page.locator(".blocking-message")).to_contain_text("a run is awaiting review")
    snap(page, "supabase-realtime")


def test_a_completed_run_the_guard_did_not_apply_says_so_with_both_numbers(
    stack: Stack, page: Page
) -> None:
    open_page(page, stack)
    run_id = generate(page)
    focus = page.locator(".focus-run")
    expect(focus).to_have_attribute("data-status", "generated")
    focus.get_by_role("button", name="Train").click()
    expect(focus).to_have_attribute("data-status", "completed")

    # 12 chunks hold out too few questions for the guard to tell: the adapter is not applied.
    guard = stack.run(run_id).metrics["guard"]
    assert guard["applied"] is False
    table = focus.locator("table.recall")
    for metric in ("recall@1", "recall@5", "recall@10", "ndcg@10"):
        cell = table.locator(f'tr[data-metric="{metric}"] td.num')
        before, after = guard["before"][metric] * 100, guard["after"][metric] * 100
        expect(cell).to_have_text(f"{before:.1f}% → {after:.1f}%")
    applied = focus.locator(".applied")
    expect(applied).to_have_attribute("data-applied", "false")
    expect(applied).to_contain_text("not applied")
    expect(applied).to_contain_text("too few")
    flag = row(page, run_id).locator(".applied-flag")
    expect(flag).to_have_text("not applied")
    snap(page, "completed-not-applied")
