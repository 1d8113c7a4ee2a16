# The node pools of every EDRS cluster, one definition for both clouds: their role labels and
# taints are what the chart schedules by (charts/edrs: GPU components select role=ml-inference
# and tolerate ml-gpu=true:NoSchedule; nothing else tolerates it).
#   system        cluster add-ons (CoreDNS, ingress, Argo CD, monitoring)
#   general       the EDRS services
#   memory        memory-optimised: engines that cache (Redis, NATS, Milvus)
#   ml-inference  GPU nodes, tainted so only GPU components land there
#   database      tainted for the database operators' pods
terraform {
  required_version = ">= 1.6"
}

locals {
  pools = {
    system = {
      labels = { role = "system" }
      taints = []
      gpu    = false
    }
    general = {
      labels = { role = "general" }
      taints = []
      gpu    = false
    }
    memory = {
      labels = { role = "memory" }
      taints = []
      gpu    = false
    }
    ml-inference = {
      labels = { role = "ml-inference" }
      taints = [{ key = "ml-gpu", value = "true", effect = "NO_SCHEDULE" }]
      gpu    = true
    }
    database = {
      labels = { role = "database" }
      taints = [{ key = "dedicated", value = "database", effect = "NO_SCHEDULE" }]
      gpu    = false
    }
  }
}

output "pools" {
  description = "Each pool's labels, taints (effect in the clouds' NO_SCHEDULE spelling) and whether it has GPUs."
  value       = local.pools
}
