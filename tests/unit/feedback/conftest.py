"""Fixtures for the SNS / SES feedback tests: the shared fixture files and a test signer.

The fixture files live in ``shared/`` beside the repository (``<repo root>/../shared``), both on a
development machine and in CI, where the repository is cloned with ``shared/`` next to it.

Fixtures are session-scoped (they are read-only) so hypothesis tests may use them too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sesender.feedback.testing import SnsMessageSigner

REPO_ROOT = Path(__file__).resolve().parents[3]

_PHP_CERTIFICATE = "sns_us-east-2_SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"
GENUINE_CERTIFICATES = {
    # From genuine/README.md: which AWS certificate verifies which genuine message.
    "perl_aws_sns_verify_2015": "perl_aws_sns_verify_2015.pem",
    "php_validator_fixture_0_sigv1": _PHP_CERTIFICATE,
    "php_validator_fixture_1_sigv2": _PHP_CERTIFICATE,
    "php_validator_fixture_2_sigv1": _PHP_CERTIFICATE,
    "php_validator_fixture_3_sigv2": _PHP_CERTIFICATE,
}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo root>/../shared``: specification, reference and fixture files."""
    path = (REPO_ROOT / ".." / "shared").resolve()
    if not (path / "fixtures" / "sns").is_dir():
        pytest.fail(f"shared fixtures not found at {path}: clone shared/ beside the repository")
    return path


@pytest.fixture(scope="session")
def sns_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "sns"


@pytest.fixture(scope="session")
def genuine_body(sns_dir: Path) -> Callable[[str], bytes]:
    """The body of a genuine AWS-signed message, by fixture name."""
    return lambda name: (sns_dir / "genuine" / f"{name}.json").read_bytes()


@pytest.fixture(scope="session")
def genuine_pem(sns_dir: Path) -> Callable[[str], bytes]:
    """The AWS certificate that verifies a genuine message, by the message's fixture name."""
    return lambda name: (sns_dir / "genuine" / GENUINE_CERTIFICATES[name]).read_bytes()


@pytest.fixture(scope="session")
def test_signed_body(sns_dir: Path) -> Callable[[str], bytes]:
    """The body of one of the seven fixtures signed with the shared test key, by name."""
    return lambda name: (sns_dir / f"{name}.json").read_bytes()


@pytest.fixture(scope="session")
def test_cert_pem(sns_dir: Path) -> bytes:
    """The certificate of the shared test key (CN=sns.amazonaws.com, valid 2020-2040)."""
    return (sns_dir / "test-signing" / "test-sns-cert.pem").read_bytes()


@pytest.fixture(scope="session")
def signer(sns_dir: Path) -> SnsMessageSigner:
    """Mints messages with the shared test key; they verify against ``test_cert_pem``."""
    key = serialization.load_pem_private_key(
        (sns_dir / "test-signing" / "test-sns-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return SnsMessageSigner(key)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit key that is not the test key, for certificates SNS would never use."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
