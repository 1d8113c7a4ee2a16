output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.eks.cluster_endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the API endpoint."
  value       = module.eks.cluster_certificate_authority_data
}

output "vpc_id" {
  description = "The cluster's VPC."
  value       = module.vpc.vpc_id
}

output "private_subnets" {
  description = "Private subnets (managed databases go here)."
  value       = module.vpc.private_subnets
}

output "node_pools" {
  description = "Labels and taints of each node pool, as the chart expects them."
  value       = module.pools.pools
}
