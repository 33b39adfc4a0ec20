"""Tables of named factories whose signatures are the config schema.

A component (model, loss, optimizer, schedule, dataset, initializer) is a function
registered under a name. Its keyword parameters are the options a config may give;
their annotations say the type and, through `Range`/`OneOf`/`NonEmpty`, the allowed values.
`Registry.check` validates a config section against the signature and returns every
problem at once; `Registry.build` calls the factory with checked, coerced values.
Parameters listed in `injected` are supplied by gdtrain (e.g. a model's input size),
never by the user. Options in `common` are taken by every entry of a table besides its
own (a schedule's warm-up): listed and checked like the factory's options, and applied
by the table's `wrap` to what the factory built.
"""

from __future__ import annotations

import difflib
import inspect
import math
import reprlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from ..errors import ConfigError

_MISSING = inspect.Parameter.empty


@dataclass(frozen=True)
class Range:
    """Numeric bounds for an option: Annotated[float, Range(gt=0)]."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def problem(self, value: float) -> str | None:
        if self.gt is not None and not value > self.gt:
            return f"must be > {self.gt}"
        if self.ge is not None and not value >= self.ge:
            return f"must be >= {self.ge}"
        if self.lt is not None and not value < self.lt:
            return f"must be < {self.lt}"
        if self.le is not None and not value <= self.le:
            return f"must be <= {self.le}"
        return None

    def describe(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.ge is not None:
            parts.append(f">= {self.ge}")
        if self.lt is not None:
            parts.append(f"< {self.lt}")
        if self.le is not None:
            parts.append(f"<= {self.le}")
        return ", ".join(parts)


@dataclass(frozen=True)
class OneOf:
    """The option must be one of these strings."""

    choices: tuple[str, ...]

    def __init__(self, *choices: str):
        object.__setattr__(self, "choices", tuple(choices))

    def problem(self, value: Any) -> str | None:
        if value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}"
        return None

    def describe(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True)
class IsPath:
    """Marks a string option as a file or directory path: config/paths.py resolves a relative one
    by the paths rule (`config.absolute_paths`). Checked like any string."""


PathText = Annotated[str, IsPath()]


def is_path(annotation: Any) -> bool:
    """Whether an option is a PathText (or an optional one)."""
    if get_origin(annotation) in (types.UnionType, typing.Union):
        return any(is_path(a) for a in get_args(annotation))
    extras = get_args(annotation)[1:] if get_origin(annotation) is Annotated else ()
    return any(isinstance(e, IsPath) for e in extras)


class NonEmpty:
    """The option (a list) must have at least one item: Annotated[list[int], NonEmpty()]."""

    def problem(self, value: Any) -> str | None:
        return "must not be empty" if len(value) == 0 else None

    def describe(self) -> str:
        return "non-empty"


_CONSTRAINTS = (Range, OneOf, NonEmpty)

Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(gt=0, le=1)]  # decay rates: (0, 1]
OpenFraction = Annotated[float, Range(gt=0, lt=1)]  # moving-average decays: 1 would never move
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]


def suggest(word: Any, choices: typing.Iterable[str]) -> str:
    """'; did you mean X?' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def type_name(annotation: Any) -> str:
    base, constraints = _unwrap(annotation)
    origin = get_origin(base)
    if origin in (types.UnionType, typing.Union):
        name = " | ".join(type_name(a) for a in get_args(base) if a is not type(None))
        if type(None) in get_args(base):
            name += " | null"
    elif origin is list:
        (item,) = get_args(base) or (Any,)
        name = f"list[{type_name(item)}]"
    elif origin is dict:
        name = "mapping"
    elif base is Any:
        name = "any"
    else:
        name = getattr(base, "__name__", str(base))
    for c in constraints:
        name += f" ({c.describe()})"
    return name


def _unwrap(annotation: Any) -> tuple[Any, list]:
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        return base, [e for e in extra if isinstance(e, _CONSTRAINTS)]
    return annotation, []


