"""Click parameter types shared by the commands."""

from __future__ import annotations

import math

import click


class Finite(click.ParamType):
    """A finite number >= 0: click's FloatRange lets ``nan`` and ``inf`` through, which
    then fail deep inside as ``internal error: ValueError`` (a cache of nan MiB)."""

    name = "number"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a finite number >= 0", param, ctx)
        return number
