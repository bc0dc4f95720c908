{{/* Chart name, overridable. */}}
{{- define "bem-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release named like the chart is not repeated
("bem-operator", not "bem-operator-bem-operator"), so the defaults match manifests/.
*/}}
{{- define "bem-operator.fullname" -}}
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

{{/* Chart label value: name-version. */}}
{{- define "bem-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the chart carries. */}}
{{- define "bem-operator.labels" -}}
helm.sh/chart: {{ include "bem-operator.chart" . }}
{{ include "bem-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bem
{{- end }}

{{/* Labels that select the operator pod; they never change for a release. */}}
{{- define "bem-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bem-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount the operator runs as. */}}
{{- define "bem-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bem-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image, tag defaulting to appVersion. */}}
{{- define "bem-operator.image" -}}
{{- include "bem-operator.requirePinnedTag" (list "image.tag" .Values.image.tag) }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Runtime image the operator uses for BEMServices that do not name one. */}}
{{- define "bem-operator.runtimeImage" -}}
{{- include "bem-operator.requirePinnedTag" (list "runtimeImage.tag" .Values.runtimeImage.tag) }}
{{- printf "%s:%s" .Values.runtimeImage.repository (default .Chart.AppVersion .Values.runtimeImage.tag) }}
{{- end }}

{{/* A moving tag makes upgrades unreproducible; the schema cannot say so clearly, this can. */}}
{{- define "bem-operator.requirePinnedTag" -}}
{{- if eq (index . 1) "latest" }}
{{- fail (printf "%s: 'latest' is not allowed; pin a version such as 0.1.0, or leave it empty for the chart's appVersion" (index . 0)) }}
{{- end }}
{{- end }}

{{/* The leader-election Lease, in the release namespace. */}}
{{- define "bem-operator.leaseName" -}}
{{- default (include "bem-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}
