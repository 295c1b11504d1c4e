"""A refused token is answered by one new sign-in, never by a loop of them."""

from __future__ import annotations

import pytest

from flight_client import errors
from tests.flight_client.transport.servers import SigningIn


def test_an_expired_token_is_renewed_once(serve, transport):
    server = serve(SigningIn())
    t = transport(server.url, retries=3)
    t.authenticate("alice", "secret")
    assert t.action("health")["status"] == "ok"
    server.expire()
    assert t.action("health")["status"] == "ok"
    assert server.calls["sign_in"] == 2 and server.calls["do_action"] == 2


def test_a_token_refused_again_after_the_new_sign_in_is_the_error(serve, transport):
    server = serve(SigningIn())
    t = transport(server.url, retries=3)
    t.authenticate("alice", "secret")
    server.refuse_all = True
    server.expire()
    with pytest.raises(errors.AuthenticationFailed, match="token refused"):
        t.action("health")
    assert server.calls["sign_in"] == 2 and server.calls["do_action"] == 0


def test_without_a_sign_in_a_refusal_is_final(serve, transport):
    server = serve(SigningIn())
    with pytest.raises(errors.AuthenticationFailed, match="token refused"):
        transport(server.url, retries=3).action("health")
    assert server.calls["sign_in"] == 0
