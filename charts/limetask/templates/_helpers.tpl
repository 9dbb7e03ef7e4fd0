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
Labels of every object the chart makes.
*/}}
{{- define "limetask.labels" -}}
helm.sh/chart: {{ include "limetask.chart" . }}
{{ include "limetask.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: limetask
{{- end }}

{{/*
Labels that select the operator's pods (immutable in a Deployment: never add to them).
*/}}
{{- define "limetask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "limetask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
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
The restricted security context of the operator container (Pod Security Standard "restricted").
*/}}
{{- define "limetask.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}
