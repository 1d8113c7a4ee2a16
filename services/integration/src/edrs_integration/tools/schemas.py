"""Tool names, argument schemas and impact levels: the checks every tool, of any source, passes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edrs_core import InvalidArgument
from jsonschema import exceptions as schema_errors
from jsonschema import validators

IMPACTS = ("read", "write", "destructive")
# What model APIs accept as a function name (OpenAI: ^[a-zA-Z0-9_-]{1,64}$).
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
SEPARATOR = "__"
MAX_ARGUMENTS_CHARS = 100_000
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, remote: str, taken: set[str]) -> str:
    """The name a tenant calls an MCP tool by: "<server>__<tool>", made model-safe and unique."""
    base = f"{server}{SEPARATOR}{_UNSAFE.sub('_', remote)}"[:64]
    name, n = base, 2
    while name in taken:
        suffix = f"_{n}"
        name, n = base[: 64 - len(suffix)] + suffix, n + 1
    taken.add(name)
    return name


def impact_of_hints(annotations: Any) -> str:
    """The impact an MCP server's tool annotations claim. MCP's own defaults: a tool that does not
    say it only reads may change things, and one that does not say otherwise may destroy them."""
    if annotations is None:
        return "destructive"
    if getattr(annotations, "read_only_hint", None) is True:
        return "read"
    if getattr(annotations, "destructive_hint", None) is False:
        return "write"
    return "destructive"


def check_schema(schema: Mapping[str, Any]) -> str | None:
    """None when `schema` is a usable argument schema (an object schema valid for its draft),
    else why not."""
    if schema.get("type", "object") != "object":
        return "an argument schema must describe an object"
    try:
        validators.validator_for(schema).check_schema(dict(schema))
    except schema_errors.SchemaError as exc:
        return f"its argument schema is not valid JSON Schema: {exc.message}"
    return None


def parse_arguments(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    if len(text) > MAX_ARGUMENTS_CHARS:
        raise InvalidArgument(
            f"arguments is {len(text)} characters long; the limit is {MAX_ARGUMENTS_CHARS}",
            field="arguments",
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"arguments is not JSON: {exc}", field="arguments") from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"arguments must be a JSON object, got {type(value).__name__}", field="arguments"
        )
    return value


def validate_arguments(tool: str, schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """InvalidArgument naming the first failing path when `arguments` break `schema`."""
    validator = validators.validator_for(schema)(schema)
    error = schema_errors.best_match(validator.iter_errors(arguments))
    if error is None:
        return
    where = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
    raise InvalidArgument(
        f"arguments{where} do not match the schema of tool {tool}: {error.message}",
        field=f"arguments{where}",
    )


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """One tool of a tenant's registry, whatever its source."""

    name: str
    description: str
    input_schema: dict[str, Any]
    impact: str
    source: str  # builtin | connector | mcp
    mcp_server_id: str = ""
    remote_name: str = ""
    connector_id: str = ""
    unavailable_reason: str = ""

    @property
    def available(self) -> bool:
        return not self.unavailable_reason
