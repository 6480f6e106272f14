"""loops-bridge: verified provider webhooks in, Loops contacts and events out."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    # pyproject.toml holds the version; the installed metadata (a wheel or `pip install -e .`)
    # is where it is read from, so there is no second copy to keep in step.
    __version__ = version("loops-bridge")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
