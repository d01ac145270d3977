"""Our Standard Webhooks signatures verify with the published `standardwebhooks` package, for
each live secret during a rotation, and fail for a changed body, id or timestamp."""

from __future__ import annotations

import re
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ai_service.webhook_signing import headers, new_secret

BODY = b'{"type":"job.completed","data":{"id":"1"}}'


def test_a_new_secret_is_whsec_and_24_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert re.match(r"^whsec_[A-Za-z0-9+/]{32}$", first) and first != second


def test_a_signed_message_verifies_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    signed = headers([secret], "msg_1", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, signed) == {"type": "job.completed",
                                                    "data": {"id": "1"}}


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    signed = headers([new, old], "msg_1", int(time.time()), BODY)
    assert signed["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, signed)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret"])
def test_a_changed_message_or_another_secret_does_not_verify(tamper: str) -> None:
    secret = new_secret()
    now = int(time.time())
    signed = headers([secret], "msg_1", now, BODY)
    body = BODY
    if tamper == "body":
        body = BODY.replace(b"1", b"2")
    elif tamper == "id":
        signed["webhook-id"] = "msg_2"
    elif tamper == "timestamp":
        signed["webhook-timestamp"] = str(now - 1)
    else:
        secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, signed)
