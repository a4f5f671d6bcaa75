"""sesender: a self-hosted bulk email service for AWS SES, built on trio."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sesender")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
