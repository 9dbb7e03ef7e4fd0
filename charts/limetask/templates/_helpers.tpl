{{/*
The chart name, or nameOverride.
*/}}
{{- define "limetask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the chart's resources: fullnameOverride, or "<release>-<name>" (just the release
name when it already contains the chart name), truncated to 63 characters (the DNS label limit).
*/}}
{{- define "limetask.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRoles and their bindings) share one name space for the whole
cluster: the release namespace keeps two releases of the same name apart.
*/}}
{{- define "limetask.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "limetask.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "limetask.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of an object of one component (operator or web): (list $ "operator").
*/}}
{{- define "limetask.componentLabels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "limetask.chart" $root }}
{{ include "limetask.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: limetask
{{- end }}

{{/*
Labels that select one component's pods (immutable in a Deployment: never add to them).
*/}}
{{- define "limetask.componentSelectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "limetask.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Labels of every object of the operator (and of the CRD and the broker and archive Secrets).
*/}}
{{- define "limetask.labels" -}}
{{- include "limetask.componentLabels" (list . "operator") }}
{{- end }}

{{/*
Labels that select the operator's pods.
*/}}
{{- define "limetask.selectorLabels" -}}
{{- include "limetask.componentSelectorLabels" (list . "operator") }}
{{- end }}

{{/*
Labels of the web endpoint's objects, and those that select its pods.
*/}}
{{- define "limetask.webLabels" -}}
{{- include "limetask.componentLabels" (list . "web") }}
{{- end }}

{{- define "limetask.webSelectorLabels" -}}
{{- include "limetask.componentSelectorLabels" (list . "web") }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "limetask.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "limetask.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches, one per line; none in cluster scope.
*/}}
{{- define "limetask.watchedNamespaces" -}}
{{- if eq .Values.watch.scope "namespaces" }}
{{- if .Values.watch.namespaces }}
{{- range .Values.watch.namespaces }}
{{ . }}
{{- end }}
{{- else }}
{{ .Release.Namespace }}
{{- end }}
{{- end }}
{{- end }}

{{/*
An image reference from repository, tag (default: appVersion) and an optional digest.
*/}}
{{- define "limetask.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
The broker Secret's name and key, when a broker is configured.
*/}}
{{- define "limetask.brokerSecretName" -}}
{{- if .Values.broker.existingSecret.name }}
{{- .Values.broker.existingSecret.name }}
{{- else if .Values.broker.url }}
{{- printf "%s-broker" (include "limetask.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "limetask.brokerSecretKey" -}}
{{- if .Values.broker.existingSecret.name }}
{{- .Values.broker.existingSecret.key }}
{{- else }}
{{- "url" }}
{{- end }}
{{- end }}

{{/*
The archive Secret's name and key, when the archive is configured.
*/}}
{{- define "limetask.archiveSecretName" -}}
{{- if .Values.archive.existingSecret.name }}
{{- .Values.archive.existingSecret.name }}
{{- else if .Values.archive.url }}
{{- printf "%s-archive" (include "limetask.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "limetask.archiveSecretKey" -}}
{{- if .Values.archive.existingSecret.name }}
{{- .Values.archive.existingSecret.key }}
{{- else }}
{{- "url" }}
{{- end }}
{{- end }}

{{/*
A checksum of the archive settings: a new URL restarts the pods that read it at start.
*/}}
{{- define "limetask.archiveChecksum" -}}
{{- printf "%s|%s|%s" .Values.archive.url .Values.archive.existingSecret.name .Values.archive.existingSecret.key | sha256sum }}
{{- end }}

{{/*
The restricted security context of a container (Pod Security Standard "restricted"), running
as the given user and group: (list $ 10001).
*/}}
{{- define "limetask.restrictedSecurityContext" -}}
{{- $uid := index . 1 | int64 -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ $uid }}
runAsGroup: {{ $uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The restricted security context of the operator container.
*/}}
{{- define "limetask.containerSecurityContext" -}}
{{- include "limetask.restrictedSecurityContext" (list . 10001) }}
{{- end }}

{{/*
The web endpoint: its name (Deployment, ServiceAccount, Role, RoleBinding, Service), the Secret
with its tokens, and its image (by default the runner image, which holds the solution's tasks).
*/}}
{{- define "limetask.webFullname" -}}
{{- printf "%s-web" (include "limetask.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}

{{- /* Cluster-scoped: the binding of the endpoint's ServiceAccount to system:auth-delegator. */}}
{{- define "limetask.webAuthName" -}}
{{- printf "%s-web-auth" (include "limetask.clusterName" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "limetask.webTokensSecretName" -}}
{{- if .Values.web.tokens.existingSecret }}
{{- .Values.web.tokens.existingSecret }}
{{- else }}
{{- printf "%s-web-tokens" (include "limetask.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "limetask.webImage" -}}
{{- $web := .Values.web.image }}
{{- $tag := $web.tag }}
{{- if and (not $web.repository) (not $tag) }}
{{- $tag = .Values.runner.image.tag }}
{{- end }}
{{- $image := dict "repository" (default .Values.runner.image.repository $web.repository) "tag" $tag "digest" $web.digest }}
{{- include "limetask.image" (list $image .) }}
{{- end }}

{{/*
Whether the release namespace, where the web endpoint creates its LimeTasks, is watched by
this release's operator: "true" or "".
*/}}
{{- define "limetask.releaseNamespaceWatched" -}}
{{- $namespaces := include "limetask.watchedNamespaces" . | trim | splitList "\n" | compact }}
{{- if or (eq .Values.watch.scope "cluster") (has .Release.Namespace $namespaces) }}true{{ end }}
{{- end }}

{{/*
The web endpoint's values, checked when it is enabled (the schema checks each one alone).
*/}}
{{- define "limetask.web.validate" -}}
{{- if not .Values.web.imports }}
{{- fail "web.imports is required when web.enabled is true: the modules whose @task functions the endpoint may start, e.g. --set 'web.imports={acme_solution.tasks.lime}'" }}
{{- end }}
{{- if and .Values.web.tokens.existingSecret .Values.web.tokens.values }}
{{- fail "web.tokens: set either web.tokens.existingSecret or web.tokens.values, not both" }}
{{- end }}
{{- $owners := dict }}
{{- range $app, $token := .Values.web.tokens.values }}
{{- if hasKey $owners (toString $token) }}
{{- fail (printf "web.tokens.values: %s and %s have the same token: give each application its own" (get $owners (toString $token)) $app) }}
{{- end }}
{{- $_ := set $owners (toString $token) $app }}
{{- end }}
{{- if not (or .Values.web.tokens.existingSecret .Values.web.tokens.values) }}
{{- fail "web.tokens is required when web.enabled is true: set web.tokens.existingSecret (a Secret whose keys are application names and values their tokens) or web.tokens.values (application: token)" }}
{{- end }}
{{- end }}

{{/*
The operator's metrics Service (the job label a ServiceMonitor gives its series, which the
alerts select on).
*/}}
{{- define "limetask.metricsServiceName" -}}
{{- printf "%s-metrics" (include "limetask.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
The label matchers that pick this release's operator series in PromQL: its namespace and job.
*/}}
{{- define "limetask.metricsSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "limetask.metricsServiceName" . }}"
{{- end }}

{{/*
NetworkPolicy ports of one protocol, as a list: (list "TCP" $ports).
*/}}
{{- define "limetask.networkPolicyPorts" -}}
{{- $ports := list }}
{{- range index . 1 }}
{{- $ports = append $ports (dict "port" (int64 .) "protocol" (index $ 0)) }}
{{- end }}
{{- toYaml $ports }}
{{- end }}

{{/*
The egress both components need: the API server, DNS, and the archive when it is configured.
*/}}
{{- define "limetask.networkPolicyCommonEgress" -}}
{{- $np := .Values.networkPolicy -}}
# The API server: not a pod, so its addresses (or any address) on its ports.
- ports:
    {{- include "limetask.networkPolicyPorts" (list "TCP" $np.apiServer.ports) | nindent 4 }}
  {{- with $np.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . | quote }}
    {{- end }}
  {{- end }}
# DNS: host names (the broker's, the archive's).
- ports:
    {{- include "limetask.networkPolicyPorts" (list "UDP" (list 53)) | nindent 4 }}
    {{- include "limetask.networkPolicyPorts" (list "TCP" (list 53)) | nindent 4 }}
  to:
    {{- if $np.dns.to }}
    {{- toYaml $np.dns.to | nindent 4 }}
    {{- else }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
    {{- end }}
{{- if include "limetask.archiveSecretName" . }}
# The archive (PostgreSQL).
- ports:
    {{- include "limetask.networkPolicyPorts" (list "TCP" $np.archive.ports) | nindent 4 }}
  {{- with $np.archive.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
A Prometheus duration (1h30m, 30s, 500ms; the schema checks its form) in seconds.
*/}}
{{- define "limetask.durationSeconds" -}}
{{- $seconds := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 "y" 31536000.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" . -1 }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- $total = addf $total (mulf (regexFind "^[0-9]+" . | float64) (get $seconds $unit)) }}
{{- end }}
{{- $total }}
{{- end }}
