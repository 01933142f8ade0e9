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

{{- /* The OTEL_* environment of the operator and the agent, from .Values.tracing:
       the component's service name, resource attributes, and with an endpoint the
       exporter and sampler (and the operator's choice of reconcile traces). (dict "root" $ "service" "wukong-operator") */ -}}
{{- define "wukong.otelEnv" -}}
- name: OTEL_SERVICE_NAME
  value: {{ .service }}
{{- with .root.Values.tracing.resourceAttributes }}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $pairs | quote }}
{{- end }}
{{- with .root.Values.tracing.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $.root.Values.tracing.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $.root.Values.tracing.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.root.Values.tracing.samplerArg | quote }}
{{- if eq $.service "wukong-operator" }}
- name: WUKONG_TRACES_KEEP_RATIO
  value: {{ $.root.Values.tracing.keepRatio | quote }}
- name: WUKONG_TRACES_KEEP_EVERY
  value: {{ $.root.Values.tracing.keepEvery | quote }}
- name: WUKONG_TRACES_SLOW_SHARE
  value: {{ $.root.Values.tracing.slowShare | quote }}
{{- end }}
{{- end }}
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

{{- /* The webhook's serving certificate when the chart makes it (no
       webhook.existingSecret, no cert-manager), as YAML: ca.crt, tls.crt, tls.key
       (base64). Made once per render and kept in .Values, so the Secret and the
       Deployment's checksum see the same one whichever template renders first.
       An install's Secret is reused (lookup) so `helm upgrade` keeps the CA the
       API server trusts and rolls nothing; where lookup finds nothing (`helm
       template`, a GitOps render, a deleted Secret) a new CA and certificate are
       made, and the checksum, so the pods roll onto them with the new caBundle. */ -}}
{{- define "wukong.webhookCert" -}}
{{- if not (hasKey .Values.webhook "__rendered") -}}
{{- $fullname := include "wukong.fullname" . -}}
{{- $service := printf "%s-webhook" $fullname -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "wukong.webhookSecret" .) -}}
{{- $cert := dict -}}
{{- if and $existing (index ($existing.data | default dict) "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
{{- $cert = dict "ca.crt" (index $existing.data "ca.crt") "tls.crt" (index $existing.data "tls.crt") "tls.key" (index $existing.data "tls.key") -}}
{{- else -}}
{{- $ca := genCA (printf "%s-webhook-ca" $fullname) (int .Values.webhook.certValidityDays) -}}
{{- $names := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- $signed := genSignedCert $service nil $names (int .Values.webhook.certValidityDays) $ca -}}
{{- $cert = dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($signed.Cert | b64enc) "tls.key" ($signed.Key | b64enc) -}}
{{- end -}}
{{- $_ := set .Values.webhook "__rendered" $cert -}}
{{- end -}}
{{- toYaml (get .Values.webhook "__rendered") -}}
{{- end -}}

{{- /* Who makes the webhook's certificate: "chart" (genCA, kept in a Secret),
       "cert-manager" (a Certificate, the CA injected) or "existing" (a Secret made
       elsewhere and webhook.caBundle). */ -}}
{{- define "wukong.webhookCertSource" -}}
{{- if .Values.webhook.certManager.enabled -}}cert-manager
{{- else if .Values.webhook.existingSecret -}}existing
{{- else -}}chart
{{- end -}}
{{- end -}}

{{- /* The Certificate cert-manager's CA injector reads: webhook.certManager.injectCAFrom,
       or the one the chart makes. */ -}}
{{- define "wukong.certManagerCertificate" -}}
{{- default (printf "%s/%s-webhook" .Release.Namespace (include "wukong.fullname" .)) .Values.webhook.certManager.injectCAFrom -}}
{{- end -}}

{{- /* The Secret holding the token the monitors send to a secure /metrics: the
       monitor's tokenSecret, or the one the chart makes for its scraper account. */ -}}
{{- define "wukong.scraperSecret" -}}
{{- printf "%s-metrics-scraper-token" (include "wukong.fullname" .) -}}
{{- end -}}

{{- /* "true" when a monitor sends the chart's scraper token (metrics.secure and a
       monitor without its own tokenSecret). */ -}}
{{- define "wukong.needsScraper" -}}
{{- $m := .Values.monitoring -}}
{{- $service := and $m.serviceMonitor.enabled (not $m.serviceMonitor.tokenSecret.name) -}}
{{- $pods := and .Values.agent.enabled $m.podMonitor.enabled (not $m.podMonitor.tokenSecret.name) -}}
{{- if and .Values.metrics.secure (or $service $pods) -}}true{{- end -}}
{{- end -}}

{{- define "wukong.testSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end -}}
