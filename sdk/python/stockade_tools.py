"""Stockade plugins in Python: plain functions become MCP tools.

Build a plugin with componentize-py against the Stockade WIT contract's
`tool-plugin` world (see sdk/python/README.md). In the plugin's `app.py`:

    from typing import Annotated
    from stockade_tools import tool, plugin

    @tool(read_only=True)
    def word_count(text: Annotated[str, "The text to count the words of"]) -> str:
        "Counts the words in a text."
        return f"{len(text.split())} words"

    Tools = plugin(name="wordcount", version="0.1.0", description="Counts words")

Each tool's JSON Schema is derived from its signature: `str`, `int`, `float`,
`bool`, `list[...]`, `dict`, `Optional[...]`/`X | None`, `Literal[...]`, with
`Annotated[T, "description"]` for the description the model reads. Parameters
with a default are optional. The docstring is the tool's description.

A tool returns a `str` (text for the model), a `dict`/`list` (JSON, sent as
structured content and text), or a `Result` built with `text()`/`error()`.
Raise `ToolError("...")` to fail the call with a message for the model.
"""

import inspect
import json
import types as _pytypes
import typing

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import tools as _wit
from wit_world.imports import stockade_plugin_types as _types

__all__ = ["tool", "plugin", "text", "error", "ToolError", "Result"]

_TOOLS = {}


class ToolError(Exception):
    """Fails the call; the message is shown to the model as an error result."""


class Result:
    """A tool result: text content, optional structured JSON, an error flag."""

    def __init__(self, texts, structured=None, is_error=False):
        self.texts = list(texts)
        self.structured = structured
        self.is_error = is_error


def text(*parts):
    """A successful result made of text parts."""
    return Result(parts)


def error(message):
    """A result the model sees as a failure it may correct (`isError`)."""
    return Result([message], is_error=True)


def _schema(hint):
    """The JSON Schema of a type hint (without its description)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _schema(args[0])
    if origin in (typing.Union, _pytypes.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _schema(rest[0])
        return {"anyOf": [_schema(a) for a in rest]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is list or origin is list:
        return {"type": "array", "items": _schema(args[0])} if args else {"type": "array"}
    if hint is dict or origin is dict:
        return {"type": "object"}
    raise TypeError(f"stockade_tools: no JSON Schema for the type {hint!r}")


def _description(hint):
    if typing.get_origin(hint) is typing.Annotated:
        for extra in typing.get_args(hint)[1:]:
            if isinstance(extra, str):
                return extra
    return None


def _check(value, hint, path):
    """Checks `value` against `hint`; returns an error message or None."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _check(value, args[0], path)
    if origin in (typing.Union, _pytypes.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_check(value, a, path) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"`{path}` must be one of {list(args)}, not {value!r}"
    expected = {str: str, bool: bool, float: (int, float), int: int, list: list, dict: dict}
    want = expected.get(origin or hint)
    if want is None:
        return None
    if isinstance(value, bool) and want in (int, (int, float)):
        return f"`{path}` must be a number, not {json.dumps(value)}"
    if not isinstance(value, want):
        name = {str: "a string", bool: "true or false", int: "an integer", list: "an array",
                dict: "an object"}.get(origin or hint, "a number")
        return f"`{path}` must be {name}, not {json.dumps(value)}"
    if (origin is list) and args:
        for i, item in enumerate(value):
            problem = _check(item, args[0], f"{path}[{i}]")
            if problem:
                return problem
    return None


def tool(name=None, *, title=None, read_only=None, destructive=None, idempotent=None,
         open_world=None):
    """Registers the decorated function as a tool (named after it by default)."""

    def register(fn):
        tool_name = name or fn.__name__
        hints = typing.get_type_hints(fn, include_extras=True)
        properties, required, params = {}, [], []
        for p in inspect.signature(fn).parameters.values():
            hint = hints.get(p.name, str)
            prop = _schema(hint)
            desc = _description(hint)
            if desc:
                prop["description"] = desc
            properties[p.name] = prop
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
            params.append((p.name, hint, p.default))
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        _TOOLS[tool_name] = (fn, params, _wit.Tool(
            name=tool_name,
            title=title,
            description=inspect.getdoc(fn) or tool_name,
            input_schema=json.dumps(schema),
            output_schema=None,
            annotations=_wit.ToolAnnotations(
                read_only=read_only, destructive=destructive, idempotent=idempotent,
                open_world=open_world),
        ))
        return fn

    return register


def _invalid(tool_name, message):
    raise Err(_wit.ToolError_InvalidArguments(f"invalid arguments for tool `{tool_name}`: {message}"))


def _call(tool_name, arguments):
    entry = _TOOLS.get(tool_name)
    if entry is None:
        raise Err(_wit.ToolError_UnknownTool(f"no tool named `{tool_name}`"))
    fn, params, _ = entry
    try:
        args = json.loads(arguments or "{}")
    except ValueError as e:
        _invalid(tool_name, f"not JSON: {e}")
    if not isinstance(args, dict):
        _invalid(tool_name, "expected a JSON object")
    known = {n for n, _, _ in params}
    extra = sorted(set(args) - known)
    if extra:
        _invalid(tool_name, f"unknown field `{extra[0]}` (expected {sorted(known)})")
    kwargs = {}
    for pname, hint, default in params:
        if pname not in args:
            if default is inspect.Parameter.empty:
                _invalid(tool_name, f"missing field `{pname}`")
            continue
        problem = _check(args[pname], hint, pname)
        if problem:
            _invalid(tool_name, problem)
        kwargs[pname] = args[pname]
    try:
        out = fn(**kwargs)
    except ToolError as e:
        raise Err(_wit.ToolError_Failed(str(e)))
    if isinstance(out, Result):
        result = out
    elif isinstance(out, str):
        result = Result([out])
    elif isinstance(out, (dict, list)):
        result = Result([json.dumps(out)], structured=out if isinstance(out, dict) else None)
    else:
        result = Result([str(out)])
    return _wit.CallResult(
        content=[_types.Content_Text(t) for t in result.texts],
        structured_content=None if result.structured is None else json.dumps(result.structured),
        is_error=result.is_error,
    )


def plugin(name, version, description=None):
    """The class componentize-py exports as `tools`: assign it to `Tools` in app.py."""

    class Tools(exports.Tools):
        def describe(self):
            return _wit.PluginInfo(name=name, version=version, description=description)

        def list_tools(self):
            return [entry[2] for entry in _TOOLS.values()]

        def call_tool(self, tool_name, arguments, caller):
            return _call(tool_name, arguments)

    return Tools
