{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "proofgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "proofgate.fullname" -}}
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

{{- define "proofgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proofgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proofgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: writer
{{- end }}

{{/* Labels of every object, without the component. */}}
{{- define "proofgate.commonLabels" -}}
helm.sh/chart: {{ include "proofgate.chart" . }}
app.kubernetes.io/name: {{ include "proofgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: proofgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the writer's objects. */}}
{{- define "proofgate.labels" -}}
{{ include "proofgate.commonLabels" . }}
app.kubernetes.io/component: writer
{{- end }}

{{/* A list of strings as a nats-server config array: ["a", "b"] (Go-quoted, `>` and `$` kept). */}}
{{- define "proofgate.natsConfList" -}}
[{{- range $i, $s := . }}{{ if $i }}, {{ end }}{{ $s | quote }}{{- end }}]
{{- end }}

{{- define "proofgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "proofgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "proofgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where NATS credentials are mounted in the writer container. */}}
{{- define "proofgate.natsCredsDir" -}}/etc/proofgate/nats{{- end }}

{{- define "proofgate.natsUrl" -}}
{{- tpl .Values.nats.url . }}
{{- end }}

{{- define "proofgate.ledgerPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.writer.ledger.dir) .Values.writer.ledger.file }}
{{- end }}

{{/*
The writer's non-secret options as PROOFGATE_* variables (ConfigMap data). Names follow the
writer's option spec: --flag-name <-> PROOFGATE_FLAG_NAME.
*/}}
{{- define "proofgate.writerConfig" -}}
PROOFGATE_NATS_URL: {{ include "proofgate.natsUrl" . | quote }}
{{- if .Values.nats.credentials.existingSecret }}
PROOFGATE_NATS_CREDS: {{ printf "%s/%s" (include "proofgate.natsCredsDir" .) .Values.nats.credentials.key | quote }}
{{- end }}
PROOFGATE_STREAM_REPLICAS: {{ .Values.nats.streamReplicas | toString | quote }}
PROOFGATE_LEDGER: {{ include "proofgate.ledgerPath" . | quote }}
PROOFGATE_GRPC_LISTEN: {{ printf "0.0.0.0:%v" .Values.writer.grpcPort | quote }}
PROOFGATE_HTTP_LISTEN: {{ printf "0.0.0.0:%v" .Values.writer.httpPort | quote }}
{{- with .Values.writer.writerId }}
PROOFGATE_WRITER_ID: {{ . | quote }}
{{- end }}
PROOFGATE_HEARTBEAT_INTERVAL: {{ .Values.writer.heartbeatInterval | quote }}
PROOFGATE_PUBLISH_TIMEOUT: {{ .Values.writer.publishTimeout | quote }}
PROOFGATE_OUTBOX_RETENTION: {{ .Values.writer.outboxRetention | quote }}
PROOFGATE_LEASE_TTL: {{ .Values.writer.leaseTtl | quote }}
PROOFGATE_LOG_LEVEL: {{ .Values.writer.logLevel | quote }}
{{- with .Values.writer.stripe }}
{{- if .priceMap }}
PROOFGATE_STRIPE_PRICE_MAP: {{ toJson .priceMap | quote }}
{{- end }}
{{- if .webhookSecret.existingSecret }}
PROOFGATE_STRIPE_TOLERANCE: {{ .tolerance | quote }}
{{- end }}
{{- if .apiKey.existingSecret }}
PROOFGATE_STRIPE_RECONCILE_INTERVAL: {{ .reconcileInterval | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Fails the render on combinations that cannot work. */}}
{{- define "proofgate.validate" -}}
{{- $auth := 0 }}
{{- if .Values.nats.credentials.existingSecret }}{{ $auth = add1 $auth }}{{ end }}
{{- if .Values.nats.userPassword.existingSecret }}{{ $auth = add1 $auth }}{{ end }}
{{- if .Values.nats.token.existingSecret }}{{ $auth = add1 $auth }}{{ end }}
{{- if gt $auth 1 }}
{{- fail "nats: set only one of credentials.existingSecret, userPassword.existingSecret and token.existingSecret" }}
{{- end }}
{{- if and (not .Values.writer.persistence.enabled) .Values.writer.persistence.existingClaim }}
{{- fail "writer.persistence.existingClaim needs writer.persistence.enabled=true" }}
{{- end }}
{{- end }}

{{/*
A probe from values; httpGet probes switch to HTTPS when the writer serves TLS.
*/}}
{{- define "proofgate.probe" -}}
{{- $p := deepCopy .probe -}}
{{- if and .tls $p.httpGet -}}
{{- $_ := set $p.httpGet "scheme" "HTTPS" -}}
{{- end -}}
{{- toYaml $p -}}
{{- end }}