def coerce(value: Any, annotation: Any) -> tuple[Any, str | None]:
    """Check `value` against a type annotation; return (coerced value, problem)."""
    base, constraints = _unwrap(annotation)
    origin = get_origin(base)
    if base is Any or base is _MISSING:
        return value, None
    if origin in (types.UnionType, typing.Union):
        options = get_args(base)
        if value is None and type(None) in options:
            return None, None
        problems = []
        for option in options:
            if option is type(None):
                continue
            result, problem = coerce(value, option)
            if problem is None:
                return _check_constraints(result, constraints)
            problems.append(problem)
        # The right type but out of range ("must be >= 1, got 0", or a list's "item 1: must
        # be >= 1, got 0") says more than the union.
        in_range = [p for p in problems if p.startswith(("must ", "item "))]
        if in_range:
            return value, in_range[0]
        return value, f"expected {type_name(annotation)}, got {show(value)}"
    if origin is list:
        (item,) = get_args(base) or (Any,)
        if not isinstance(value, list):
            return value, f"expected a list, got {show(value)}"
        out = []
        for i, v in enumerate(value):
            c, problem = coerce(v, item)
            if problem:
                return value, f"item {i}: {problem}"
            out.append(c)
        return _check_constraints(out, constraints)
    if origin is dict or base is dict:
        if not isinstance(value, dict):
            return value, f"expected a mapping, got {show(value)}"
        return _check_constraints(value, constraints)
    if base is bool:
        if not isinstance(value, bool):
            return value, f"expected true or false, got {show(value)}"
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"expected an integer, got {show(value)}"
        if isinstance(value, float):
            if not value.is_integer():
                return value, f"expected an integer, got {show(value)}"
            value, shown = int(value), value
        else:
            shown = value
        # numpy sizes, seeds and step counts are 64-bit: a larger number can only fail later
        if not -(2**63) <= value < 2**63:
            return value, f"must fit in 64 bits, got {_show_number(shown)}"
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"expected a number, got {show(value)}"
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            return value, f"must be a finite number, got {_show_number(value)}"
        if not math.isfinite(value):
            return value, f"must be a finite number, got {value}"
    elif base is str:
        if not isinstance(value, str):
            return value, f"expected a string, got {show(value)}"
    return _check_constraints(value, constraints)


def _check_constraints(value: Any, constraints: list) -> tuple[Any, str | None]:
    for c in constraints:
        problem = c.problem(value)
        if problem:
            hint = suggest(value, c.choices) if isinstance(c, OneOf) else ""
            return value, f"{problem}, got {show(value)}{hint}"
    return value, None


def _show_number(value: int | float) -> str:
    # a 5000-digit integer is not worth printing (and str() refuses beyond 4300 digits)
    if isinstance(value, int) and abs(value) >= 10**30:
        return f"an integer of {value.bit_length()} bits"
    return show(value)


# Bounded reprs: a value in a message is shown, never dumped (a YAML alias can make a
# list of a billion items out of a few lines).
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel = 60, 60, 40, 3


