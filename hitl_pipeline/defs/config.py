"""Launchpad config classes derived from the frozen dataclasses of ``core``.

The settings of the loop live once, as frozen dataclasses next to the logic that uses
them (``RoutingPolicy``, ``TrainingParams``, ``GatePolicy``, ...). The ``dg.Config``
classes the Dagster launchpad shows are generated from them here, field by field, with
the same names and defaults, so a setting the benchmark replays is always a setting of
the pipeline's run config and the two cannot drift apart.

Dagster's config system takes primitives, lists and optionals: a ``tuple[str, ...]``
field becomes ``list[str]`` and a ``Literal`` of strings becomes ``str`` (the dataclass
validates the value when the config is turned back into it).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import dagster as dg
from pydantic import Field, create_model

T = TypeVar("T")


def _config_type(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item, *_rest) = typing.get_args(hint)
        return list[_config_type(item)]  # type: ignore[misc]
    if origin is typing.Literal:
        return str
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _config_type(args[0]) | None
    return hint


class SettingsConfig(dg.Config):
    """The base of every generated config class: its fields are those of a settings
    dataclass (added by ``config_class``, which no type checker can follow, so a checker
    reads them as attributes), and ``to_settings`` turns it back into that dataclass."""

    # set by config_class: the dataclass, and the fields that are the wiring's own
    settings_source: ClassVar[type]
    wiring_fields: ClassVar[tuple[str, ...]] = ()

    def to_settings(self, **overrides: Any) -> Any:
        """The dataclass filled from this config (lists back to tuples; the wiring's own
        fields are not passed), with ``overrides`` on top."""
        values = {k: v for k, v in self.model_dump().items() if k not in self.wiring_fields}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return self.settings_source(**{**values, **overrides})

    if typing.TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


def config_class(
    source: type,
    name: str,
    *,
    exclude: tuple[str, ...] = (),
    extra: Mapping[str, tuple[Any, Any]] | None = None,
    doc: str | None = None,
) -> type[SettingsConfig]:
    """A ``SettingsConfig`` subclass with one field per field of the dataclass ``source``.

    Args:
        source: A frozen dataclass of settings with defaults.
        name: The class name (shown in the launchpad's schema).
        exclude: Fields left out (set by the pipeline itself, not by a person).
        extra: More fields, ``name -> (type, default)``, that are the wiring's own.
        doc: The class docstring; by default the dataclass's.

    Returns:
        The config class. Its ``to_settings()`` returns ``source`` filled from the
        config (lists back to tuples; extra and excluded fields are not passed).
    """
    hints = typing.get_type_hints(source)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(source):
        if field.name in exclude:
            continue
        default = field.default
        if default is dataclasses.MISSING:
            raise ValueError(f"{source.__name__}.{field.name} has no default")
        kind = _config_type(hints[field.name])
        if isinstance(default, tuple):
            fields[field.name] = (kind, Field(default_factory=lambda d=default: list(d)))
        else:
            fields[field.name] = (kind, default)
    for key, (kind, default) in (extra or {}).items():
        fields[key] = (kind, default)
    model = create_model(  # type: ignore[call-overload]
        name,
        __base__=SettingsConfig,
        __doc__=doc or source.__doc__,
        __module__=__name__,
        **fields,
    )
    model.settings_source = source
    model.wiring_fields = tuple(extra or {})
    return model
