{{/* Object names: <release>-forensic-capture, or the release name when it already contains the chart name. */}}
{{- define "forensic-capture.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "forensic-capture.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pods of this release; never changes across upgrades (Deployment selectors are immutable). */}}
{{- define "forensic-capture.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forensic-capture.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "forensic-capture.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "forensic-capture.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "forensic-capture.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "forensic-capture.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "forensic-capture.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces holding the controller's Leases: its own (per-instance locks) and the leader Lease's. */}}
{{- define "forensic-capture.leaseNamespaces" -}}
{{- $namespaces := list .Release.Namespace -}}
{{- if .Values.controller.leaderElection.enabled -}}
{{- $namespaces = append $namespaces (default .Release.Namespace .Values.controller.leaderElection.namespace) -}}
{{- end -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}
