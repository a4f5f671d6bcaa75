"""The SigningCertURL and SubscribeURL rules (ref ses-sns.md §1.4 and §1.6).

A hostile certificate URL must be refused *before* anything is downloaded: downloading from an
attacker's URL is already a server-side request forgery, even if the signature check would fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.errors import SnsSignatureInvalid
from sesender.feedback import SnsVerifier, check_cert_url, check_subscribe_url, parse_envelope
from sesender.feedback.testing import MemoryCertificateFetcher, SnsMessageSigner

PEM = "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"

ACCEPTED_CERT_URLS = [
    f"https://sns.us-east-1.amazonaws.com/{PEM}",
    f"https://sns.us-east-2.amazonaws.com/{PEM}",
    f"https://sns.eu-central-1.amazonaws.com/{PEM}",
    f"https://sns.cn-north-1.amazonaws.com.cn/{PEM}",
    f"https://sns.us-gov-west-1.amazonaws.com/{PEM}",
    f"https://sns.us-east-1.amazonaws.com:443/{PEM}",
    f"https://SNS.US-EAST-1.AMAZONAWS.COM/{PEM}",  # host names compare in lower case
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a_b-C.pem",
]

HOSTILE_CERT_URLS = {
    # The cases of ref §1.4.
    "http scheme": f"http://sns.us-east-1.amazonaws.com/{PEM}",
    "sns host as a prefix": f"https://sns.us-east-1.amazonaws.com.evil.com/{PEM}",
    "sns URL in the query": "https://evil.com/x.pem?x=https://sns.us-east-1.amazonaws.com/a.pem",
    "sns host as userinfo": f"https://sns.us-east-1.amazonaws.com@evil.com/{PEM}",
    "S3 bucket": f"https://s3.amazonaws.com/bucket/{PEM}",
    "bucket subdomain": f"https://bucket.s3.amazonaws.com/{PEM}",
    "port 8443": f"https://sns.us-east-1.amazonaws.com:8443/{PEM}",
    "port 80": f"https://sns.us-east-1.amazonaws.com:80/{PEM}",
    "arbitrary pem path": "https://sns.us-east-1.amazonaws.com/evil.pem",
    "nested pem path": f"https://sns.us-east-1.amazonaws.com/x/{PEM}",
    "dot segments": f"https://sns.us-east-1.amazonaws.com/x/../{PEM}",
    "encoded path": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-%2e%2e.pem",
    "not a pem": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem.exe",
    # Further tricks.
    "upper-case http": f"HTTP://sns.us-east-1.amazonaws.com/{PEM}",
    "mixed-case https": f"HtTpS://sns.us-east-1.amazonaws.com/{PEM}",
    "no scheme": f"//sns.us-east-1.amazonaws.com/{PEM}",
    "ftp": f"ftp://sns.us-east-1.amazonaws.com/{PEM}",
    "file": f"file:///etc/{PEM}",
    "trailing dot": f"https://sns.us-east-1.amazonaws.com./{PEM}",
    "backslash userinfo": f"https://evil.com\\@sns.us-east-1.amazonaws.com/{PEM}",
    "backslash path": f"https://sns.us-east-1.amazonaws.com\\{PEM}",
    "fragment": f"https://sns.us-east-1.amazonaws.com/{PEM}#x",
    "empty fragment": f"https://sns.us-east-1.amazonaws.com/{PEM}#",
    "empty query": f"https://sns.us-east-1.amazonaws.com/{PEM}?",
    "query": f"https://sns.us-east-1.amazonaws.com/{PEM}?a=b",
    "IPv4 literal": f"https://52.94.0.1/{PEM}",
    "IPv6 literal": f"https://[::1]/{PEM}",
    "empty port": f"https://sns.us-east-1.amazonaws.com:/{PEM}",
    "zero-padded port": f"https://sns.us-east-1.amazonaws.com:0443/{PEM}",
    "non-numeric port": f"https://sns.us-east-1.amazonaws.com:https/{PEM}",
    "user and password": f"https://user:pass@sns.us-east-1.amazonaws.com/{PEM}",
    "empty userinfo": f"https://@sns.us-east-1.amazonaws.com/{PEM}",
    "IDNA look-alike": f"https://sns.us-east-1.amazonaws.com\u3002evil.com/{PEM}",
    "fullwidth dot": f"https://sns.us-east-1.amazonaws\uff0ecom/{PEM}",
    "cyrillic a": f"https://sns.us-east-1.\u0430mazonaws.com/{PEM}",
    "space": f"https://sns.us-east-1.amazonaws.com /{PEM}",
    "tab": f"https://sns.us-east-1.amazon\taws.com/{PEM}",
    "newline": f"https://sns.us-east-1.amazonaws.com/{PEM}\n",
    "nul": f"https://sns.us-east-1.amazonaws.com/{PEM}\x00.evil",
    "short region": f"https://sns.a.amazonaws.com/{PEM}",
    "no region": f"https://sns.amazonaws.com/{PEM}",
    "region with dots": f"https://sns.evil.com.us-east-1.amazonaws.com/{PEM}",
    "other service": f"https://sqs.us-east-1.amazonaws.com/{PEM}",
    "amazonaws.com.evil": f"https://sns.us-east-1.amazonaws.com.cn.evil.com/{PEM}",
    "empty": "",
    "very long": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-" + "a" * 5000,
}


@pytest.mark.parametrize("url", ACCEPTED_CERT_URLS)
def test_sns_certificate_urls_are_accepted(url: str) -> None:
    check_cert_url(url)


@pytest.mark.parametrize("url", HOSTILE_CERT_URLS.values(), ids=HOSTILE_CERT_URLS.keys())
def test_hostile_certificate_urls_are_refused(url: str) -> None:
    with pytest.raises(SnsSignatureInvalid):
        check_cert_url(url)


@pytest.mark.parametrize("url", HOSTILE_CERT_URLS.values(), ids=HOSTILE_CERT_URLS.keys())
async def test_hostile_certificate_url_is_refused_without_fetching(
    url: str, test_signed_body: Callable[[str], bytes], test_cert_pem: bytes
) -> None:
    document = json.loads(test_signed_body("bounce"))
    document["SigningCertURL"] = url
    envelope = parse_envelope(json.dumps(document).encode())
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    verifier = SnsVerifier(fetch_pem=fetcher, now=lambda: envelope.timestamp)

    with pytest.raises(SnsSignatureInvalid, match=r"\(cert_url\)"):
        await verifier.verify(envelope)
    assert fetcher.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-0.pem",
        "https://sns.cn-northwest-1.amazonaws.com.cn/SimpleNotificationService-0.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-0.pem",
        "https://sns.us-gov-east-1.amazonaws.com/SimpleNotificationService-0.pem",
    ],
)
async def test_china_and_govcloud_certificate_urls_verify(
    url: str, signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification(SigningCertURL=url))
    fetcher = MemoryCertificateFetcher().serve(url, test_cert_pem)
    await SnsVerifier(fetch_pem=fetcher, now=lambda: envelope.timestamp).verify(envelope)
    assert fetcher.calls == [url]


# --- The operator's pattern --------------------------------------------------------------------

LOOPBACK = re.compile(r"http://127\.0\.0\.1:[0-9]+/[a-z0-9-]+\.pem")


def test_pattern_replaces_the_host_rule() -> None:
    check_cert_url("http://127.0.0.1:8123/test-cert.pem", pattern=LOOPBACK)
    with pytest.raises(SnsSignatureInvalid, match="pattern"):
        check_cert_url(f"https://sns.us-east-1.amazonaws.com/{PEM}", pattern=LOOPBACK)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8123/test-cert.pem.evil",  # fullmatch, not match
        "xhttp://127.0.0.1:8123/test-cert.pem",  # fullmatch, not search
        "http://127.0.0.1:8123/test-cert.pem\n",
    ],
)
def test_pattern_must_match_the_whole_url(url: str) -> None:
    with pytest.raises(SnsSignatureInvalid):
        check_cert_url(url, pattern=LOOPBACK)


def test_pattern_never_allows_userinfo_or_backslashes() -> None:
    anything = re.compile(r".*")
    for url in (
        "http://user@127.0.0.1:8123/a.pem",
        "http://evil.com\\@127.0.0.1/a.pem",
        "http://127.0.0.1:8123/\u00e9.pem",
    ):
        with pytest.raises(SnsSignatureInvalid):
            check_cert_url(url, pattern=anything)


async def test_verifier_with_pattern_fetches_from_loopback(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    url = "http://127.0.0.1:8123/test-cert.pem"
    envelope = parse_envelope(signer.notification(SigningCertURL=url))
    fetcher = MemoryCertificateFetcher().serve(url, test_cert_pem)
    strict = SnsVerifier(fetch_pem=fetcher, now=lambda: envelope.timestamp)
    with pytest.raises(SnsSignatureInvalid, match=r"\(cert_url\)"):
        await strict.verify(envelope)
    assert fetcher.calls == []

    widened = SnsVerifier(
        fetch_pem=fetcher, now=lambda: envelope.timestamp, cert_url_pattern=LOOPBACK
    )
    await widened.verify(envelope)
    assert fetcher.calls == [url]


# --- SubscribeURL ------------------------------------------------------------------------------

TOPIC = "arn:aws:sns:us-west-2:123456789012:ses-events"
SUBSCRIBE = (
    f"https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc123"
)


@pytest.mark.parametrize(
    "url",
    [
        SUBSCRIBE,
        SUBSCRIBE.replace("us-west-2.amazonaws.com", "cn-north-1.amazonaws.com.cn"),
        SUBSCRIBE.replace("us-west-2", "us-gov-west-1", 1),
        SUBSCRIBE.replace(TOPIC, TOPIC.replace(":", "%3A")),  # percent-encoded ARN
        f"https://sns.us-west-2.amazonaws.com/?Token=abc123&TopicArn={TOPIC}"
        "&Action=ConfirmSubscription",
    ],
)
def test_sns_subscribe_urls_are_accepted(url: str) -> None:
    check_subscribe_url(url, topic_arn=TOPIC, token="abc123")


HOSTILE_SUBSCRIBE_URLS = {
    "http": SUBSCRIBE.replace("https", "http", 1),
    "foreign host": SUBSCRIBE.replace("sns.us-west-2.amazonaws.com", "evil.com"),
    "sns host as prefix": SUBSCRIBE.replace(".amazonaws.com", ".amazonaws.com.evil.com"),
    "userinfo": SUBSCRIBE.replace("https://", "https://sns.us-west-2.amazonaws.com@"),
    "port": SUBSCRIBE.replace(".com/", ".com:8443/"),
    "path": SUBSCRIBE.replace(".com/?", ".com/x?"),
    "fragment": SUBSCRIBE + "#x",
    "other action": SUBSCRIBE.replace("ConfirmSubscription", "Unsubscribe"),
    "two actions": SUBSCRIBE + "&Action=Unsubscribe",
    "no action": SUBSCRIBE.replace("Action=ConfirmSubscription&", ""),
    "other topic": SUBSCRIBE.replace("ses-events", "attacker"),
    "two topics": SUBSCRIBE + f"&TopicArn={TOPIC}",
    "no topic": SUBSCRIBE.replace(f"&TopicArn={TOPIC}", ""),
    "other token": SUBSCRIBE.replace("abc123", "zzz"),
    "empty token": SUBSCRIBE.replace("abc123", ""),
    "no query": "https://sns.us-west-2.amazonaws.com/",
    "malformed query": SUBSCRIBE + "&&",
    "backslash": SUBSCRIBE.replace(".com/", ".com\\"),
    "trailing dot": SUBSCRIBE.replace(".com/", ".com./"),
    "non-ascii": SUBSCRIBE.replace("sns.", "snß."),
}


@pytest.mark.parametrize("url", HOSTILE_SUBSCRIBE_URLS.values(), ids=HOSTILE_SUBSCRIBE_URLS.keys())
def test_hostile_subscribe_urls_are_refused(url: str) -> None:
    with pytest.raises(SnsSignatureInvalid):
        check_subscribe_url(url, topic_arn=TOPIC, token="abc123")


def test_subscribe_url_with_pattern_still_needs_the_confirm_query() -> None:
    loopback = re.compile(r"http://127\.0\.0\.1:[0-9]+/\?.*")
    url = f"http://127.0.0.1:9000/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t"
    check_subscribe_url(url, topic_arn=TOPIC, pattern=loopback)
    with pytest.raises(SnsSignatureInvalid):
        check_subscribe_url(url.replace("ConfirmSubscription", "Unsubscribe"), pattern=loopback)
    with pytest.raises(SnsSignatureInvalid):
        check_subscribe_url(SUBSCRIBE, pattern=loopback)


# --- Property: whatever passes really names an SNS host ----------------------------------------

URL_PIECES = st.sampled_from(
    [
        "https://",
        "http://",
        "sns.",
        "us-east-1",
        ".amazonaws.com",
        ".cn",
        ".evil.com",
        "@",
        ":443",
        ":8443",
        "/",
        "\\",
        "?",
        "#",
        ".",
        "%2e",
        "SimpleNotificationService-",
        "abc",
        ".pem",
        "\u3002",
    ]
)


@settings(max_examples=300, deadline=None)
@given(url=st.lists(URL_PIECES, max_size=12).map("".join) | st.text(max_size=200))
def test_any_accepted_url_names_an_sns_host(url: str) -> None:
    try:
        check_cert_url(url)
    except SnsSignatureInvalid:
        return
    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.hostname is not None
    assert parts.hostname.startswith("sns.")
    assert parts.hostname.endswith((".amazonaws.com", ".amazonaws.com.cn"))
    assert parts.path.startswith("/SimpleNotificationService-")
    assert parts.path.endswith(".pem")
    assert (parts.query, parts.fragment) == ("", "")
    assert (parts.username, parts.password) == (None, None)
