"""The admin page's server side: static files and the page configuration, served by
`LocalApi` (`deepmem serve`) and by the `dashboard` Lambda function, never behind a token."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from deepmem.api.auth import AuthDecision, Denial
from deepmem.config import Config
from deepmem.dashboard import site
from deepmem.local.api_server import LocalApi
from deepmem.local.lambda_runtime import LocalLambdaContext, http_api_event

from tests.api_support import load_function

LOCAL = site.PageConfig(auth="local-token")
ROOT = Path(__file__).resolve().parents[2]


def deny_everyone(event: object) -> AuthDecision:
    return AuthDecision(denial=Denial.INVALID_TOKEN)


def test_the_page_is_index_html_at_the_root() -> None:
    page = site.answer("GET", "/", LOCAL)

    assert page is not None and page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'src="/dashboard/app.js"' in page.body


def test_every_script_the_page_names_is_served_from_this_origin() -> None:
    index = (site.STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', index)

    assert sources and all(source.startswith(site.ASSETS) for source in sources)
    for source in sources:
        name = source.removeprefix(site.ASSETS)
        if name in site.VENDORED and not (site.STATIC / name).is_file():
            continue  # vendored by `npm ci`; the refusal is checked below
        page = site.answer("GET", source, LOCAL)
        assert page is not None and page.status == 200, source


def test_the_modules_import_only_files_the_page_has() -> None:
    for script in site.STATIC.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert (site.STATIC / imported).is_file(), f"{script.name} imports {imported}"


def test_a_script_is_javascript_and_the_page_forbids_other_origins() -> None:
    page = site.answer("GET", "/dashboard/app.js", LOCAL)

    assert page is not None and page.status == 200
    assert page.headers["content-type"] == "text/javascript; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self';" in policy
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/../site.py",
        "/dashboard/%2e%2e/site.py",
        "/dashboard/.hidden",
        "/dashboard/vendor/../../site.py",
        "/dashboard/nothing.js",
        "/dashboard//etc/passwd",
    ],
)
def test_nothing_outside_the_static_folder_is_served(path: str) -> None:
    page = site.answer("GET", path, LOCAL)

    assert page is not None and page.status == 404
    assert "no such file" in json.loads(page.body)["detail"]


def test_a_missing_vendored_library_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<html></html>")
    monkeypatch.setattr(site, "STATIC", tmp_path)

    page = site.answer("GET", "/dashboard/vendor/htm-preact.umd.js", LOCAL)

    assert page is not None and page.status == 404
    assert "npm ci" in json.loads(page.body)["detail"]


def test_only_reads_are_answered() -> None:
    page = site.answer("POST", "/dashboard/config.json", LOCAL)

    assert page is not None and page.status == 405
    assert json.loads(page.body)["detail"] == "the admin page is read-only: use GET"


def test_api_paths_are_not_the_pages() -> None:
    assert site.answer("GET", "/v1/api/deep-memory/runs", LOCAL) is None
    assert site.answer("GET", "/openapi.json", LOCAL) is None
    assert site.answer("GET", "/dashboards", LOCAL) is None


def test_the_config_says_local_token_without_a_supabase_project() -> None:
    config = site.PageConfig.of(Config(SUPABASE_URL="https://ref.supabase.co"))
    page = site.answer("GET", site.CONFIG, config)

    assert page is not None and page.status == 200
    assert json.loads(page.body) == {
        "api_base": "/v1/api/deep-memory",
        "auth": "local-token",
        "supabase_url": None,
        "supabase_anon_key": None,
    }


def test_the_config_names_the_project_and_anon_key_and_the_policy_allows_them() -> None:
    config = site.PageConfig.of(
        Config(SUPABASE_URL="https://ref.supabase.co/", SUPABASE_ANON_KEY="anon-key")
    )
    page = site.answer("GET", site.CONFIG, config)

    assert page is not None
    body = json.loads(page.body)
    assert (body["auth"], body["supabase_url"], body["supabase_anon_key"]) == (
        "supabase",
        "https://ref.supabase.co",
        "anon-key",
    )
    policy = page.headers["content-security-policy"]
    assert "connect-src 'self' https://ref.supabase.co wss://ref.supabase.co;" in policy


def test_local_api_serves_the_page_before_the_authorizer() -> None:
    api = LocalApi(deny_everyone, page_config=LOCAL)

    status, headers, body = api.handle("GET", "/", {})
    config_status, _, config = api.handle("GET", "/dashboard/config.json?x=1", {})
    refused, _, _ = api.handle("GET", "/v1/api/deep-memory/runs", {})

    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert b"deepmem admin" in body
    assert config_status == 200 and json.loads(config)["auth"] == "local-token"
    assert refused == 401  # the API itself still needs a token


def test_local_api_reads_the_page_config_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deepmem.config import load_config

    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon-key")
    load_config.cache_clear()
    try:
        status, _, body = LocalApi(deny_everyone).handle("GET", site.CONFIG, {})
    finally:
        load_config.cache_clear()

    assert status == 200 and json.loads(body)["auth"] == "supabase"


def test_the_lambda_function_serves_the_page_and_its_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deepmem.config import load_config

    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon-key")
    load_config.cache_clear()
    dashboard = load_function("dashboard")
    context = LocalLambdaContext(function_name="dashboard")
    try:
        page = dashboard.handler(http_api_event("GET", "/", {}, b""), context)
        config = dashboard.handler(http_api_event("GET", site.CONFIG, {}, b""), context)
        other = dashboard.handler(
            http_api_event("GET", "/v1/api/deep-memory/runs", {}, b""), context
        )
    finally:
        load_config.cache_clear()

    assert page["statusCode"] == 200 and "deepmem admin" in page["body"]
    assert page["isBase64Encoded"] is False
    assert json.loads(config["body"])["supabase_anon_key"] == "anon-key"
    assert other["statusCode"] == 404


def test_the_page_url_carries_the_local_token_in_the_fragment() -> None:
    from deepmem.cli.serving import page_url

    assert page_url("127.0.0.1", 8000, "abc") == "http://127.0.0.1:8000/#token=abc"
    assert page_url("127.0.0.1", 8000, None) == "http://127.0.0.1:8000/"


def test_the_vendoring_script_and_the_server_agree_on_the_files() -> None:
    script = (ROOT / "scripts" / "vendor-dashboard.mjs").read_text()
    names = re.findall(r'"([\w.-]+\.js)": "', script)

    assert sorted(f"vendor/{name}" for name in names) == sorted(site.VENDORED)
    package = json.loads((ROOT / "package.json").read_text())
    assert package["scripts"]["postinstall"] == "node scripts/vendor-dashboard.mjs"
    for dependency in ("htm", "@supabase/supabase-js"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["dependencies"][dependency])  # pinned
    assert re.fullmatch(r"\d+\.\d+\.\d+", package["devDependencies"]["axe-core"])
