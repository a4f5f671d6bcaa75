from __future__ import annotations

from sesender.monitoring import scrub_event


def test_addresses_and_bodies_never_leave_the_process() -> None:
    event = {
        "message": "could not send to jane.doe+x@example.co.uk",
        "exception": {"values": [{"value": "MessageRejected: bob@example.com unverified"}]},
        "extra": {
            "content": "<p>secret body</p>",
            "subject": "Hi",
            "count": 3,
            "emails": ["a@b.com"],
            "nested": [{"to": "c@d.org"}],
        },
        "breadcrumbs": {"values": [{"message": "claimed e@f.io"}]},
    }
    scrubbed = scrub_event(event, {})
    text = repr(scrubbed)
    for secret in ("jane.doe", "bob@", "secret body", "a@b.com", "c@d.org", "e@f.io", "Hi"):
        assert secret not in text
    assert scrubbed["extra"]["count"] == 3
    assert "[email]" in scrubbed["message"]
