"""The Terraform parses, and both clusters have the node pools, labels and taints the chart expects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True)
POOLS = {"system", "general", "memory", "ml-inference", "database"}
GPU_TAINT = {"key": "ml-gpu", "value": "true", "effect": "NO_SCHEDULE"}
DATABASE_TAINT = {"key": "dedicated", "value": "database", "effect": "NO_SCHEDULE"}


def unquote(value: Any) -> Any:
    """Map keys that HCL quotes ("nvidia.com/gpu.present") come back with their quotes."""
    if isinstance(value, dict):
        return {k.strip('"'): unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def parse(path: Path) -> dict[str, Any]:
    return unquote(hcl2.loads(path.read_text(), serialization_options=OPTIONS))


def module_dir(name: str) -> dict[str, Any]:
    """Every block of every .tf file in terraform/modules/<name>, merged by block type."""
    merged: dict[str, list[Any]] = {}
    for path in sorted((TERRAFORM / "modules" / name).glob("*.tf")):
        for block, entries in parse(path).items():
            merged.setdefault(block, []).extend(entries)
    return merged


def pools() -> dict[str, Any]:
    """The node pools, as terraform/modules/node-pools defines them for both clouds."""
    (local,) = [entry for entry in module_dir("node-pools")["locals"] if "pools" in entry]
    return local["pools"]


def modules(name: str) -> dict[str, Any]:
    return {k: v for entry in module_dir(name)["module"] for k, v in entry.items()}


def test_every_terraform_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 9
    for path in files:
        assert isinstance(parse(path), dict), path


def test_the_node_pools_carry_the_labels_and_taints_the_chart_schedules_by() -> None:
    found = pools()
    assert set(found) == POOLS
    for name, pool in found.items():
        assert pool["labels"]["role"] == name
        assert pool["gpu"] is (name == "ml-inference"), name
    assert found["ml-inference"]["taints"] == [GPU_TAINT]
    assert found["database"]["taints"] == [DATABASE_TAINT]
    for name in POOLS - {"ml-inference", "database"}:
        assert found[name]["taints"] == [], name


@pytest.mark.parametrize("cloud", ["eks", "gke"])
def test_both_clouds_build_their_node_pools_from_the_one_definition(cloud: str) -> None:
    assert modules(cloud)["pools"]["source"] == "../node-pools"
    sizes = module_dir(cloud)["variable"]
    (node_pools,) = [v["node_pools"] for v in sizes if "node_pools" in v]
    assert set(node_pools["default"]) == POOLS


def test_eks_builds_on_the_community_modules_with_gpu_nodes_and_drivers() -> None:
    found = modules("eks")
    assert found["eks"]["source"] == "terraform-aws-modules/eks/aws"
    assert found["vpc"]["source"] == "terraform-aws-modules/vpc/aws"
    (local,) = [e for e in module_dir("eks")["locals"] if "pools" in e]
    # Every pool of the one definition becomes a managed node group with its labels and taints;
    # the GPU one on the AL2023 NVIDIA AMI, which carries the driver and container toolkit.
    assert "module.pools.pools" in local["pools"]
    assert '"AL2023_x86_64_NVIDIA"' in local["pools"] and "pool.gpu" in local["pools"]
    groups = found["eks"]["eks_managed_node_groups"]
    assert "local.pools" in groups and "pool.labels" in groups and "pool.taints" in groups
    (sizes,) = [v["node_pools"] for v in module_dir("eks")["variable"] if "node_pools" in v]
    assert sizes["default"]["ml-inference"]["instance_types"][0].startswith(("g", "p"))
    assert sizes["default"]["memory"]["instance_types"][0].startswith(("r", "x"))


def test_gke_builds_on_the_community_module_with_gpu_nodes_and_drivers() -> None:
    gke = modules("gke")["gke"]
    assert gke["source"].startswith("terraform-google-modules/kubernetes-engine/google")
    assert "module.pools.pools" in gke["node_pools_labels"]
    assert "module.pools.pools" in gke["node_pools_taints"]
    # The GPU pool alone gets accelerators, with GKE installing the driver.
    node_pools = gke["node_pools"]
    assert "pool.gpu" in node_pools and "accelerator_type" in node_pools
    assert 'gpu_driver_version = "LATEST"' in node_pools
    # NetworkPolicies are enforced (Dataplane V2).
    assert gke["datapath_provider"] == "ADVANCED_DATAPATH"
    resources = {k for entry in module_dir("gke")["resource"] for k in entry}
    assert {"google_compute_network", "google_compute_subnetwork"} <= resources


@pytest.mark.parametrize(("example", "module"), [("aws-example", "eks"), ("gcp-example", "gke")])
def test_each_cloud_has_an_example_environment_using_its_module(example: str, module: str) -> None:
    main = parse(TERRAFORM / "environments" / example / "main.tf")
    (cluster,) = [m["cluster"] for m in main["module"] if "cluster" in m]
    assert cluster["source"] == f"../../modules/{module}"
    assert (TERRAFORM / "environments" / example / "terraform.tfvars.example").is_file()


def terraform_binary() -> str:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine; this check runs where one is")
    return terraform


def test_terraform_evaluates_the_node_pools(tmp_path: Path) -> None:
    # Terraform itself, offline: the node-pools module needs no provider or registry module.
    terraform = terraform_binary()
    source = TERRAFORM / "modules" / "node-pools"
    (tmp_path / "main.tf").write_text(f'module "pools" {{\n  source = "{source}"\n}}\n')
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120, "check": False}
    init = subprocess.run([terraform, "init", "-input=false", "-no-color"], **run)
    assert init.returncode == 0, init.stdout + init.stderr
    console = subprocess.run(
        [terraform, "console", "-no-color"], input="jsonencode(module.pools.pools)\n", **run
    )
    assert console.returncode == 0, console.stderr
    evaluated = json.loads(json.loads(console.stdout.strip()))
    assert evaluated == pools()


def test_terraform_fmt() -> None:
    terraform = terraform_binary()
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
