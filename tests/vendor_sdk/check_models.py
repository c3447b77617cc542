"""Check JSON bodies field by field against the official SDKs' models, run in the SDK virtualenv.

The SDKs' models accept extra fields and leave many unchecked, so parsing alone would let an emulator
send fields the platform never sends. This walks each model instead: every key of a body must be a field
of its model (by wire name) and every required field must be there, recursively, with literals, enums
and basic types checked. Reads ``[{"label", "model": "module:Class", "body"}]`` on stdin and prints
``{label: [problems]}`` as one JSON line.
"""

import enum
import importlib
import json
import sys
import types
import typing
import uuid
from datetime import datetime

import pydantic

Problems = list[str]


def load(spec: str) -> typing.Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def check(annotation: typing.Any, value: typing.Any, where: str) -> Problems:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return check(args[0], value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        tried = [check(arg, value, where) for arg in args if arg is not type(None)]
        return [] if any(not problems for problems in tried) else min(tried, key=len)
    if annotation is typing.Any or isinstance(annotation, (typing.TypeVar, str, typing.ForwardRef)):
        return []
    if value is None:
        return [f"{where}: null where the model has no null"]
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin in (list, list, typing.Sequence) or annotation is list:
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        inner = args[0] if args else typing.Any
        return [p for i, item in enumerate(value) for p in check(inner, item, f"{where}[{i}]")]
    if origin in (dict, dict) or annotation is dict:
        return [] if isinstance(value, dict) else [f"{where}: not an object"]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return check_model(annotation, value, where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        known = {member.value for member in annotation if not member.name.startswith("_")}
        return [] if value in known else [f"{where}: {value!r} is not one of {sorted(known)}"]
    return check_scalar(annotation, value, where)


def check_scalar(annotation: typing.Any, value: typing.Any, where: str) -> Problems:
    if annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif annotation is str:
        ok = isinstance(value, str)
    elif annotation is datetime:
        ok = isinstance(value, str) and _parses(lambda: datetime.fromisoformat(value.replace("Z", "+00:00")))
    elif annotation is uuid.UUID:
        ok = isinstance(value, str) and _parses(lambda: uuid.UUID(value))
    else:
        return []
    return [] if ok else [f"{where}: {value!r} is not a {getattr(annotation, '__name__', annotation)}"]


def _parses(parse: typing.Callable[[], object]) -> bool:
    try:
        parse()
    except ValueError:
        return False
    return True


def check_model(model: type[pydantic.BaseModel], value: typing.Any, where: str) -> Problems:
    if not isinstance(value, dict):
        return [f"{where}: not an object ({model.__name__})"]
    fields = {(info.alias or name): info for name, info in model.model_fields.items() if not info.exclude}
    problems = [f"{where}.{key}: not a field of {model.__name__}" for key in value if key not in fields]
    for key, info in fields.items():
        if key not in value:
            if info.is_required():
                problems.append(f"{where}.{key}: required by {model.__name__}, missing")
            continue
        problems += check(info.annotation, value[key], f"{where}.{key}")
    return problems


def main() -> None:
    results = {item["label"]: check(load(item["model"]), item["body"], "$") for item in json.load(sys.stdin)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
