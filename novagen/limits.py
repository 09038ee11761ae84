"""Bounds on every number a user can give, in one place, so that nothing typed can hang a command or ask
for memory the machine does not have: each check raises InputError naming the value and the range."""

from __future__ import annotations

import math
import numbers
import os
import re
from fractions import Fraction
from typing import Any

from novagen.errors import InputError

MAX_TEXT = 100
"""Longest number or spec, in characters, novagen parses."""
MAX_DIGITS = 40
"""Most decimal digits in the numerator or denominator of an exact rational (a point, a matrix entry)."""
MAX_EXPONENT = 40
"""Largest |exponent| of a number written as 1e-5."""
MAX_POINT = 10**6
"""Largest |point|: beyond it every metric overflows float64."""
MAX_SNAP = 10**6
"""Largest denominator `--snap` rounds points to."""
MAX_SEED = 2**63 - 1
MAX_DIM = 2**31 - 1
"""Largest layer dimension (before the memory check)."""


def short(value: Any, limit: int = 40) -> str:
    """`value` as text for a message, cut in the middle when long."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-8:]} ({len(text)} characters)"


def whole(name: str, value: Any, lo: int, hi: int) -> int:
    """A whole number from lo to hi (bools, floats with a fraction, text and numbers out of range refused)."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    exact_float = isinstance(value, float) and math.isfinite(value) and value == int(value)
    if not (integral or exact_float) or not lo <= int(value) <= hi:
        raise InputError(f"{name} {short(value)} must be a whole number from {lo} to {hi}")
    return int(value)


def real(name: str, value: Any, lo: float, hi: float, open_low: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with `open_low`)."""
    try:
        v = float(value)
        ok = not isinstance(value, bool) and math.isfinite(v) and (v > lo if open_low else v >= lo) and v <= hi
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        low = "above" if open_low else "from"
        raise InputError(f"{name} {short(value)} must be a number {low} {lo:g} to {hi:g}")
    return v


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: a whole number from 0 to 2^63 - 1."""
    return whole(name, value, 0, MAX_SEED)


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def require_memory(nbytes: float, what: str) -> None:
    """InputError when `what` would need more than 80 % of the memory available, with both figures."""
    have = available_memory()
    if nbytes > 0.8 * have:
        raise InputError(f"{what} needs about {nbytes / 2**30:,.1f} GiB, more than this machine has free "
                         f"({have / 2**30:,.1f} GiB): choose a smaller layer")


_NUMBER = re.compile(r"^[+-]?(\d+/\d+|(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)$")


def rational(value: Any, name: str, error: type[InputError] = InputError, noun: str = "a number",
             also: str = "") -> Fraction:
    """An exact rational from an integer, a Fraction, a finite float (its exact binary value) or text such as
    "-5/6", "0.6" (taken exactly as 3/5) or "1e-3"; `error` (an InputError type) for anything longer than
    MAX_TEXT characters, with an exponent beyond ±MAX_EXPONENT, or with more than MAX_DIGITS digits in its
    numerator or denominator.  Messages name the value as `noun` ("a point") of `name`; `also` adds an
    accepted form (", or inf")."""
    forms = f"write an integer, a fraction such as -5/6 or a decimal such as 0.6{also}"
    if isinstance(value, bool):
        raise error(f"{value!r} is not {noun}: {forms}")
    if isinstance(value, Fraction):
        out = value
    elif isinstance(value, numbers.Integral):
        if abs(int(value)).bit_length() > 4 * MAX_DIGITS:
            raise error(f"{name} {short(value)} has more than {MAX_DIGITS} digits")
        out = Fraction(int(value))
    elif isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise error(f"{value!r} is not {noun}: {name}s are finite numbers{also}")
        out = Fraction(x)
    elif isinstance(value, str):
        token = value.strip()
        if len(token) > MAX_TEXT or not _NUMBER.match(token):
            raise error(f"'{short(token)}' is not {noun}: {forms} (at most {MAX_TEXT} characters)")
        _, _, exp = token.split("/")[0].lower().partition("e")
        if exp and abs(int(exp)) > MAX_EXPONENT:
            raise error(f"{name} '{short(token)}' has an exponent beyond ±{MAX_EXPONENT}")
        try:
            out = Fraction(token)
        except ZeroDivisionError:
            raise error(f"'{short(token)}' is not {noun}: it divides by zero") from None
        except ValueError:
            raise error(f"'{short(token)}' is not {noun}: {forms}") from None
    else:
        raise error(f"{short(repr(value))} is not {noun}: {forms}")
    if len(str(abs(out.numerator))) > MAX_DIGITS or len(str(out.denominator)) > MAX_DIGITS:
        raise error(f"{name} {short(value)} needs more than {MAX_DIGITS} digits in its numerator or denominator")
    return out
