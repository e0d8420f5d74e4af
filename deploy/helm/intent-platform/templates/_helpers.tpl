{{/* intent-platform.name: the chart name, or nameOverride, truncated to 63 characters. */}}
{{- define "intent-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* intent-platform.fullname: `<release>-<chart>` (or fullnameOverride), truncated to 63 characters (DNS label). */}}
{{- define "intent-platform.fullname" -}}
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

{{/* intent-platform.componentName: `<fullname>-<component>`, truncated so the whole stays a DNS label. */}}
{{- define "intent-platform.componentName" -}}
{{- $full := include "intent-platform.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" -}}
{{- printf "%s-%s" $full .component -}}
{{- end -}}

{{/* intent-platform.chart: chart name and version for the helm.sh/chart label. */}}
{{- define "intent-platform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* intent-platform.labels: standard labels of every resource (call with dict "root" $ "component" "gateway"). */}}
{{- define "intent-platform.labels" -}}
helm.sh/chart: {{ include "intent-platform.chart" .root }}
{{ include "intent-platform.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: intent-platform
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* intent-platform.selectorLabels: the immutable labels a component's selector matches. */}}
{{- define "intent-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "intent-platform.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* intent-platform.gatewayPods: the labels of the pods that run the gateway code: the gateway Deployment's, or in
mode kserve KServe's transformer pods of the InferenceService (KServe labels them with these two). */}}
{{- define "intent-platform.gatewayPods" -}}
{{- if eq .Values.mode "kserve" -}}
serving.kserve.io/inferenceservice: {{ include "intent-platform.fullname" . }}
component: transformer
{{- else -}}
{{ include "intent-platform.selectorLabels" (dict "root" . "component" "gateway") }}
{{- end -}}
{{- end -}}

{{/* intent-platform.portsExcept: NetworkPolicy ports (TCP) covering 1-65535 except the ports in .closed (at most
two), as port/endPort ranges (call with dict "closed" (list 50051 9464)). */}}
{{- define "intent-platform.portsExcept" -}}
{{- $closed := .closed -}}
{{- if eq (len $closed) 2 -}}
{{- $closed = list (min (index $closed 0) (index $closed 1)) (max (index $closed 0) (index $closed 1)) -}}
{{- end -}}
{{- $start := 1 -}}
{{- range $closed }}
{{- if gt (int .) $start }}
- port: {{ $start }}
  {{- if gt (sub (int .) 1) $start }}
  endPort: {{ sub (int .) 1 }}
  {{- end }}
  protocol: TCP
{{- end }}
{{- $start = add (int .) 1 }}
{{- end }}
{{- if le $start 65535 }}
- port: {{ $start }}
  {{- if lt $start 65535 }}
  endPort: 65535
  {{- end }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* intent-platform.serviceAccountName: the ServiceAccount pods run as. */}}
{{- define "intent-platform.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "intent-platform.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* intent-platform.image: `registry/repository:tag` of an image block (call with dict "image" ... "default" tag). */}}
{{- define "intent-platform.image" -}}
{{- $tag := default .default .image.tag -}}
{{- if .image.registry -}}
{{- printf "%s/%s:%s" .image.registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* intent-platform.gatewayImage: the gateway image reference. */}}
{{- define "intent-platform.gatewayImage" -}}
{{- include "intent-platform.image" (dict "image" .Values.gateway.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* intent-platform.tritonModelRepository: the --model-repository argument (URI, or the PVC mount path). */}}
{{- define "intent-platform.tritonModelRepository" -}}
{{- if .Values.triton.modelRepository.uri -}}
{{- .Values.triton.modelRepository.uri -}}
{{- else -}}
{{- .Values.triton.modelRepository.mountPath -}}
{{- end -}}
{{- end -}}

{{/* intent-platform.predictorHost: host:port of KServe's predictor Service (mode kserve). */}}
{{- define "intent-platform.predictorHost" -}}
{{- default (printf "%s-predictor.%s:80" (include "intent-platform.fullname" .) .Release.Namespace) .Values.kserve.transformer.predictorHost -}}
{{- end -}}

{{/* intent-platform.tritonUrl: Triton's gRPC endpoint as the gateway sees it (its Service, or KServe's predictor). */}}
{{- define "intent-platform.tritonUrl" -}}
{{- if eq .Values.mode "kserve" -}}
{{- include "intent-platform.predictorHost" . -}}
{{- else -}}
{{- printf "%s:%d" (include "intent-platform.componentName" (dict "root" . "component" "triton")) (int .Values.triton.ports.grpc) -}}
{{- end -}}
{{- end -}}

{{/* intent-platform.tritonTraceUrl: with tracing on (Deployment mode), Triton's HTTP endpoint for the gateway's
sampled requests: Triton 2.51 honours every traceparent sent as an HTTP header, but drops some sent as gRPC
metadata (reports/tracing.json). Empty otherwise. */}}
{{- define "intent-platform.tritonTraceUrl" -}}
{{- if and .Values.otel.enabled (ne .Values.mode "kserve") -}}
{{- printf "http://%s:%d" (include "intent-platform.componentName" (dict "root" . "component" "triton")) (int .Values.triton.ports.http) -}}
{{- end -}}
{{- end -}}

{{/* intent-platform.redisUrl: the redis:// URL of the in-chart Redis (external URLs come from values or a Secret). */}}
{{- define "intent-platform.redisUrl" -}}
{{- printf "redis://%s:%d/%d" (include "intent-platform.componentName" (dict "root" . "component" "redis")) (int .Values.redis.port) (int .Values.redis.database) -}}
{{- end -}}

{{/* intent-platform.validate: fails the render on value combinations the schema cannot express. */}}
{{- define "intent-platform.validate" -}}
{{- if and (not .Values.triton.modelRepository.uri) (not .Values.triton.modelRepository.existingClaim) -}}
{{- fail "triton.modelRepository: set uri (s3://, gs://, as://) or existingClaim (a PVC holding the repository)" -}}
{{- end -}}
{{- $redis := or .Values.redis.enabled .Values.redis.external.url .Values.redis.external.existingSecret -}}
{{- if not $redis -}}
{{- fail "the gateway needs Redis in a cluster: set redis.enabled=true or redis.external.url / redis.external.existingSecret" -}}
{{- end -}}
{{- if and (not .Values.gateway.artifacts.existingConfigMap) (not .Values.gateway.artifacts.existingClaim) (not .Values.gateway.artifacts.files) -}}
{{- fail "gateway.artifacts: set existingConfigMap, existingClaim or files (featurizer.json and ranker.json)" -}}
{{- end -}}
{{- if and (eq .Values.mode "kserve") (not .Values.triton.modelRepository.uri) (not .Values.triton.modelRepository.existingClaim) -}}
{{- fail "mode=kserve needs triton.modelRepository.uri or existingClaim for the predictor's storageUri" -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.gateway.port)) -}}
{{- fail "metrics.port and gateway.port must differ" -}}
{{- end -}}
{{- if has (int .Values.gateway.healthPort) (list (int .Values.gateway.port) (int .Values.metrics.port)) -}}
{{- fail "gateway.healthPort must differ from gateway.port and metrics.port" -}}
{{- end -}}
{{- $drain := float64 .Values.gateway.config.drainS -}}
{{- $needed := addf (mulf 2 $drain) (float64 .Values.gateway.config.graceS) -}}
{{- if le (float64 .Values.gateway.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds must exceed the preStop sleep + the drain + the grace (2 x gateway.config.drainS + gateway.config.graceS = %v s), or the kubelet kills calls in flight" $needed) -}}
{{- end -}}
{{- if eq .Values.mode "kserve" -}}
{{- $t := .Values.kserve.transformer -}}
{{- if has (int .Values.gateway.port) (list (int $t.httpPort) (int $t.grpcPort)) -}}
{{- fail "mode=kserve: gateway.port (the typed gRPC service in the transformer pods) must differ from kserve.transformer.httpPort and grpcPort" -}}
{{- end -}}
{{- if and (eq .Values.kserve.deploymentMode "Serverless") (lt (int $t.minReplicas) 1) -}}
{{- fail "mode=kserve with Serverless: kserve.transformer.minReplicas must be >= 1, since the typed gRPC Service reaches the transformer pods directly, not through Knative's activator (scaled to zero it would have no endpoints)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* intent-platform.gatewayEnv: GATEWAY_* settings and OTEL_* env of the gateway container (both modes). */}}
{{- define "intent-platform.gatewayEnv" -}}
{{- $c := .Values.gateway.config -}}
- name: GATEWAY_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.gateway.port) | quote }}
{{- if .Values.redis.external.existingSecret }}
- name: GATEWAY_STORE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretKey }}
{{- else if .Values.redis.enabled }}
- name: GATEWAY_STORE
  value: {{ include "intent-platform.redisUrl" . | quote }}
{{- else }}
- name: GATEWAY_STORE
  valueFrom:
    secretKeyRef:
      name: {{ include "intent-platform.componentName" (dict "root" . "component" "redis-url") }}
      key: url
{{- end }}
- name: GATEWAY_ARTIFACTS
  value: {{ .Values.gateway.artifacts.mountPath | quote }}
- name: GATEWAY_MANIFEST
  value: {{ printf "%s/manifest.json" .Values.gateway.artifacts.mountPath | quote }}
- name: GATEWAY_TRITON_URL
  value: {{ include "intent-platform.tritonUrl" . | quote }}
- name: GATEWAY_TRITON_TRACE_URL
  value: {{ include "intent-platform.tritonTraceUrl" . | quote }}
- name: GATEWAY_TRITON_MODEL
  value: {{ $c.tritonModel | quote }}
- name: GATEWAY_TRITON_TIMEOUT_S
  value: {{ $c.tritonTimeoutS | quote }}
- name: GATEWAY_LOOKBACK_DAYS
  value: {{ $c.lookbackDays | quote }}
- name: GATEWAY_MAX_SESSIONS
  value: {{ $c.maxSessions | quote }}
- name: GATEWAY_CACHE_EMBEDDINGS
  value: {{ $c.cacheEmbeddings | quote }}
- name: GATEWAY_EMBED_ON_WRITE
  value: {{ $c.embedOnWrite | quote }}
- name: GATEWAY_EMBED_DELAY_MS
  value: {{ $c.embedDelayMs | quote }}
- name: GATEWAY_MAX_BATCH_EVENTS
  value: {{ $c.maxBatchEvents | quote }}
- name: GATEWAY_MAX_TILES
  value: {{ $c.maxTiles | quote }}
- name: GATEWAY_RETENTION_DAYS
  value: {{ $c.retentionDays | quote }}
- name: GATEWAY_MAX_EVENTS_PER_VISITOR
  value: {{ $c.maxEventsPerVisitor | quote }}
- name: GATEWAY_GRACE_S
  value: {{ $c.graceS | quote }}
- name: GATEWAY_LOG_LEVEL
  value: {{ $c.logLevel | quote }}
- name: GATEWAY_DRAIN_S
  value: {{ $c.drainS | quote }}
- name: GATEWAY_HEALTH_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.gateway.healthPort) | quote }}
{{- include "intent-platform.authEnv" . }}
{{- if .Values.otel.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.otel.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ default (include "intent-platform.componentName" (dict "root" . "component" "gateway")) .Values.otel.serviceName | quote }}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.otel.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.otel.samplerArg | quote }}
- name: OTEL_PROPAGATORS
  value: tracecontext,baggage
{{- with .Values.otel.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: none
{{- end }}
{{- if .Values.metrics.enabled }}
- name: OTEL_METRICS_EXPORTER
  value: prometheus
- name: OTEL_EXPORTER_PROMETHEUS_HOST
  value: 0.0.0.0
- name: OTEL_EXPORTER_PROMETHEUS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end }}
{{- with .Values.gateway.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* intent-platform.secretName: an auth/privacy Secret's name, given (`name`) or `<fullname>-<component>`. */}}
{{- define "intent-platform.secretName" -}}
{{- default (include "intent-platform.componentName" (dict "root" .root "component" .component)) .name -}}
{{- end -}}

{{/* intent-platform.authEnv: GATEWAY_AUTH, the TLS and token settings (files of the mounted Secrets) and the id
hash key (env from its Secret); the local PKI directory is never used with every path set, but is writable. */}}
{{- define "intent-platform.authEnv" -}}
{{- $a := .Values.auth }}
- name: GATEWAY_AUTH
  value: {{ $a.mode | quote }}
- name: GATEWAY_PKI_DIR
  value: /tmp/pki
{{- if ne $a.mode "none" }}
- name: GATEWAY_TLS_CERT
  value: {{ printf "%s/tls.crt" $a.tls.mountPath | quote }}
- name: GATEWAY_TLS_KEY
  value: {{ printf "%s/tls.key" $a.tls.mountPath | quote }}
- name: GATEWAY_TLS_CLIENT_CA
  value: {{ printf "%s/ca.crt" $a.tls.mountPath | quote }}
- name: {{ ternary "GATEWAY_JWT_JWKS" "GATEWAY_JWT_PUBLIC_KEY" (hasSuffix ".json" $a.jwt.key) }}
  value: {{ printf "%s/%s" $a.jwt.mountPath $a.jwt.key | quote }}
- name: GATEWAY_JWT_ISSUER
  value: {{ $a.jwt.issuer | quote }}
- name: GATEWAY_JWT_AUDIENCE
  value: {{ $a.jwt.audience | quote }}
- name: GATEWAY_JWT_LEEWAY_S
  value: {{ $a.jwt.leewayS | quote }}
{{- end }}
{{- $h := .Values.privacy.idHashKey }}
{{- $hashSecret := include "intent-platform.secretName" (dict "root" . "component" "id-hash-key" "name" $h.existingSecret) }}
- name: GATEWAY_ID_HASH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $hashSecret }}
      key: {{ $h.key }}
{{- with $h.previousKeysKey }}
- name: GATEWAY_ID_HASH_PREVIOUS_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $hashSecret }}
      key: {{ . }}
{{- end }}
{{- end -}}

