{{/*
Helpers shared by the one template set. Every template loops over `components` and asks
"edrs.component" for the merged settings of one component, so the merge rules written at the
top of values.yaml live here and nowhere else.
*/}}

{{/* The ml-inference pool, as terraform/ creates it: the only place GPU pods may run. */}}
{{- define "edrs.gpuNodeSelector" -}}
role: ml-inference
{{- end -}}
{{- define "edrs.gpuToleration" -}}
key: ml-gpu
operator: Equal
value: "true"
effect: NoSchedule
{{- end -}}

{{- define "edrs.name" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edrs.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "edrs.labels" -}}
{{ include "edrs.selectorLabels" . }}
app.kubernetes.io/part-of: edrs
app.kubernetes.io/component: {{ .name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Labels every pod of the release carries: the default-deny policy selects them. */}}
{{- define "edrs.releaseSelector" -}}
app.kubernetes.io/part-of: edrs
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
`over` merged onto `base`, maps key by key, any other value replacing the base's: an explicit
false or 0 in `over` wins (sprig's mergeOverwrite would keep the base's true or 1). Called with
(list base over); returns YAML for fromYaml.
*/}}
{{- define "edrs.merge" -}}
{{- $out := deepCopy (index . 0) -}}
{{- range $key, $value := index . 1 -}}
{{- if and (kindIs "map" $value) (hasKey $out $key) (kindIs "map" (get $out $key)) -}}
{{- $_ := set $out $key (fromYaml (include "edrs.merge" (list (get $out $key) $value))) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
One component's settings: `defaults` under the component's own keys, with the scheduling merge
rules applied. Called with (dict "root" $ "name" $name "c" $comp); returns YAML for fromYaml.
*/}}
{{- define "edrs.component" -}}
{{- $root := .root -}}
{{- $own := .c -}}
{{- $m := fromYaml (include "edrs.merge" (list $root.Values.defaults $own)) -}}
{{- $gpu := and (hasKey $own "gpu") $own.gpu.enabled -}}
{{- $_ := set $m "gpuEnabled" $gpu -}}
{{- $_ := set $m "vllmEnabled" (and $gpu (hasKey $own.gpu "vllm")) -}}
{{- range $t := concat $root.Values.global.tolerations (default (list) $own.tolerations) -}}
{{- if eq (toString $t.key) "ml-gpu" -}}
{{- fail (printf "component %s: the ml-gpu toleration is reserved for GPU components; set components.%s.gpu.enabled instead" $.name $.name) -}}
{{- end -}}
{{- end -}}
{{- $selector := merge (deepCopy (default (dict) $own.nodeSelector)) $root.Values.global.nodeSelector -}}
{{- $tolerations := concat $root.Values.global.tolerations (default (list) $own.tolerations) -}}
{{- if $gpu -}}
{{- $selector = merge (fromYaml (include "edrs.gpuNodeSelector" .)) $selector -}}
{{- $tolerations = append $tolerations (fromYaml (include "edrs.gpuToleration" .)) -}}
{{- end -}}
{{- /* affinity: the component's top-level keys replace the global ones of the same name. */ -}}
{{- $affinity := deepCopy $root.Values.global.affinity -}}
{{- range $key, $value := default (dict) $own.affinity -}}
{{- $_ := set $affinity $key $value -}}
{{- end -}}
{{- $_ := set $m "nodeSelector" $selector -}}
{{- $_ := set $m "tolerations" $tolerations -}}
{{- $_ := set $m "affinity" $affinity -}}
{{- $_ := set $m "internetEgress" (or (default false $own.internetEgress) $m.vllmEnabled) -}}
{{- toYaml $m -}}
{{- end -}}

{{/* The components that call `name` over gRPC. */}}
{{- define "edrs.callers" -}}
{{- $callers := list -}}
{{- range $other, $c := .root.Values.components -}}
{{- if and $c.enabled (has $.name (default (list) $c.calls)) -}}
{{- $callers = append $callers $other -}}
{{- end -}}
{{- end -}}
{{- toJson $callers -}}
{{- end -}}

{{- define "edrs.image" -}}
{{- $g := .root.Values.global.image -}}
{{- $tag := default .root.Chart.AppVersion $g.tag -}}
{{- printf "%s/edrs-%s:%s" $g.registry .name $tag -}}
{{- end -}}

{{- define "edrs.secretName" -}}
{{- default (include "edrs.name" .) .c.secretName -}}
{{- end -}}

{{- define "edrs.envPrefix" -}}
{{- printf "EDRS_%s_" (upper .name) -}}
{{- end -}}

{{/* NetworkPolicy peers of an engine: its own `to`, else every pod of the engines namespace. */}}
{{- define "edrs.enginePeers" -}}
{{- $engine := index .root.Values.engines .engine -}}
{{- if $engine.to -}}
{{- toYaml $engine.to -}}
{{- else -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .root.Values.networkPolicy.enginesNamespace }}
{{- end -}}
{{- end -}}

{{- define "edrs.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A component's non-secret settings: its ConfigMap's data, whose checksum rolls its pods. */}}
{{- define "edrs.configData" -}}
{{- $root := .root -}}
{{- $c := fromYaml (include "edrs.component" .) -}}
{{- $prefix := include "edrs.envPrefix" . -}}
{{- $peers := dict -}}
{{- range $peer := default (list) $c.calls -}}
{{- $_ := set $peers $peer (printf "%s:50051" (include "edrs.name" (dict "root" $root "name" $peer))) -}}
{{- end -}}
EDRS_ENVIRONMENT: {{ $root.Values.global.environment | quote }}
{{ $prefix }}HOST: "0.0.0.0"
{{ $prefix }}GRPC_PORT: "50051"
{{ $prefix }}HTTP_PORT: "8080"
{{ $prefix }}METRICS_PORT: "8081"
{{ $prefix }}BUS_URL: {{ $root.Values.engines.nats.url | quote }}
{{ $prefix }}PEERS: {{ toJson $peers | quote }}
{{- if has "temporal" (default (list) $c.engines) }}
{{ $prefix }}TEMPORAL_ADDRESS: {{ $root.Values.engines.temporal.address | quote }}
{{ $prefix }}TEMPORAL_NAMESPACE: {{ $root.Values.engines.temporal.namespace | quote }}
{{- end }}
{{- if and (ne .name "gateway") $root.Values.components.gateway.enabled }}
{{- /* Identity tokens on every gRPC call are verified with the gateway's fleet JWKS. */}}
{{ $prefix }}JWKS_URL: {{ printf "http://%s:8080/api/v1/.well-known/fleet-jwks.json" (include "edrs.name" (dict "root" $root "name" "gateway")) | quote }}
{{- end }}
{{- with $root.Values.engines.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
OTEL_SERVICE_NAME: {{ printf "edrs-%s" .name | quote }}
# The root filesystem is read-only: caches go to the /tmp volume.
HOME: /tmp
{{- if $c.vllmEnabled }}
# GPU mode: the vLLM server in the same pod is the OpenAI-compatible backend.
{{ $prefix }}BACKEND: openai
{{ $prefix }}OPENAI_BASE_URL: http://127.0.0.1:8000/v1
{{ $prefix }}OPENAI_MODEL: {{ $c.gpu.vllm.servedModelName | quote }}
{{- end }}
{{- range $key, $value := $root.Values.global.env }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- range $key, $value := default (dict) $c.env }}
{{ $prefix }}{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
