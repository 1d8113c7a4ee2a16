# A private, regional GKE cluster for EDRS on the community module
# (terraform-google-modules/kubernetes-engine), with the node pools of ../node-pools. The GPU pool
# gets accelerators, and GKE installs the NVIDIA driver (gpu_driver_version) and device plugin.
module "pools" {
  source = "../node-pools"
}

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "nodes" {
  project                  = var.project_id
  name                     = "${var.name}-nodes"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Nothing reaches the nodes from outside unless a rule of higher priority allows it (GKE adds
# its own, at priority 1000, for the control plane and load balancer health checks).
resource "google_compute_firewall" "deny_ingress" {
  project   = var.project_id
  name      = "${var.name}-deny-ingress"
  network   = google_compute_network.this.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Private nodes reach the internet (model downloads, web research) through Cloud NAT.
resource "google_compute_router" "nat" {
  project = var.project_id
  name    = "${var.name}-nat"
  region  = var.region
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "nat" {
  project                            = var.project_id
  name                               = "${var.name}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

module "gke" {
  source  = "terraform-google-modules/kubernetes-engine/google//modules/private-cluster"
  version = "~> 36.3"

  project_id         = var.project_id
  name               = var.name
  region             = var.region
  zones              = var.zones
  kubernetes_version = var.kubernetes_version
  release_channel    = "REGULAR"

  network           = google_compute_network.this.name
  subnetwork        = google_compute_subnetwork.nodes.name
  ip_range_pods     = "pods"
  ip_range_services = "services"

  enable_private_nodes       = true
  enable_private_endpoint    = false
  master_ipv4_cidr_block     = var.master_ipv4_cidr_block
  master_authorized_networks = var.master_authorized_networks

  # Dataplane V2 enforces the chart's NetworkPolicies.
  datapath_provider        = "ADVANCED_DATAPATH"
  network_policy           = false
  enable_shielded_nodes    = true
  identity_namespace       = "enabled"
  remove_default_node_pool = true
  deletion_protection      = true

  node_pools = [
    for name, pool in module.pools.pools : merge(
      {
        name               = name
        machine_type       = var.node_pools[name].machine_type
        min_count          = var.node_pools[name].min_count
        max_count          = var.node_pools[name].max_count
        disk_size_gb       = var.node_pools[name].disk_size_gb
        disk_type          = "pd-balanced"
        image_type         = "COS_CONTAINERD"
        auto_repair        = true
        auto_upgrade       = true
        enable_secure_boot = true
      },
      pool.gpu ? {
        accelerator_count  = var.gpus_per_node
        accelerator_type   = var.gpu_type
        gpu_driver_version = "LATEST"
      } : {}
    )
  ]

  node_pools_labels = { for name, pool in module.pools.pools : name => pool.labels }
  node_pools_taints = { for name, pool in module.pools.pools : name => pool.taints }
}
