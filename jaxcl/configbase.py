"""What every experiment's config shares: type checks by annotation, `require`, the readable
and stable config id, construction from a dict that names unknown fields, and stacking of the
traced hyperparameters over a grid (STYLE §3: frozen, validated, derived values as properties)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import typing
from typing import Any, ClassVar

import numpy as np

from jaxcl.errors import ConfigError


def require(ok: bool, field: str, value: Any, why: str) -> None:
    """Raises ConfigError naming the field and value unless `ok`."""
    if not ok:
        raise ConfigError(f"field {field!r} = {value!r}: {why}")


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> dict:
    """typing.get_type_hints of a config class: evaluated once per class, not per config (it
    re-evaluates every annotation's string, the larger part of building a big grid)."""
    return typing.get_type_hints(cls)


def check_types(cfg) -> None:
    """Every field's value against its annotation (int, float, str, bool, None), naming it."""
    hints = _type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        if value is None and type(None) in allowed:
            continue
        ok = False
        if float in allowed and isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"field {f.name!r} = {value!r}: must be a finite number")
        for t in allowed:
            if t is int and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            elif t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                ok = math.isfinite(value)
            elif t is str and isinstance(value, str):
                ok = True
            elif t is bool and isinstance(value, bool):
                ok = True
        if not ok:
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(
                f"field {f.name!r} = {value!r}: expected {names}, got {type(value).__name__}"
            )


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Mixin of an experiment's frozen config dataclass (subclasses declare every field).

    A subclass must have the fields `experiment` (its registry name), `seed`, `steps` and
    `log_every`, and define `n_steps`, `static()`, `hparams()`, `resolved()` and `id_prefix()`.
    """

    # Fields added after run directories were written: left out of the id's hash while at their
    # default, so existing run directories keep their config ids.
    ID_SKIP_IF_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @functools.cached_property
    def config_id(self) -> str:
        """Readable and unique: the experiment's prefix plus a hash of every field.

        Computed once per config (the config is frozen; `dataclasses.replace` makes a new one):
        the runner asks for it per config per chunk, and a 1,024-config run spent more time
        hashing ids than training."""
        fields = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in self.ID_SKIP_IF_DEFAULT and fields[f.name] == f.default:
                del fields[f.name]
        blob = json.dumps(fields, sort_keys=True, default=str)
        h = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{self.id_prefix()}_{h}"

    def id_prefix(self) -> str:  # pragma: no cover - every experiment overrides it
        return self.experiment

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BaseConfig":
        """Builds and validates a config; an unknown field is refused, naming the experiment."""
        known = cls.field_names()
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown field {key!r} (value {values[key]!r}) for experiment "
                    f"{cls.__dataclass_fields__['experiment'].default!r}; its fields: "
                    f"{', '.join(sorted(known))}"
                )
        return cls(**values)


def stack_hparams(configs: list) -> Any:
    """The configs' traced hyperparameters (`hparams()`, a NamedTuple) stacked over a leading
    config axis as numpy arrays: the one place a grid's hyperparameters are stacked.

    Fields named in the NamedTuple's `INT_FIELDS` become int32, the rest float32 (scalars or
    arrays, e.g. the geometry experiment's predicted Gram matrix).
    """
    hps = [c.hparams() for c in configs]
    cls = type(hps[0])
    ints = getattr(cls, "INT_FIELDS", ())
    return cls(
        *[
            np.asarray(
                [np.asarray(getattr(h, f)) for h in hps],
                dtype=np.int32 if f in ints else np.float32,
            )
            for f in cls._fields
        ]
    )
