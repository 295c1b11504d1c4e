"""The stand-in itself refuses requests that break OMERO Plus's registration protocol."""

from __future__ import annotations

import http.cookiejar
import json
import ssl
import urllib.error
import urllib.request

import pytest

from tests.omero_plus.fixtures import omero_plus  # noqa: F401 - a fixture

BODY = json.dumps({"uri": "/network_data/none.tiledb", "name": "t", "targets": ["Image:1"]})


def post(plus, headers: dict[str, str], with_cookie: bool = True, body: str = BODY,
         session: str = "alice-session-key") -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(plus.ca_file))
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                         urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{plus.url}/omero/api/v0/token") as answer:
        csrf = json.loads(answer.read())["data"]
    if not with_cookie:
        jar.clear()
    headers = {"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": plus.url,
               "X-SecretToken": "t"} | headers
    request = urllib.request.Request(
        f"{plus.url}/omero/omero_plus/api/v0/table?bsession={session}", data=body.encode(),
        headers={k: v for k, v in headers.items() if v is not None}, method="POST")
    try:
        with opener.open(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.parametrize(("headers", "with_cookie", "message"), [
    ({}, False, "CSRF cookie not set"),
    ({"X-CSRFToken": "forged"}, True, "CSRF token missing or incorrect"),
    ({"X-CSRFToken": None}, True, "CSRF token missing or incorrect"),
    ({"Referer": None}, True, "Referer checking failed"),
])
def test_csrf_is_checked(omero_plus, headers, with_cookie, message):  # noqa: F811
    status, content = post(omero_plus, headers, with_cookie)
    assert status == 403 and message in content["message"]


def test_body_and_array_are_checked(omero_plus):  # noqa: F811
    status, content = post(omero_plus, {}, body=json.dumps({"uri": "/x", "name": "t"}))
    assert status == 400
    status, content = post(omero_plus, {"Content-Type": "text/plain"})
    assert status == 400 and "JSON" in content["message"]
    status, content = post(omero_plus, {})
    assert status == 404 and "No TileDB array found" in content["message"]
    assert not omero_plus.registrations
