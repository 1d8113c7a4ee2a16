output "cluster_name" {
  description = "GKE cluster name (gcloud container clusters get-credentials ...)."
  value       = module.gke.name
}

output "endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.gke.endpoint
  sensitive   = true
}

output "ca_certificate" {
  description = "CA certificate of the API endpoint."
  value       = module.gke.ca_certificate
  sensitive   = true
}

output "network" {
  description = "The cluster's VPC network."
  value       = google_compute_network.this.name
}

output "node_pools" {
  description = "Labels and taints of each node pool, as the chart expects them."
  value       = module.pools.pools
}
