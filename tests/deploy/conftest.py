"""Fixtures of the deployment checks: the chart rendered by Helm's own library, schema validators.

Nothing here needs a cluster or Docker: Helm's Go library (helm-python-sdk) renders the chart
offline, kubernetes-validate holds the Kubernetes schemas, and the custom resources' schemas are
kept in tests/deploy/crds/ with their sources noted."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from edrs_core import ServiceSettings, registry
from pydantic import AliasChoices

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edrs"
CRDS = Path(__file__).resolve().parent / "crds"
RELEASE = "edrs"
NAMESPACE = "edrs"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version() + ".0")

# Every optional part of the chart switched on.
EVERYTHING: dict[str, Any] = {
    "components": {
        "reasoning": {"gpu": {"enabled": True}},
        "gateway": {"ingress": {"enabled": True, "tlsSecretName": "edrs-api-tls"}},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    },
    "secrets": {"provider": "externalSecrets"},
    "engines": {"otel": {"endpoint": "http://otel-collector.monitoring:4317"}},
}

# The value sets the chart is rendered with: the three the issue names, and each environment's
# values file as Argo CD passes it.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu": {"components": {"reasoning": {"gpu": {"enabled": True}}}},
    "everything": EVERYTHING,
    **{
        f"env-{path.stem}": yaml.safe_load(path.read_text())
        for path in sorted((ROOT / "k8s" / "values").glob("*.yaml"))
    },
}

# kubernetes-validate re-reads its 3 MB definitions file for every object; the files never change
# while the tests run, so read each once.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test that takes `value_set` runs once per value set.
    if "value_set" in metafunc.fixturenames:
        metafunc.parametrize("value_set", list(VALUE_SETS))


@pytest.fixture(scope="session")
def value_sets() -> dict[str, dict[str, Any]]:
    return VALUE_SETS


@pytest.fixture(scope="session")
def merged_values(chart: helm_python.Chart) -> dict[str, dict[str, Any]]:
    """Each value set merged over the chart's defaults, as Helm merges them."""
    return {name: chart.merge_values(copy.deepcopy(v)) for name, v in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Render the chart with `values` as `helm template` would; the objects, in order."""

    def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
        manifests = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
        return [
            obj for _, text in sorted(manifests.items()) for obj in yaml.safe_load_all(text) if obj
        ]

    return _render


@pytest.fixture(scope="session")
def rendered(render: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> dict[str, list[dict]]:
    """Every value set's objects, rendered once per session."""
    return {name: render(values) for name, values in VALUE_SETS.items()}


def _strict(schema: Any) -> Any:
    """An openAPIV3Schema as the API server's strict field validation reads it: unknown fields are
    errors unless the schema preserves them."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Why `obj` is not a valid object of Kubernetes 1.30 and later (empty: it is)."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if _is_builtin(obj["apiVersion"]):
        errors = []
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{name} (Kubernetes {version}) at {path}: {exc.message}")
        return errors
    schema = _crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"{name}: no schema for {obj['apiVersion']} {obj['kind']} in {CRDS}"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{name} at {'.'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator.iter_errors(obj)
    ]


@pytest.fixture(scope="session")
def validate() -> Callable[[dict[str, Any]], list[str]]:
    return validation_errors


@functools.cache
def settings_class(service: str) -> type[ServiceSettings]:
    """The pydantic-settings class of `service`, from its declaration (edrs_core.registry)."""
    (declaration,) = [d for d in registry.declarations() if d.name == service]
    return declaration.load().settings_cls


def env_names(settings: type[ServiceSettings]) -> dict[str, str]:
    """Every environment variable `settings` reads, to the field it sets: the prefixed field name
    and any alias the field accepts (AliasChoices included)."""
    prefix = settings.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field, info in settings.model_fields.items():
        names[f"{prefix}{field}".upper()] = field
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                names[choice.upper()] = field
    return names


@pytest.fixture(scope="session")
def env_names_of() -> Callable[[str], dict[str, str]]:
    return lambda service: env_names(settings_class(service))


@pytest.fixture(scope="session")
def settings_of() -> Callable[[str], type[ServiceSettings]]:
    return settings_class


@functools.cache
def peers_called(service: str) -> frozenset[str]:
    """The peers `service`'s code calls: every generated stub class it names
    (`rt.peers.stub(memory_pb2_grpc.MemoryServiceStub)`, `MemoryServiceStub(channel)`) and every
    peer it names outright (`peers.channel("reasoning")`, `stub(..., peer="reasoning")`)."""
    called: set[str] = set()
    for path in (ROOT / "services" / service / "src").rglob("*.py"):
        text = path.read_text()
        # A stub module belongs to the area it is imported from (integration's tools_pb2_grpc).
        area_of = {
            module: area
            for area, names in re.findall(
                r"from edrs_proto\.([a-z]+)\.v1 import (\([^)]*\)|[^\n]*)", text
            )
            for module in re.findall(r"\b(\w+_pb2_grpc)\b", names)
        }
        for module in re.findall(r"\b([a-z]+_pb2_grpc)\.[A-Za-z]+Stub\b", text):
            called.add(area_of.get(module, module.removesuffix("_pb2_grpc")))
        called.update(re.findall(r"""channel\(\s*["']([a-z]+)["']\s*\)""", text))
        called.update(re.findall(r"""\bpeer\s*=\s*["']([a-z]+)["']""", text))
    return frozenset(called - {service})


@pytest.fixture(scope="session")
def code_calls() -> Callable[[str], frozenset[str]]:
    return peers_called
