# Example environment: an EDRS cluster on Google Cloud. Copy this folder per environment, set the
# backend and the variables, then `terraform init && terraform apply` (docs/deployment.md).
terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 7.0"
    }
  }
  # backend "gcs" {
  #   bucket = "my-terraform-state"
  #   prefix = "edrs/prod"
  # }
}

variable "project_id" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "GCP region; its zones below must offer the GPU type (nvidia-l4)."
  type        = string
  default     = "europe-west4"
}

variable "admin_cidrs" {
  description = "Networks that may reach the Kubernetes API (your office or VPN)."
  type        = list(string)
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "cluster" {
  source = "../../modules/gke"

  project_id                 = var.project_id
  name                       = "edrs-prod"
  region                     = var.region
  zones                      = ["${var.region}-a", "${var.region}-b", "${var.region}-c"]
  master_authorized_networks = [for cidr in var.admin_cidrs : { cidr_block = cidr, display_name = "admin" }]
}

output "kubeconfig_command" {
  description = "Run this to talk to the cluster."
  value       = "gcloud container clusters get-credentials ${module.cluster.cluster_name} --region ${var.region} --project ${var.project_id}"
}
