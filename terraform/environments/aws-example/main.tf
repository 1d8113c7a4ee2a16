# Example environment: an EDRS cluster on AWS. Copy this folder per environment, set the backend
# and the variables, then `terraform init && terraform apply` (docs/deployment.md).
terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.95, < 6.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.17, < 3.0"
    }
  }
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "edrs/prod/terraform.tfstate"
  #   region       = "eu-west-1"
  #   use_lockfile = true
  # }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "admin_cidrs" {
  description = "Networks that may reach the Kubernetes API (your office or VPN)."
  type        = list(string)
}

provider "aws" {
  region = var.region
}

module "cluster" {
  source = "../../modules/eks"

  name                         = "edrs-prod"
  availability_zones           = ["${var.region}a", "${var.region}b", "${var.region}c"]
  endpoint_public_access_cidrs = var.admin_cidrs
  tags                         = { project = "edrs", environment = "prod" }
}

provider "helm" {
  kubernetes {
    host                   = module.cluster.cluster_endpoint
    cluster_ca_certificate = base64decode(module.cluster.cluster_certificate_authority_data)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.cluster.cluster_name, "--region", var.region]
    }
  }
}

# The NVIDIA device plugin advertises nvidia.com/gpu on the ml-inference nodes (the AMI has the
# driver); it tolerates the pool's taint and runs nowhere else.
resource "helm_release" "nvidia_device_plugin" {
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = "0.17.1"
  namespace        = "nvidia-device-plugin"
  create_namespace = true

  values = [yamlencode({
    nodeSelector = { role = "ml-inference" }
    tolerations  = [{ key = "ml-gpu", operator = "Equal", value = "true", effect = "NoSchedule" }]
  })]
}

output "kubeconfig_command" {
  description = "Run this to talk to the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.cluster.cluster_name}"
}
