"""Sign-in, sessions, roles and CSRF, in a real browser and over plain HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from playwright.sync_api import Page, expect

from enclave.access.keys import revoke_key
from tests.api.conftest import Service
from tests.web.browser import assert_accessible, screenshot
from tests.web.conftest import sign_in


def test_sign_in_page_is_accessible_and_refuses_a_wrong_key(page: Page, service: Service) -> None:
    page.goto("/")
    assert_accessible(page)
    screenshot(page, "signin")
    page.get_by_label("API key").fill("enc_0000000000000000_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That key is unknown or has been revoked.")


def test_a_researcher_signs_in_and_out_with_the_keyboard(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    expect(page).to_have_url(re.compile(r"/researcher$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "enclave_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP on loopback; Secure over TLS (test_cookie_is_secure_over_tls)
    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/\?next=|/$"))
    page.goto("/researcher")
    expect(page.get_by_label("API key")).to_be_visible()  # signed out: the page asks for a key again


def test_a_researcher_cannot_open_a_reviewer_page(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    response = page.goto("/reviewer")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not for your role")
    body = page.content()
    for leaked in ("proposed", "approve", service.keys["reviewer"]):
        assert leaked not in body
    assert_accessible(page)


def test_a_page_needs_a_session_and_comes_back_after_sign_in(page: Page, service: Service) -> None:
    page.goto("/auditor")
    expect(page).to_have_url(re.compile(r"/\?next=/auditor$"))
    page.get_by_label("API key").fill(service.keys["auditor"])
    page.get_by_label("API key").press("Enter")
    expect(page).to_have_url(re.compile(r"/auditor$"))


@contextmanager
def _signed_in_client(service: Service, who: str) -> Iterator[tuple[httpx.Client, str]]:
    """A plain HTTP client signed in through the form, and its session's CSRF token."""
    with httpx.Client(base_url=service.base_url, follow_redirects=False) as client:
        form = client.get("/")
        token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert token is not None
        signed = client.post("/signin", data={"key": service.keys[who], "token": token.group(1)})
        assert signed.status_code == 303, signed.text
        home = client.get(signed.headers["location"])
        csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
        assert csrf is not None
        yield client, csrf.group(1)


def test_a_form_posted_without_its_csrf_token_is_refused(service: Service) -> None:
    with _signed_in_client(service, "alice") as (client, csrf):
        refused = client.post("/signout", data={})
        assert refused.status_code == 403
        assert "Form refused" in refused.text
        assert client.get("/researcher").status_code == 200  # still signed in: the forged post did nothing
        done = client.post("/signout", data={"csrf": csrf})
        assert done.status_code == 303
        assert client.get("/researcher").status_code == 303  # to the sign-in page


def test_sign_in_without_the_forms_token_is_refused(service: Service) -> None:
    with httpx.Client(base_url=service.base_url, follow_redirects=False) as client:
        response = client.post("/signin", data={"key": service.keys["alice"]})
        assert response.status_code == 403
        assert "enclave_session" not in response.headers.get("set-cookie", "")


def test_pages_send_strict_headers(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


def test_cookie_is_secure_over_tls(service: Service) -> None:
    """Behind a TLS proxy on loopback (uvicorn trusts its X-Forwarded-Proto), the session cookie is Secure."""
    with httpx.Client(base_url=service.base_url, follow_redirects=False,
                      headers={"X-Forwarded-Proto": "https"}) as client:
        token = re.search(r'name="token" value="([^"]+)"', client.get("/").text)
        assert token is not None
        client.cookies.set("enclave_signin", client.cookies.get("enclave_signin") or "")
        signed = client.post("/signin", data={"key": service.keys["alice"], "token": token.group(1)})
    assert signed.status_code == 303
    cookie = next(v for k, v in signed.headers.multi_items() if k == "set-cookie" and "enclave_session" in v)
    for attribute in ("Secure", "HttpOnly", "SameSite=strict"):
        assert attribute in cookie


def test_a_revoked_key_ends_its_session(service: Service) -> None:
    key = service.issue("carol", {"researcher"})
    service.keys["carol"] = key
    with _signed_in_client(service, "carol") as (client, _):
        assert client.get("/researcher").status_code == 200
        with service.enclave.audit.transaction() as tx:
            revoke_key(tx, "steward", key.split("_")[1])
        assert client.get("/researcher").status_code == 303
