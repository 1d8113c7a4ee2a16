# An EKS cluster for EDRS on the community modules (terraform-aws-modules/vpc and /eks), with
# the node pools of ../node-pools as managed node groups. The ml-inference group runs the AL2023
# NVIDIA AMI, which carries the driver and container toolkit.
module "pools" {
  source = "../node-pools"
}

locals {
  pools = {
    for name, pool in module.pools.pools : name => {
      labels = pool.gpu ? merge(pool.labels, { "nvidia.com/gpu.present" = "true" }) : pool.labels
      # The EKS module takes taints as a map.
      taints = { for taint in pool.taints : taint.key => taint }
      ami    = pool.gpu ? "AL2023_x86_64_NVIDIA" : "AL2023_x86_64_STANDARD"
    }
  }
  private_subnets = [for i in range(3) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 48 + i)]
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.21"

  name            = var.name
  cidr            = var.vpc_cidr
  azs             = var.availability_zones
  private_subnets = local.private_subnets
  public_subnets  = local.public_subnets

  enable_nat_gateway     = true
  one_nat_gateway_per_az = true
  enable_dns_hostnames   = true

  enable_flow_log                      = true
  create_flow_log_cloudwatch_log_group = true
  create_flow_log_cloudwatch_iam_role  = true

  # Load balancers find their subnets by these tags.
  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }

  tags = var.tags
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.36"

  cluster_name    = var.name
  cluster_version = var.kubernetes_version

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  cluster_endpoint_private_access      = true
  cluster_endpoint_public_access       = length(var.endpoint_public_access_cidrs) > 0
  cluster_endpoint_public_access_cidrs = var.endpoint_public_access_cidrs

  # Secrets encrypted with a KMS key the module creates; control-plane logs kept.
  create_kms_key            = true
  cluster_encryption_config = { resources = ["secrets"] }
  cluster_enabled_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  enable_cluster_creator_admin_permissions = true

  cluster_addons = {
    coredns                = {}
    kube-proxy             = {}
    vpc-cni                = { before_compute = true }
    eks-pod-identity-agent = {}
    aws-ebs-csi-driver     = {}
  }

  eks_managed_node_groups = {
    for name, pool in local.pools : name => {
      name           = "${var.name}-${name}"
      ami_type       = pool.ami
      instance_types = var.node_pools[name].instance_types
      min_size       = var.node_pools[name].min_size
      max_size       = var.node_pools[name].max_size
      desired_size   = var.node_pools[name].desired_size
      disk_size      = var.node_pools[name].disk_size_gb
      labels         = pool.labels
      taints         = pool.taints
      # IMDSv2 only, and pods cannot reach the node's instance role through it.
      metadata_options = {
        http_endpoint               = "enabled"
        http_tokens                 = "required"
        http_put_response_hop_limit = 1
      }
    }
  }

  tags = var.tags
}
