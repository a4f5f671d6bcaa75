"""Fixtures for the SNS / SES feedback tests: the SNS fixture files and a test signer.

The fixture files live in ``tests/fixtures/sns/`` (``tests/fixtures/README.md`` says where each came
from); their paths come from :mod:`tests.fixtures`.

Fixtures are session-scoped (they are read-only) so hypothesis tests may use them too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sesender.feedback.testing import SnsMessageSigner
from tests.fixtures import GENUINE_SNS_DIR, SNS_DIR, TEST_SIGNING_CERT, TEST_SIGNING_KEY

_PHP_CERTIFICATE = "sns_us-east-2_SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"
GENUINE_CERTIFICATES = {
    # From tests/fixtures/README.md: which AWS certificate verifies which genuine message.
    "perl_aws_sns_verify_2015": "perl_aws_sns_verify_2015.pem",
    "php_validator_fixture_0_sigv1": _PHP_CERTIFICATE,
    "php_validator_fixture_1_sigv2": _PHP_CERTIFICATE,
    "php_validator_fixture_2_sigv1": _PHP_CERTIFICATE,
    "php_validator_fixture_3_sigv2": _PHP_CERTIFICATE,
}


@pytest.fixture(scope="session")
def genuine_body() -> Callable[[str], bytes]:
    """The body of a genuine AWS-signed message, by fixture name."""
    return lambda name: (GENUINE_SNS_DIR / f"{name}.json").read_bytes()


@pytest.fixture(scope="session")
def genuine_pem() -> Callable[[str], bytes]:
    """The AWS certificate that verifies a genuine message, by the message's fixture name."""
    return lambda name: (GENUINE_SNS_DIR / GENUINE_CERTIFICATES[name]).read_bytes()


@pytest.fixture(scope="session")
def test_signed_body() -> Callable[[str], bytes]:
    """The body of one of the seven fixtures signed with the test key, by name."""
    return lambda name: (SNS_DIR / f"{name}.json").read_bytes()


@pytest.fixture(scope="session")
def test_cert_pem() -> bytes:
    """The certificate of the test key (CN=sns.amazonaws.com, valid 2020-2040)."""
    return TEST_SIGNING_CERT.read_bytes()


@pytest.fixture(scope="session")
def signer() -> SnsMessageSigner:
    """Mints messages with the test key; they verify against ``test_cert_pem``."""
    key = serialization.load_pem_private_key(TEST_SIGNING_KEY.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return SnsMessageSigner(key)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit key that is not the test key, for certificates SNS would never use."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
