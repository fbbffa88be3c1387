"""Errors the adapters raise when an outside store cannot be used, and the check behind
the folder-backed ones."""

import tempfile
from pathlib import Path


class StoreUnavailable(RuntimeError):
    """An outside store cannot be used; the message names it and the setting behind it."""


def require_writable(folder: Path, *, what: str, setting: str) -> None:
    """Create ``folder`` if needed and write a probe file into it.

    Raises:
        StoreUnavailable: naming ``what`` the folder is and the ``setting`` behind it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise StoreUnavailable(
            f"{what} {folder} is not writable ({type(exc).__name__}: {exc}); it is set by "
            f"{setting}: point it at a writable folder"
        ) from exc
