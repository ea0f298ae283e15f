"""neurorad: brain imaging AI from PACS to verified, versioned, quantitative results.

See ``shared/ARCHITECTURE.md`` (kept in step with ``docs/architecture.md``) for the layers.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neurorad")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]

# speed only, values unchanged: NumPy's huge-page advice off where the kernel would stall on it
# (neurorad.runtime); every process that runs the platform's code imports this package first
# and glibc's allocator keeping freed memory instead of unmapping every large array
from neurorad.runtime import configure_malloc as _configure_malloc  # noqa: E402
from neurorad.runtime import configure_numpy_hugepages as _configure_numpy_hugepages  # noqa: E402

_configure_numpy_hugepages()
_configure_malloc()
