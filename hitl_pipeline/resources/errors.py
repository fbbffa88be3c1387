"""Errors the adapters raise when an outside store cannot be used."""


class StoreUnavailable(RuntimeError):
    """An outside store cannot be used; the message names it and the setting behind it."""
