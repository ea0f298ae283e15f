"""neurorad: brain imaging AI from PACS to verified, versioned, quantitative results.

See ``shared/ARCHITECTURE.md`` (kept in step with ``docs/architecture.md``) for the layers.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neurorad")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
