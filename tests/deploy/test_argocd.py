"""k8s/: the Argo CD ApplicationSet and AppProject against Argo CD's CRD schemas, the namespaces
against Kubernetes', and the rollout order dev → staging → prod."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def test_every_manifest_in_k8s_is_valid_in_strict_mode(
    validate: Callable[[dict[str, Any]], list[str]],
) -> None:
    manifests = [
        doc
        for name in ("namespaces.yaml", "appproject.yaml", "applicationset.yaml")
        for doc in load(name)
    ]
    assert {m["kind"] for m in manifests} == {"Namespace", "AppProject", "ApplicationSet"}
    errors = [error for manifest in manifests for error in validate(manifest)]
    assert not errors, "\n".join(errors)


def test_the_argo_cd_schemas_refuse_a_mistake(
    validate: Callable[[dict[str, Any]], list[str]],
) -> None:
    (appset,) = load("applicationset.yaml")
    appset["spec"]["strategy"]["rollingSync"]["step"] = []
    (project,) = load("appproject.yaml")
    project["spec"]["destinations"] = "edrs-prod"
    assert validate(appset) and validate(project)


def test_the_rollout_goes_dev_then_staging_then_prod() -> None:
    (appset,) = load("applicationset.yaml")
    spec = appset["spec"]
    assert spec["strategy"]["type"] == "RollingSync"
    order = [
        expression["values"]
        for step in spec["strategy"]["rollingSync"]["steps"]
        for expression in step["matchExpressions"]
    ]
    assert order == [["dev"], ["staging"], ["prod"]]
    # The steps select on the label the template puts on each Application.
    keys = {
        e["key"] for s in spec["strategy"]["rollingSync"]["steps"] for e in s["matchExpressions"]
    }
    assert keys == {"edrs.io/environment"}
    assert spec["template"]["metadata"]["labels"]["edrs.io/environment"] == "{{.env}}"
    environments = [element["env"] for element in spec["generators"][0]["list"]["elements"]]
    assert environments == ["dev", "staging", "prod"]


def test_each_environment_has_its_values_namespace_and_project_destination() -> None:
    (appset,) = load("applicationset.yaml")
    (project,) = load("appproject.yaml")
    namespaces = {n["metadata"]["name"] for n in load("namespaces.yaml")}
    source = appset["spec"]["template"]["spec"]["source"]
    assert source["path"] == "charts/edrs" and (ROOT / source["path"] / "Chart.yaml").is_file()
    destinations = {(d["name"], d["namespace"]) for d in project["spec"]["destinations"]}
    for element in appset["spec"]["generators"][0]["list"]["elements"]:
        env = element["env"]
        (values_file,) = source["helm"]["valueFiles"]
        resolved = (ROOT / source["path"] / values_file.replace("{{.env}}", env)).resolve()
        assert resolved.is_file(), resolved
        assert f"edrs-{env}" in namespaces
        assert (element["cluster"], f"edrs-{env}") in destinations
    assert source["repoURL"] in project["spec"]["sourceRepos"]
    assert appset["spec"]["template"]["spec"]["project"] == project["metadata"]["name"]


def test_the_project_allows_every_kind_the_chart_renders(rendered: dict[str, list[dict]]) -> None:
    (project,) = load("appproject.yaml")
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for objects in rendered.values():
        for obj in objects:
            group = obj["apiVersion"].rpartition("/")[0]
            assert (group, obj["kind"]) in allowed, f"{group} {obj['kind']}"
