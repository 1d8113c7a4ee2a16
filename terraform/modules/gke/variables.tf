variable "project_id" {
  description = "GCP project that holds the cluster."
  type        = string
}

variable "name" {
  description = "Cluster name; also names the network."
  type        = string
}

variable "region" {
  description = "Region of the (regional) cluster."
  type        = string
}

variable "zones" {
  description = "Zones of the node pools; the GPU type must exist in each."
  type        = list(string)
}

variable "kubernetes_version" {
  description = "GKE version prefix, or \"latest\" (the chart needs 1.30 or later)."
  type        = string
  default     = "1.31"
}

variable "subnet_cidr" {
  description = "Primary range of the nodes' subnet."
  type        = string
  default     = "10.50.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pods."
  type        = string
  default     = "10.52.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range for services."
  type        = string
  default     = "10.56.0.0/20"
}

variable "master_ipv4_cidr_block" {
  description = "/28 of the private control plane."
  type        = string
  default     = "172.16.0.0/28"
}

variable "master_authorized_networks" {
  description = "Who may reach the Kubernetes API."
  type        = list(object({ cidr_block = string, display_name = string }))
  default     = []
}

variable "node_pools" {
  description = "Size and machine type per pool; the pools themselves, their labels and taints are fixed (see main.tf)."
  type = map(object({
    machine_type = string
    min_count    = number
    max_count    = number
    disk_size_gb = optional(number, 100)
  }))
  default = {
    system       = { machine_type = "e2-standard-4", min_count = 1, max_count = 3 }
    general      = { machine_type = "n2-standard-8", min_count = 1, max_count = 12 }
    memory       = { machine_type = "n2-highmem-8", min_count = 1, max_count = 6 }
    ml-inference = { machine_type = "g2-standard-8", min_count = 0, max_count = 4, disk_size_gb = 200 }
    database     = { machine_type = "n2-highmem-8", min_count = 1, max_count = 3, disk_size_gb = 200 }
  }
}

variable "gpu_type" {
  description = "Accelerator of the ml-inference pool (nvidia-l4 fits g2 machines)."
  type        = string
  default     = "nvidia-l4"
}

variable "gpus_per_node" {
  description = "Accelerators per ml-inference node."
  type        = number
  default     = 1
}
