"""Checks of a `train` command's options, made before any data is read or any file written.

Each check names the option as the command spells it (`--learning-rate`), the rule and the
value given, and raises `OptionError`; the command shows it as a usage error (exit 2).
"""

import math
import numbers


class OptionError(ValueError):
    """An option value that cannot train, or options that exclude each other."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option}: {message}")


def flag(name: str) -> str:
    """The command's spelling of a config field: `learning_rate` -> `--learning-rate`."""
    return "--" + name.replace("_", "-")


def _number(config, name: str, integer: bool):
    value = getattr(config, name)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise OptionError(flag(name), f"expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise OptionError(flag(name), f"must be finite, got {value}")
    return value


def at_least(config, minimum: int, *names: str) -> None:
    """Integer options `names` of `config` must be at least `minimum`."""
    for name in names:
        value = _number(config, name, integer=True)
        if value < minimum:
            raise OptionError(flag(name), f"must be at least {minimum}, got {value}")


def at_most(config, maximum: int, *names: str) -> None:
    """Integer options `names` of `config` must be at most `maximum`."""
    for name in names:
        value = _number(config, name, integer=True)
        if value > maximum:
            raise OptionError(flag(name), f"must be at most {maximum}, got {value}")


def positive(config, *names: str) -> None:
    """Number options `names` must be finite and greater than 0."""
    for name in names:
        value = _number(config, name, integer=False)
        if not value > 0:
            raise OptionError(flag(name), f"must be greater than 0, got {value}")


def probability(config, *names: str, below_one: bool = False) -> None:
    """Number options `names` must lie in [0, 1] (in [0, 1) with `below_one`)."""
    for name in names:
        value = _number(config, name, integer=False)
        if not (0 <= value < 1 if below_one else 0 <= value <= 1):
            raise OptionError(flag(name), f"must be in [0, {'1)' if below_one else '1]'}, got {value}")


def one_of(config, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise OptionError(flag(name), f"must be one of {', '.join(choices)}, got {value!r}")


def excludes(config, first: str, second: str) -> None:
    """The boolean options `first` and `second` cannot both be on."""
    if getattr(config, first) and getattr(config, second):
        raise OptionError(flag(first), f"not allowed with argument {flag(second)}")