def show(value: Any) -> str:
    """A config value as a message shows it: YAML spelling for null/true/false, bounded."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__} {_REPR.repr(value)}"
    return _REPR.repr(value)


@dataclass(frozen=True)
class Option:
    name: str
    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


class Registry:
    """A name -> factory table whose factories' signatures are the schema.

    `common` declares options every entry takes besides its own, as
    name -> (annotation, default, doc); `build` hands their values not to the factory
    but to `wrap(built, **values)`, whose result it returns.
    """

    def __init__(self, kind: str, injected: tuple[str, ...] = (),
                 common: dict[str, tuple[Any, Any, str]] | None = None,
                 wrap: Callable[..., Any] | None = None):
        if bool(common) != (wrap is not None):
            raise ValueError(f"{kind}: common options and wrap go together")
        self.kind = kind
        self.injected = set(injected)
        self.common = dict(common or {})
        self._wrap = wrap
        self._table: dict[str, Callable] = {}
        self._traits: dict[str, dict[str, Any]] = {}
        self._options: dict[str, tuple[Option, ...]] = {}  # per name: register refuses duplicates

    def register(self, name: str, **traits: Any) -> Callable[[Callable], Callable]:
        """Register a factory under `name`. `traits` declare what other modules need to know
        about the component without naming it (a schedule's `spans_run`); see `trait`."""

        def decorate(factory: Callable) -> Callable:
            if name in self._table:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._table[name] = factory
            self._traits[name] = dict(traits)
            return factory

        return decorate

    def trait(self, name: str, key: str, default: Any = None) -> Any:
        """What component `name` declared as `key` when it was registered, else `default`."""
        return self._traits.get(name, {}).get(key, default)

    def __contains__(self, name: object) -> bool:
        # a config may hold a list or mapping where a name belongs: unhashable, not an error here
        return isinstance(name, str) and name in self._table

    def __iter__(self):
        return iter(self._table)

    def names(self) -> list[str]:
        return sorted(self._table)

    def get(self, name: str) -> Callable:
        return self._table[name]

    def options(self, name: str) -> list[Option]:
        """User-settable options of a component: its factory's in signature order, then the
        common ones."""
        factory = self._table[name]
        if name not in self._options:
            hints = typing.get_type_hints(factory, include_extras=True)
            docs = _param_docs(factory)
            out = []
            for p in inspect.signature(factory).parameters.values():
                if p.name in self.injected or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                if p.name in self.common:
                    raise ValueError(f"{self.kind} {name!r}: {p.name!r} is already a common option")
                out.append(Option(p.name, hints.get(p.name, Any), p.default, docs.get(p.name, "")))
            out += [Option(key, annotation, default, doc)
                    for key, (annotation, default, doc) in self.common.items()]
            self._options[name] = tuple(out)
        return list(self._options[name])

    def summary(self, name: str) -> str:
        doc = inspect.getdoc(self._table[name]) or ""
        return doc.split("\n\n")[0].replace("\n", " ")

    def check(self, name: Any, options: dict, where: str) -> tuple[dict, list[str]]:
        """Validate `options` for component `name`; return (coerced options, problems).

        `where` is the dotted config path of the section (e.g. 'optimizer').
        """
        if not isinstance(name, str):
            valid = ", ".join(self.names())
            return {}, [f"{where}.name: expected a name, got {show(name)}; valid: {valid}"]
        if name not in self._table:
            valid = ", ".join(self.names())
            return {}, [
                f"{where}.name: unknown {self.kind} {show(name)}; valid: {valid}"
                + suggest(name, self._table)
            ]
        problems = []
        known = {o.name: o for o in self.options(name)}
        coerced = {}
        for key, value in options.items():
            if key not in known:
                hint = suggest(key, known) or (
                    f"; {self.kind} '{name}' takes: {', '.join(known) or 'no options'}"
                )
                problems.append(f"{where}.{key}: unknown option for {self.kind} '{name}'{hint}")
                continue
            value, problem = coerce(value, known[key].annotation)
            if problem:
                problems.append(f"{where}.{key}: {problem}")
            else:
                coerced[key] = value
        for opt in known.values():
            if opt.required and opt.name not in options:
                problems.append(
                    f"{where}.{opt.name}: required by {self.kind} '{name}' "
                    f"({type_name(opt.annotation)})"
                )
        return coerced, problems

    def build(self, name: str, options: dict, where: str, **injected: Any) -> Any:
        """Check then call the factory (and `wrap`, given the common options); factory
        ValueErrors become config errors."""
        coerced, problems = self.check(name, options, where)
        if problems:
            raise ConfigError(problems)
        common = {key: coerced.pop(key, default) for key, (_, default, _) in self.common.items()}
        try:
            built = self._table[name](**coerced, **injected)
            return self._wrap(built, **common) if self._wrap is not None else built
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _param_docs(factory: Callable) -> dict[str, str]:
    """Parameter descriptions from 'name: text' lines in the docstring; an indented line
    continues the description above it."""
    docs: dict[str, str] = {}
    last = None
    for line in (inspect.getdoc(factory) or "").splitlines():
        if last and line[:1].isspace() and line.strip():
            docs[last] += " " + line.strip()
            continue
        head, sep, text = line.strip().partition(": ")
        last = head if sep and head.isidentifier() else None
        if last:
            docs[head] = text.strip()
    return docs
