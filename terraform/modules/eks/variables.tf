variable "name" {
  description = "Cluster name; also names the VPC and prefixes every resource."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (the chart needs 1.30 or later)."
  type        = string
  default     = "1.31"
}

variable "vpc_cidr" {
  description = "CIDR of the cluster's VPC; split into three private and three public subnets."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Three availability zones of the region."
  type        = list(string)
}

variable "endpoint_public_access_cidrs" {
  description = "Who may reach the Kubernetes API from the internet (empty: private endpoint only)."
  type        = list(string)
  default     = []
}

variable "node_pools" {
  description = "Size and instance types per pool; the pools themselves, their labels and taints are fixed (see main.tf)."
  type = map(object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gb   = optional(number, 100)
  }))
  default = {
    system       = { instance_types = ["m6i.large"], min_size = 2, max_size = 3, desired_size = 2 }
    general      = { instance_types = ["m6i.2xlarge"], min_size = 3, max_size = 12, desired_size = 3 }
    memory       = { instance_types = ["r6i.2xlarge"], min_size = 1, max_size = 6, desired_size = 2 }
    ml-inference = { instance_types = ["g5.2xlarge"], min_size = 0, max_size = 4, desired_size = 1, disk_size_gb = 200 }
    database     = { instance_types = ["r6i.2xlarge"], min_size = 3, max_size = 6, desired_size = 3, disk_size_gb = 200 }
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
