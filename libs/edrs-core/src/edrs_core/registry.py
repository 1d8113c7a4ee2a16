"""The fleet's one list of services: each service declares itself once, in its own pyproject.toml,

    [project.entry-points."edrs.services"]
    gateway = "edrs_gateway.app:definition"

and everything that needs the list (the launcher, the Makefile's globs, the tests) reads it here.

Installed services are found by their distributions' entry points. A folder of a services directory
(the checkout's ``services/``) that is not installed yet is found by reading its pyproject.toml, and
runs with its ``src/`` on the import path. ``python -m edrs_core.registry`` prints what the launcher
needs to start each one (name, module, env prefix, ports) as JSON, so the launcher never imports a
service: the services' own interpreter does, once, in a short-lived process.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from edrs_events.catalog import SERVICE_ENTRY_POINT_GROUP

from edrs_core.runtime import LocalPorts, ServiceDefinition

ENTRY_POINT_GROUP = SERVICE_ENTRY_POINT_GROUP
# The name becomes a database (edrs_<name>), an env prefix (EDRS_<NAME>_) and a proto area.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*$")


class RegistryError(Exception):
    """A service declaration is unusable; the message names the declaration and what to fix."""


@dataclass(frozen=True)
class ServiceDeclaration:
    """One ``edrs.services`` entry point: a service name and where its ServiceDefinition is."""

    name: str
    target: str  # "package.module:attribute"
    origin: str  # the distribution, or the pyproject.toml, that declares it
    source: Path | None = None  # the import root of a folder that is not installed

    @property
    def module(self) -> str:
        """The service's top-level package, started as ``python -m <module>``."""
        return self.target.partition(":")[0].partition(".")[0]

    def load(self) -> ServiceDefinition[Any]:
        """Import the declared ServiceDefinition (a folder's source goes first on the path)."""
        module_name, _, attribute = self.target.partition(":")
        if not module_name or not attribute:
            raise RegistryError(
                f"{self.origin}: the entry point {self.name} = {self.target!r} must name "
                "'package.module:attribute'"
            )
        if self.source is not None and str(self.source) not in sys.path:
            sys.path.insert(0, str(self.source))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(
                f"{self.origin}: cannot import {module_name} for service {self.name}: {exc}"
            ) from exc
        definition = getattr(module, attribute, None)
        if not isinstance(definition, ServiceDefinition):
            raise RegistryError(
                f"{self.origin}: {self.target} is {type(definition).__name__}, "
                "not an edrs_core.ServiceDefinition"
            )
        if definition.name != self.name:
            raise RegistryError(
                f"{self.origin}: the entry point is named {self.name!r} but its settings class "
                f"{definition.settings_cls.__name__} says service_name = {definition.name!r}"
            )
        return definition


@dataclass(frozen=True)
class ServiceDescription:
    """What the launcher needs to start a service, read from its declaration."""

    name: str
    module: str
    env_prefix: str
    local_ports: LocalPorts | None = None
    # Prepended to PYTHONPATH for a folder that is not installed.
    python_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        ports = self.local_ports
        return {
            "name": self.name,
            "module": self.module,
            "envPrefix": self.env_prefix,
            "localPorts": None
            if ports is None
            else {"grpc": ports.grpc, "http": ports.http, "metrics": ports.metrics},
            "pythonPath": self.python_path,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceDescription:
        ports = data.get("localPorts")
        return cls(
            name=data["name"],
            module=data["module"],
            env_prefix=data["envPrefix"],
            local_ports=None if ports is None else LocalPorts(**ports),
            python_path=data.get("pythonPath"),
        )


def installed_declarations() -> list[ServiceDeclaration]:
    """The ``edrs.services`` entry points of every installed distribution."""
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(point, "dist", None)
        origin = f"distribution {dist.name}" if dist is not None else f"entry point {point.name}"
        found.append(ServiceDeclaration(point.name, point.value, origin))
    return _checked(found)


def folder_declarations(services_dir: Path) -> list[ServiceDeclaration]:
    """The ``edrs.services`` entry points in ``<services_dir>/*/pyproject.toml``."""
    found = []
    for pyproject in sorted(Path(services_dir).glob("*/pyproject.toml")):
        try:
            project = tomllib.loads(pyproject.read_text("utf-8")).get("project", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RegistryError(f"{pyproject}: {exc}") from exc
        declared = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
        src = pyproject.parent / "src"
        source = src if src.is_dir() else pyproject.parent
        for name, target in declared.items():
            found.append(ServiceDeclaration(name, str(target), str(pyproject), source.resolve()))
    return _checked(found)


def declarations(services_dir: Path | None = None) -> list[ServiceDeclaration]:
    """Every declared service, by name: the installed ones, and the folders of ``services_dir``
    that are not installed (an installed service is the one that runs, as it always did)."""
    merged = {d.name: d for d in installed_declarations()}
    if services_dir is not None and Path(services_dir).is_dir():
        for declaration in folder_declarations(services_dir):
            merged.setdefault(declaration.name, declaration)
    return [merged[name] for name in sorted(merged)]


def service_names(services_dir: Path | None = None) -> list[str]:
    """The declared services' names, without importing any of them."""
    return [d.name for d in declarations(services_dir)]


def describe(declaration: ServiceDeclaration) -> ServiceDescription:
    """Load a declaration and check what the launcher relies on."""
    definition = declaration.load()
    if not definition.env_prefix:
        raise RegistryError(
            f"{declaration.origin}: {definition.settings_cls.__name__} sets no env_prefix; "
            f'give it model_config = SettingsConfigDict(env_prefix="EDRS_{declaration.name.upper()}_")'
        )
    if importlib.util.find_spec(f"{declaration.module}.__main__") is None:
        raise RegistryError(
            f"{declaration.origin}: {declaration.module} has no __main__.py; the launcher starts "
            f"`python -m {declaration.module}`, which must call run_service(definition)"
        )
    return ServiceDescription(
        name=declaration.name,
        module=declaration.module,
        env_prefix=definition.env_prefix,
        local_ports=definition.local_ports,
        python_path=None if declaration.source is None else str(declaration.source),
    )


def describe_all(services_dir: Path | None = None) -> list[ServiceDescription]:
    return [describe(d) for d in declarations(services_dir)]


def _checked(found: Iterable[ServiceDeclaration]) -> list[ServiceDeclaration]:
    by_name: dict[str, ServiceDeclaration] = {}
    for declaration in found:
        if not NAME_PATTERN.match(declaration.name):
            raise RegistryError(
                f"{declaration.origin}: service name {declaration.name!r} must be lower-case "
                "letters and digits, starting with a letter"
            )
        other = by_name.get(declaration.name)
        if other is not None and other.target != declaration.target:
            raise RegistryError(
                f"service {declaration.name!r} is declared twice: by {other.origin} "
                f"({other.target}) and by {declaration.origin} ({declaration.target})"
            )
        by_name[declaration.name] = declaration
    return list(by_name.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edrs_core.registry",
        description="Print every declared EDRS service as JSON (what `edrs dev up` starts).",
    )
    parser.add_argument(
        "--services-dir",
        type=Path,
        help="Also read the folders of this directory that are not installed (e.g. services/).",
    )
    args = parser.parse_args(argv)
    try:
        described = describe_all(args.services_dir)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump({"services": [d.to_json() for d in described]}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
