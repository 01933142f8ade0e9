{{- define "wukong.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wukong.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "wukong.operatorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "wukong.agentSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end -}}

{{- define "wukong.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "wukong.webhookSecret" -}}
{{- default (printf "%s-webhook-cert" (include "wukong.fullname" .)) .Values.webhook.existingSecret -}}
{{- end -}}

{{- /* How /metrics is served: https with metrics.secure (see metrics-rbac.yaml). */ -}}
{{- define "wukong.metricsScheme" -}}
{{- ternary "https" "http" .Values.metrics.secure -}}
{{- end -}}

{{- /* The metrics flags of the operator and the agent. */ -}}
{{- define "wukong.metricsArgs" -}}
{{- if .Values.metrics.secure }}
- --metrics-secure
{{- with .Values.metrics.certSecret }}
- --metrics-cert-dir=/etc/wukong/metrics-certs
{{- end }}
{{- else }}
- --no-metrics-secure
{{- end }}
{{- end -}}
