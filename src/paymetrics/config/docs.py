"""The option reference of `docs/configuration.md`, generated from the model.

`paymetrics config docs` prints it; a test fails when the file's generated part
differs, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from paymetrics.config.model import Settings

__all__ = ["BEGIN", "END", "render_reference"]

BEGIN = "<!-- BEGIN GENERATED: paymetrics config docs -->"
END = "<!-- END GENERATED -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}" if args else "map"
    if annotation is type(None):
        return "null"
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type):
        return {
            "str": "string",
            "AwareDatetime": "RFC 3339 date-time with offset",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation)


_NO_VALUE = object()


def _default(info: FieldInfo, actual: Any = _NO_VALUE) -> str:
    """The default of a field; `actual` is its value in the enclosing section's default
    (a rule's severity is set by the section that holds it, not by the rule class)."""
    if actual is not _NO_VALUE:
        value: Any = actual
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
        return "every rule, enabled"
    return f"`{json.dumps(value, default=str)}`"


def _constraints(info: FieldInfo) -> str:
    out = []
    for item in info.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(item, name, None)
            if bound is not None:
                out.append(f"{sign} {bound}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            out.append(f"matches `{pattern}`")
    return f" ({', '.join(out)})" if out else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section(
    model: type[BaseModel], path: str, lines: list[str], defaults: BaseModel | None = None
) -> None:
    """`defaults`: the section's value by default, when its parent sets one."""
    nested: list[tuple[str, type[BaseModel], BaseModel | None]] = []
    restart = getattr(model, "restart_required", False)
    lines += [
        f"### `{path}`",
        "",
        (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
    ]
    if restart:
        lines += ["", "Changing this section **needs a restart** (a reload reports it)."]
    lines += ["", "| option | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        sub = _model_of(info.annotation)
        actual = getattr(defaults, name) if defaults is not None else _NO_VALUE
        if sub is not None and typing.get_origin(info.annotation) not in (list, dict):
            held = actual if actual is not _NO_VALUE else info.default
            nested.append((f"{path}.{name}", sub, held if isinstance(held, BaseModel) else None))
        elif sub is not None:
            suffix = "[]" if typing.get_origin(info.annotation) is list else ".<name>"
            nested.append((f"{path}.{name}{suffix}", sub, None))
        doc = " ".join((info.description or "").split())
        lines.append(
            f"| `{name}` | {_type_name(info.annotation)}{_constraints(info)} | "
            f"{_default(info, actual)} | {doc} |"
        )
    lines.append("")
    for sub_path, sub, held in nested:
        _section(sub, sub_path, lines, held)


def _rule_params(lines: list[str]) -> None:
    from paymetrics.validate import RULES

    lines += ["### Validation rules and their `params`", ""]
    lines += ["| rule | rejects with | params |", "|---|---|---|"]
    for name, rule in sorted(RULES.items()):
        params = ", ".join(
            f"`{p}` ({_type_name(i.annotation)}): {' '.join((i.description or '').split())}"
            for p, i in rule.Params.model_fields.items()
        )
        doc = " ".join((rule.__doc__ or "").split("\n\n")[0].split())
        lines.append(f"| `{name}` — {doc} | `{rule.reason}` | {params or 'none'} |")
    lines.append("")


def render_reference() -> str:
    """Markdown for every option, section by section, in model order."""
    lines: list[str] = [BEGIN, ""]
    for name, info in Settings.model_fields.items():
        model = _model_of(info.annotation)
        assert model is not None
        origin = typing.get_origin(info.annotation)
        path = f"{name}[]" if origin is list else f"{name}.<name>" if origin is dict else name
        _section(model, path, lines)
    _rule_params(lines)
    lines.append(END)
    return "\n".join(line.rstrip() for line in lines) + "\n"
