"""The numbers a user may pass, checked in one place.

Every numeric option of every command line and every numeric argument of the library entry
points (generate, sample, the three trainers) goes through one of the rules below, so
``--temperature nan`` and ``generate(..., temperature=float("nan"))`` are refused with the
same sentence, before any work starts:

    positive_int      whole number >= 1        epochs, batch sizes, --n, --gl-iters, model widths
    nonneg_int        whole number >= 0        seeds, warmup steps, restart ages
    positive_float    finite number > 0        learning rate, temperature
    nonneg_float      finite number >= 0       guidance, weight decay, min-lr, clip (0: off)
    prob              number in (0, 1]         top-p (nucleus mass)
    fraction          number in [0, 1)         dropout, EMA decay
    unit_interval     number in [0, 1]         restart share

A rule is used in two ways:
    p.add_argument("--n", type=cli.positive_int, default=1)   # argparse: text -> value
    cli.positive_int.check("n", n)                            # library: ValueError naming 'n'
Floats are always required to be finite: NaN fails every comparison, so a range test alone
would let it through (and NaN then silently turns every probability into 0).

``ArgumentParser`` is argparse with minivq's error style: a bad argument raises ``UsageError``
(a ValueError) with one sentence, which each command's main() prints as ``error: ...`` and
turns into exit code 2, like every other bad input.
"""
import argparse
import math
import numbers
import re


class UsageError(ValueError):
    """A command-line argument that argparse refused; the message is one sentence."""


class Rule:
    """A range for one kind of number: kind 'int' or 'float', bounds lo/hi (None: unbounded),
    lo_open/hi_open for strict bounds. Callable as an argparse ``type``."""

    def __init__(self, name, kind, lo=None, hi=None, lo_open=False, hi_open=False, what=None):
        self.__name__ = name  # argparse names the type in its own messages
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.what = what or self._describe()

    def _describe(self):
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            if self.lo == 0 and self.lo_open:
                text = "positive"
            else:
                text = f"{'greater than' if self.lo_open else 'at least'} {self.lo:g}"
        else:
            text = "any number" if self.hi is None else f"{'less than' if self.hi_open else 'at most'} {self.hi:g}"
        return text + (" and finite" if self.kind == "float" else "")

    def ok(self, v):
        """True when the (already converted) value lies in the range."""
        if self.kind == "float" and not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def check(self, name, value, allow_none=False):
        """Library side: return ``value`` as int/float, or raise ValueError naming ``name``."""
        if value is None and allow_none:
            return None
        if self.kind == "int":
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                v = int(value)
            elif isinstance(value, numbers.Real) and float(value).is_integer():
                v = int(value)
            else:
                raise ValueError(f"{name} must be a whole number, {self.what}, got {value!r}")
        else:
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, {self.what}, got {value!r}")
            v = float(value)
        if not self.ok(v):
            raise ValueError(f"{name} must be {self.what}, got {value!r}")
        return v

    def __call__(self, text):
        """argparse side: text -> value; the message names no option (argparse adds it)."""
        try:
            v = int(text) if self.kind == "int" else float(text)
        except ValueError:
            kind = "a whole number" if self.kind == "int" else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind}, {self.what}, got {text!r}")
        if not self.ok(v):
            raise argparse.ArgumentTypeError(f"must be {self.what}, got {text!r}")
        return v


positive_int = Rule("positive_int", "int", lo=1)
nonneg_int = Rule("nonneg_int", "int", lo=0)
positive_float = Rule("positive_float", "float", lo=0, lo_open=True)
nonneg_float = Rule("nonneg_float", "float", lo=0)
prob = Rule("prob", "float", lo=0, hi=1, lo_open=True)
fraction = Rule("fraction", "float", lo=0, hi=1, hi_open=True)
unit_interval = Rule("unit_interval", "float", lo=0, hi=1)


def sha256_hex(text):
    """argparse type: a sha256 digest written as 64 hexadecimal digits (any case)."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"must be 64 hexadecimal digits (a sha256), got {text!r}")
    return text.lower()


def check_settings(values, rules, optional=()):
    """Check a dict of settings against {name: Rule}; names in ``optional`` may be None.
    Returns a new dict with the checked values (ints as int, floats as float)."""
    out = dict(values)
    for name, rule in rules.items():
        if name in values:
            out[name] = rule.check(name, values[name], allow_none=name in optional)
    return out


def check_sampling(temperature=1.0, top_k=None, top_p=None, guidance=1.0):
    """The sampling settings shared by bundle.generate_clips(), sample() and a bundle's manifest."""
    return {"temperature": positive_float.check("temperature", temperature),
            "top_k": positive_int.check("top_k", top_k, allow_none=True),
            "top_p": prob.check("top_p", top_p, allow_none=True),
            "guidance": nonneg_float.check("guidance", guidance)}


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors raise UsageError with one sentence instead of
    printing the usage block and exiting (sub-parsers inherit the class). ``--help`` is
    unchanged."""

    def error(self, message):
        # argparse words a bad value as "argument --n: must be ..."; make it "--n must be ..."
        m = re.fullmatch(r"argument (\S+): (must .*)", message, flags=re.S)
        if m:
            opt = m.group(1).split("/")[-1]
            raise UsageError(f"{opt} {m.group(2)}")
        raise UsageError(f"{message} (see {self.prog} --help)")
