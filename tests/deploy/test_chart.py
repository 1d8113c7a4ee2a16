"""The Helm chart, rendered by Helm's library under every value set, checked object by object."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_core.identity import private_key_pem, public_key_pem
from edrs_core.registry import service_names
from edrs_core.settings import load_settings
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

CHART = Path(__file__).resolve().parents[2] / "charts" / "edrs"
GPU = "nvidia.com/gpu"
GPU_SELECTOR = {"role": "ml-inference"}
GPU_TOLERATION = {"key": "ml-gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
DEFAULT_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
COMPONENTS = DEFAULT_VALUES["components"]

Objects = list[dict[str, Any]]


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/name"]


def gpu_limit(spec: dict[str, Any]) -> int:
    return sum(int(c["resources"].get("limits", {}).get(GPU, 0)) for c in spec["containers"])


def test_every_object_is_valid_for_kubernetes_1_30_and_later_in_strict_mode(
    rendered: dict[str, Objects], validate: Callable[[dict[str, Any]], list[str]], value_set: str
) -> None:
    objects = rendered[value_set]
    assert objects, "nothing rendered"
    errors = [error for obj in objects for error in validate(obj)]
    assert not errors, "\n".join(errors)
    assert all(o["metadata"]["namespace"] == "edrs" for o in objects), "namespaced objects"


def test_the_validation_refuses_unknown_fields(
    rendered: dict[str, Objects], validate: Callable[[dict[str, Any]], list[str]]
) -> None:
    # A typo must fail, in a built-in kind and in a custom resource alike.
    objects = rendered["everything"]
    deployment = dict(next(iter(of_kind(objects, "Deployment").values())))
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    monitor = dict(next(iter(of_kind(objects, "ServiceMonitor").values())))
    monitor["spec"] = {**monitor["spec"], "endpoint": []}
    assert validate(deployment) and validate(monitor)


def test_the_defaults_render_every_fleet_service_and_nothing_else(
    rendered: dict[str, Objects],
) -> None:
    deployments = of_kind(rendered["defaults"], "Deployment")
    assert sorted(component(d) for d in deployments.values()) == sorted(service_names())
    assert sorted(COMPONENTS) == sorted(service_names())


def test_gpu_pods_land_only_on_the_ml_inference_pool(
    rendered: dict[str, Objects], merged_values: dict[str, dict[str, Any]], value_set: str
) -> None:
    deployments = of_kind(rendered[value_set], "Deployment").values()
    gpu_pods = [d for d in deployments if gpu_limit(pod_spec(d))]
    for deployment in deployments:
        spec = pod_spec(deployment)
        tolerations = spec.get("tolerations", [])
        selector = spec.get("nodeSelector", {})
        if gpu_limit(spec):
            assert selector.get("role") == "ml-inference", deployment["metadata"]["name"]
            assert GPU_TOLERATION in tolerations, deployment["metadata"]["name"]
            # Requests equal limits for extended resources; both must name the GPU.
            for container in spec["containers"]:
                limits = container["resources"].get("limits", {})
                if GPU in limits:
                    assert container["resources"]["requests"][GPU] == limits[GPU]
        else:
            assert not [t for t in tolerations if t.get("key") == "ml-gpu"], (
                f"{deployment['metadata']['name']} tolerates the GPU taint without a GPU"
            )
            assert selector.get("role") != "ml-inference"
    if merged_values[value_set]["components"]["reasoning"]["gpu"]["enabled"]:
        assert [component(d) for d in gpu_pods] == ["reasoning"]
    else:
        assert not gpu_pods


def test_every_container_runs_locked_down_with_resources_and_three_probes(
    rendered: dict[str, Objects], value_set: str
) -> None:
    for deployment in of_kind(rendered[value_set], "Deployment").values():
        spec = pod_spec(deployment)
        name = deployment["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["path"].startswith("/health"), where
            if container["name"] == component(deployment):
                assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
                assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveness"
                assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                assert ports == {"grpc": 50051, "http": 8080, "metrics": 8081}, where
            # The root filesystem is read-only: /tmp is the writable place.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where


def test_every_component_has_its_pdb_network_policy_account_and_autoscaler(
    rendered: dict[str, Objects], merged_values: dict[str, dict[str, Any]], value_set: str
) -> None:
    objects = rendered[value_set]
    values = merged_values[value_set]
    for name in (n for n, c in values["components"].items() if c["enabled"]):
        full = f"edrs-{name}"
        for kind in ("Deployment", "Service", "ServiceAccount", "ConfigMap"):
            assert full in of_kind(objects, kind), f"{kind} {full}"
        assert full in of_kind(objects, "PodDisruptionBudget"), f"PDB {full}"
        assert full in of_kind(objects, "NetworkPolicy"), f"NetworkPolicy {full}"
        autoscaling = {
            **values["defaults"]["autoscaling"],
            **values["components"][name].get("autoscaling", {}),
        }
        assert (full in of_kind(objects, "HorizontalPodAutoscaler")) == autoscaling["enabled"]
        if values["monitoring"]["serviceMonitor"]["enabled"]:
            assert full in of_kind(objects, "ServiceMonitor")
        if values["monitoring"]["dashboards"]["enabled"]:
            dashboard = of_kind(objects, "ConfigMap")[f"{full}-dashboard"]
            board = json.loads(dashboard["data"][f"edrs-{name}.json"])
            assert board["uid"] == f"edrs-{name}"
            for panel in board["panels"][:4]:
                assert all(f'service="{name}"' in t["expr"] for t in panel["targets"]), panel[
                    "title"
                ]
    # The default deny covers every pod of the release.
    deny = of_kind(objects, "NetworkPolicy")["edrs-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny


def selects(peer: dict[str, Any], name: str) -> bool:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == name


def test_the_chart_declares_the_calls_the_code_makes(
    code_calls: Callable[[str], frozenset[str]],
) -> None:
    # A peer call the chart does not know is a call its NetworkPolicy would drop.
    for name, comp in COMPONENTS.items():
        assert set(comp.get("calls", [])) == code_calls(name), name


@pytest.mark.parametrize("flows_set", ["defaults", "everything"])
def test_network_policies_open_exactly_the_flows_the_fleet_has(
    rendered: dict[str, Objects], flows_set: str
) -> None:
    objects = rendered[flows_set]
    policies = of_kind(objects, "NetworkPolicy")
    config = of_kind(objects, "ConfigMap")
    for name, comp in COMPONENTS.items():
        spec = policies[f"edrs-{name}"]["spec"]
        calls = set(comp.get("calls", []))
        egress_peers = {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for rule in spec["egress"]
            for p in rule["to"]
            if "podSelector" in p and "namespaceSelector" not in p
        }
        # Every component but the gateway also reaches the gateway's HTTP port: the fleet JWKS
        # its identity tokens are verified with, named by its JWKS_URL.
        jwks = {"gateway"} if name != "gateway" else set()
        assert egress_peers == calls | jwks, name
        data = config[f"edrs-{name}"]["data"]
        assert data.get(f"EDRS_{name.upper()}_JWKS_URL") == (
            "http://edrs-gateway:8080/api/v1/.well-known/fleet-jwks.json" if jwks else None
        ), name
        callers = {n for n, c in COMPONENTS.items() if name in c.get("calls", [])}
        grpc_from = {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for rule in spec["ingress"]
            if {"port": "grpc", "protocol": "TCP"} in rule["ports"]
            for p in rule["from"]
        }
        assert grpc_from == callers, name
        public = any({"port": "http", "protocol": "TCP"} in r["ports"] for r in spec["ingress"])
        assert public == bool(comp.get("public")), name
        internet = any("ipBlock" in p for r in spec["egress"] for p in r["to"])
        assert internet == bool(comp.get("internetEgress")) or name == "reasoning", name
        # PEERS names exactly the peers the policy lets it reach.
        peers = json.loads(config[f"edrs-{name}"]["data"][f"EDRS_{name.upper()}_PEERS"])
        assert peers == {p: f"edrs-{p}:50051" for p in calls}, name
        # The components that run workflows get the Temporal frontend; the others do not.
        assert data.get(f"EDRS_{name.upper()}_TEMPORAL_ADDRESS") == (
            "temporal-frontend.edrs-engines.svc.cluster.local:7233"
            if "temporal" in comp.get("engines", [])
            else None
        ), name


def test_secret_settings_come_only_from_secrets(
    rendered: dict[str, Objects], settings_of: Callable[[str], type]
) -> None:
    for value_set, objects in rendered.items():
        assert not of_kind(objects, "Secret"), f"{value_set}: a Secret in the chart"
        configs = of_kind(objects, "ConfigMap")
        for deployment in of_kind(objects, "Deployment").values():
            name = component(deployment)
            settings = settings_of(name)
            secret_fields = {
                f
                for f, info in settings.model_fields.items()
                if f in ("database_url", "redis_url")
                or "SecretStr" in str(info.annotation)
                or info.annotation is SecretStr
            }
            env = {
                e["name"]: e
                for c in pod_spec(deployment)["containers"]
                if c["name"] == name
                for e in c.get("env", [])
            }
            data = configs[f"edrs-{name}"]["data"]
            for field in secret_fields:
                variable = settings.env_name(field)
                assert variable not in data, f"{value_set}: {variable} in a ConfigMap"
                if variable in env:
                    assert "secretKeyRef" in env[variable]["valueFrom"], variable
                    assert "value" not in env[variable], variable


def test_every_setting_the_chart_sets_is_a_real_one_and_every_required_one_is_set(
    rendered: dict[str, Objects],
    settings_of: Callable[[str], type],
    env_names_of: Callable[[str], dict[str, str]],
) -> None:
    configs = of_kind(rendered["everything"], "ConfigMap")
    for name, comp in COMPONENTS.items():
        settings = settings_of(name)
        prefix = f"EDRS_{name.upper()}_"
        by_env = env_names_of(name)
        given = {
            k for k in configs[f"edrs-{name}"]["data"] if k.startswith(("EDRS_", "OTEL_EXPORTER"))
        }
        given |= {prefix + key for key in comp.get("secretKeys", [])}
        unknown = given - set(by_env)
        assert not unknown, f"{name}: {sorted(unknown)} name no setting of {settings.__name__}"
        set_fields = {by_env[variable] for variable in given}
        required = {
            field
            for field, info in settings.model_fields.items()
            if info.is_required() and info.default is PydanticUndefined
        }
        assert required <= set_fields, f"{name}: {sorted(required - set_fields)} not set"
        if settings.uses_redis:
            assert "REDIS_URL" in comp["secretKeys"], f"{name} needs Redis in production"
            assert "redis" in comp["engines"], name
        for field, info in settings.model_fields.items():
            # A secret with a development default must come from the Secret in production.
            if isinstance(info.default, SecretStr):
                assert field.upper() in comp["secretKeys"], f"{name}: {settings.env_name(field)}"


def test_external_secrets_sync_every_key_a_pod_reads(rendered: dict[str, Objects]) -> None:
    objects = rendered["everything"]
    synced = {
        o["spec"]["target"]["name"]: {d["secretKey"] for d in o["spec"]["data"]}
        for o in of_kind(objects, "ExternalSecret").values()
    }
    for deployment in of_kind(objects, "Deployment").values():
        for container in pod_spec(deployment)["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in synced.get(ref["name"], set()), env["name"]


def test_the_alerts_cover_the_slos(rendered: dict[str, Objects]) -> None:
    rule = next(iter(of_kind(rendered["everything"], "PrometheusRule").values()))
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "> 0.2" in alerts["EdrsGatewayLatencyHigh"]["expr"]
    for name in (
        "EdrsHttpErrorRatioHigh",
        "EdrsRpcErrorRatioHigh",
        "EdrsEventLagHigh",
        "EdrsServiceDown",
    ):
        assert name in alerts


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
        (
            {"components": {"gateway": {"replica": 3}}},
            "additional properties 'replica' not allowed",
        ),
        ({"defaults": {"replicas": "two"}}, "got string, want integer"),
        ({"components": {"reasoning": {"gpu": {"enabled": "yes"}}}}, "got string, want boolean"),
        ({"secrets": {"provider": "inline"}}, "secrets/provider"),
        ({"components": {"gateway": {"env": {"key_secret": "x"}}}}, "key_secret"),
    ],
)
def test_values_schema_refuses_unknown_keys_and_bad_types(
    chart: helm_python.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        chart.render(values, name="edrs", namespace="edrs")
    assert complaint in str(refused.value)


@pytest.mark.parametrize("where", ["global", "component"])
def test_only_gpu_components_may_tolerate_the_gpu_taint(
    chart: helm_python.Chart, where: str
) -> None:
    toleration = [{"key": "ml-gpu", "operator": "Exists", "effect": "NoSchedule"}]
    values = (
        {"global": {"tolerations": toleration}}
        if where == "global"
        else {"components": {"persona": {"tolerations": toleration}}}
    )
    with pytest.raises(helm_python.HelmRenderError, match="reserved for GPU components"):
        chart.render(values, name="edrs", namespace="edrs")


def test_scheduling_merge_rules(render: Callable[[dict[str, Any]], Objects]) -> None:
    values = {
        "global": {
            "nodeSelector": {"role": "general", "zone-class": "standard"},
            "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        },
        "components": {
            "memory": {
                "nodeSelector": {"role": "memory"},
                "tolerations": [{"key": "memory", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
                },
                "resources": {"limits": {"memory": "3Gi"}},
                "autoscaling": {"enabled": False},
            },
            "reasoning": {"gpu": {"enabled": True}, "nodeSelector": {"role": "memory"}},
        },
    }
    deployments = {component(d): d for d in of_kind(render(values), "Deployment").values()}
    memory = pod_spec(deployments["memory"])
    assert memory["nodeSelector"] == {"role": "memory", "zone-class": "standard"}
    assert [t["key"] for t in memory["tolerations"]] == ["spot", "memory"]
    assert set(memory["affinity"]) == {"nodeAffinity", "podAntiAffinity"}
    resources = memory["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "1", "memory": "3Gi"}
    assert deployments["memory"]["spec"]["replicas"] == 2
    # GPU placement wins over anything a component or the globals say.
    reasoning = pod_spec(deployments["reasoning"])
    assert reasoning["nodeSelector"]["role"] == "ml-inference"
    assert [t["key"] for t in reasoning["tolerations"]] == ["spot", "ml-gpu"]
    persona = pod_spec(deployments["persona"])
    assert persona["nodeSelector"] == {"role": "general", "zone-class": "standard"}


def test_helm_lint_finds_nothing_to_warn_about() -> None:
    report = helm_python.lint(CHART, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    # Severity 1 is information (e.g. "icon is recommended"); 2 and up are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_a_settings_change_rolls_only_that_components_pods(
    render: Callable[[dict[str, Any]], Objects],
) -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        return {
            component(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in of_kind(render(values), "Deployment").values()
        }

    before = checksums({})
    after = checksums({"components": {"memory": {"env": {"RECALL_CANDIDATES": 80}}}})
    assert {name for name in before if before[name] != after[name]} == {"memory"}


# A service key is parsed at start-up (an Ed25519 key), so its stand-in must be one.
_STAND_IN = Ed25519PrivateKey.generate()
STAND_IN_SERVICE_KEY = private_key_pem(_STAND_IN)
STAND_IN_PUBLIC_KEY = public_key_pem(_STAND_IN.public_key())


def test_each_services_settings_accept_what_its_pod_gets(
    rendered: dict[str, Objects],
    merged_values: dict[str, dict[str, Any]],
    settings_of: Callable[[str], type],
    value_set: str,
) -> None:
    # The ConfigMap as rendered, plus a stand-in for each secret key (the real values live in the
    # Secret): the service's own settings class must load from that environment.
    objects = rendered[value_set]
    configs = of_kind(objects, "ConfigMap")
    for deployment in of_kind(objects, "Deployment").values():
        name = component(deployment)
        (container,) = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
        environment = dict(configs[container["envFrom"][0]["configMapRef"]["name"]]["data"])
        for env in container.get("env", []):
            environment[env["name"]] = (
                "postgresql://edrs:x@db:5432/edrs"
                if env["name"].endswith("_DATABASE_URL")
                else "redis://cache:6379/0"
                if env["name"].endswith("_REDIS_URL")
                else STAND_IN_SERVICE_KEY
                if env["name"].endswith("_SERVICE_KEY")
                else json.dumps({"persona": STAND_IN_PUBLIC_KEY})
                if env["name"].endswith("_SERVICE_KEYS")
                else "a-stand-in-secret-of-more-than-32-characters"
            )
        with pytest.MonkeyPatch.context() as patch:
            for variable in [v for v in os.environ if v.startswith(("EDRS_", "OTEL_"))]:
                patch.delenv(variable)
            for variable, value in environment.items():
                patch.setenv(variable, value)
            loaded = load_settings(settings_of(name))
        assert loaded.environment == merged_values[value_set]["global"]["environment"], name
        assert loaded.host == "0.0.0.0" and loaded.grpc_port == 50051, name


def test_the_gateway_ingress_reaches_its_http_port_only_if_public(
    rendered: dict[str, Objects], chart: helm_python.Chart
) -> None:
    (ingress,) = of_kind(rendered["everything"], "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "edrs-gateway", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "edrs-api-tls"
    assert not of_kind(rendered["defaults"], "Ingress")
    private = {
        "components": {
            "memory": {"ingress": {"enabled": True, "className": "nginx", "host": "m.example.com"}}
        }
    }
    with pytest.raises(helm_python.HelmRenderError, match=r"needs components\.memory\.public"):
        chart.render(private, name="edrs", namespace="edrs")


def test_an_explicit_false_or_zero_overrides_the_default(
    render: Callable[[dict[str, Any]], Objects],
) -> None:
    values = {
        "global": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "a", "operator": "Exists"}]}
                        ]
                    }
                }
            }
        },
        "components": {
            "task": {
                "podDisruptionBudget": {"maxUnavailable": 0},
                "topologySpread": {"enabled": False},
                "terminationGracePeriodSeconds": 0,
                "affinity": {
                    "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
                },
            }
        },
    }
    objects = render(values)
    assert of_kind(objects, "PodDisruptionBudget")["edrs-task"]["spec"]["maxUnavailable"] == 0
    spec = pod_spec(of_kind(objects, "Deployment")["edrs-task"])
    assert "topologySpreadConstraints" not in spec
    assert spec["terminationGracePeriodSeconds"] == 0
    # The component's nodeAffinity replaces the global one; it is not merged into it.
    assert spec["affinity"] == {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    }
