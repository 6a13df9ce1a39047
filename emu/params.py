"""Typed device parameters, declared by each actor class (gem5/SST style).

A device class lists ``PARAMS = {"service": Param("time", "10us", "mean
service time")}``; a parameter without a default is required. ``resolve``
turns raw config values into typed values (``time`` -> int ns, ``size`` ->
int bytes, ...) and raises ``ConfigError`` naming the key and what was
expected. ``emu info DEVICE`` prints the declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emu import units


class ConfigError(ValueError):
    """Bad input in a config: carries the file and dotted key it concerns."""

    def __init__(self, message: str, key: str = "", path: str = "", line: int | None = None):
        self.message, self.key, self.path, self.line = message, key, path, line
        super().__init__(self.render())

    def render(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


REQUIRED = object()

_CONVERT = {
    "time": lambda v: units.time_ns(v, default_unit="ns"),  # a bare integer counts ns
    "size": lambda v: units.size_bytes(v),
    "rate": lambda v: units.rate_bps(v),
    "distance": lambda v: units.distance_m(v),
    "freq": lambda v: units.freq_hz(v),
    "rpm": lambda v: units.rpm(v),
}


@dataclass(frozen=True)
class Param:
    """One declared parameter: its kind, default (``REQUIRED`` if none),
    description, and optional bounds (after conversion to the base unit)."""

    kind: str  # time|size|rate|distance|freq|rpm|int|float|bool|str|list|dict|choice
    default: Any = REQUIRED
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def convert(self, value: Any, key: str) -> Any:
        try:
            out = self._convert(value)
        except ValueError as exc:
            raise ConfigError(str(exc), key) from None
        if self.min is not None and out < self.min:
            raise ConfigError(f"{value!r} is below the minimum {self._show(self.min)}", key)
        if self.max is not None and out > self.max:
            raise ConfigError(f"{value!r} is above the maximum {self._show(self.max)}", key)
        return out

    def _show(self, bound):
        if self.kind == "time":
            return units.fmt_ns(bound)
        if self.kind == "size":
            return units.fmt_bytes(int(bound))
        return bound

    def _convert(self, value: Any) -> Any:
        if self.kind in _CONVERT:
            return _CONVERT[self.kind](value)
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {value!r}")
            return value
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"expected one of {', '.join(map(str, self.choices))}, got {value!r}")
            return value
        if self.kind == "list":
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {value!r}")
            return value
        if self.kind == "dict":
            if not isinstance(value, dict):
                raise ValueError(f"expected a table, got {value!r}")
            return value
        raise RuntimeError(f"unknown param kind {self.kind!r}: declaration invariant violated")


def resolve(declared: dict[str, Param], raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Typed values for every declared key; unknown or missing keys are errors."""
    out: dict[str, Any] = {}
    for key in sorted(raw):
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(f"unknown parameter (known: {known})", prefix + key)
    for key, param in declared.items():
        if key in raw:
            out[key] = param.convert(raw[key], prefix + key)
        elif param.required:
            raise ConfigError(f"required parameter missing ({param.kind}: {param.doc})", prefix + key)
        else:
            out[key] = param.convert(param.default, prefix + key) if param.default is not None else None
    return out


def describe(declared: dict[str, Param]) -> list[list[str]]:
    """Rows (name, kind, default, description) for ``emu info``."""
    rows = []
    for key, p in declared.items():
        default = "(required)" if p.required else repr(p.default)
        rows.append([key, p.kind, default, p.doc])
    return rows