{{/* intent-platform.authVolumes / authVolumeMounts: the TLS and token key Secrets, read-only (none with auth none). */}}
{{- define "intent-platform.authVolumes" -}}
{{- if ne .Values.auth.mode "none" }}
- name: tls
  secret:
    secretName: {{ include "intent-platform.secretName" (dict "root" . "component" "tls" "name" .Values.auth.tls.existingSecret) }}
    defaultMode: 0440
- name: jwt
  secret:
    secretName: {{ include "intent-platform.secretName" (dict "root" . "component" "jwt" "name" .Values.auth.jwt.existingSecret) }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "intent-platform.authVolumeMounts" -}}
{{- if ne .Values.auth.mode "none" }}
- name: tls
  mountPath: {{ .Values.auth.tls.mountPath }}
  readOnly: true
- name: jwt
  mountPath: {{ .Values.auth.jwt.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* intent-platform.artifactsVolume: the volume holding featurizer.json and ranker.json. */}}
{{- define "intent-platform.artifactsVolume" -}}
- name: artifacts
{{- if .Values.gateway.artifacts.files }}
  configMap:
    name: {{ include "intent-platform.componentName" (dict "root" . "component" "artifacts") }}
{{- else if .Values.gateway.artifacts.existingConfigMap }}
  configMap:
    name: {{ .Values.gateway.artifacts.existingConfigMap }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ .Values.gateway.artifacts.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}
