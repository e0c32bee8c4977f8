{{/*
proofgate sidecar injection.

An application chart depends on this library chart and includes, in its pod template:

  containers:
    - name: app
      ...
      env:
        {{- include "proofgate.sidecar.appEnv" (dict "root" $ "values" .Values.proofgateSidecar) | nindent 8 }}
      volumeMounts:
        {{- include "proofgate.sidecar.appVolumeMounts" (dict "root" $ "values" .Values.proofgateSidecar) | nindent 8 }}
    {{- include "proofgate.sidecar.container" (dict "root" $ "values" .Values.proofgateSidecar) | nindent 4 }}
  volumes:
    {{- include "proofgate.sidecar.volumes" (dict "root" $ "values" .Values.proofgateSidecar) | nindent 4 }}

With nativeSidecar: true (Kubernetes >= 1.29), put the container under initContainers instead;
"proofgate.sidecar.native" says which.

Every template takes a dict with "root" (the chart's top context) and "values" (the
application's proofgateSidecar block, merged over "proofgate.sidecar.defaults" below). Each
renders YAML list items, or nothing. See deploy/examples/app-chart and docs/deployment.md.
*/}}

{{/* The image tag used when values.image.tag is empty; equal to this chart's appVersion. */}}
{{- define "proofgate.sidecar.appVersion" -}}0.1.0{{- end }}

{{/* Defaults of the proofgateSidecar values block (documented in docs/deployment.md). */}}
{{- define "proofgate.sidecar.defaults" -}}
# Container name in the pod.
name: proofgate-sidecar
image:
  repository: ghcr.io/proofgate/proofgate
  # Empty: the library's appVersion.
  tag: ""
  # sha256:...; wins over tag when set.
  digest: ""
  pullPolicy: IfNotPresent
nats:
  # NATS URL(s), comma separated (PROOFGATE_NATS_URL); rendered with tpl.
  url: "nats://nats:4222"
  # How the sidecar authenticates to NATS, from existing Secrets in the application's namespace;
  # set at most one. Empty: connect without credentials.
  # The sidecar user's .creds (JWT and NKey seed; PROOFGATE_NATS_CREDS), mounted read-only.
  credentials:
    existingSecret: ""
    key: nats.creds
  # A user and password (PROOFGATE_NATS_USER / PROOFGATE_NATS_PASSWORD), e.g. the writer chart's
  # accounts.conf users.
  userPassword:
    existingSecret: ""
    userKey: user
    passwordKey: password
  # A token (PROOFGATE_NATS_TOKEN).
  token:
    existingSecret: ""
    key: token
# The writer's customer token key (PROOFGATE_CUSTOMER_TOKEN_KEY) from an existing Secret in the
# application's namespace: the same key as the writer's, or the sidecar refuses the state stream.
# Empty: the public development key (docs/security.md).
customerTokenKey:
  existingSecret: ""
  key: customer-token-key

#   tcp:  127.0.0.1:<grpcPort> (loopback only, never the pod IP)
#   unix: a unix socket in an emptyDir shared with the application container
#   both: the two at once
transport: tcp
grpcPort: 50061
socket:
  # Directory (a shared emptyDir) and file name of the socket.
  dir: /var/run/proofgate
  file: sidecar.sock
  # umask the sidecar runs with in unix mode: 0007 leaves the socket connectable by the pod's
  # fsGroup, which Kubernetes adds to every container of the pod (set podSecurityContext.fsGroup).
  umask: "0007"
# /healthz, /readyz and /metrics (no entitlement data). On the pod IP so the kubelet's probes
# and Prometheus reach it; gRPC Check itself never leaves the pod.
httpPort: 9091
replica:
  # Where the SQLite replica lives (PROOFGATE_REPLICA = dir/file).
  dir: /var/lib/proofgate-replica
  file: replica.db
  # The replica's volume. An emptyDir survives container restarts (warm restart in about a
  # second); a new pod restores the writer's newest replica snapshot (4.5 s at 1M customers) or,
  # without one, replays the state stream (about 100 s at 1M on 2 vCPUs, BENCHMARKS.md), and is
  # not ready until it has caught up. The file is about 400-460 MiB at 1M customers.
  # Replace the whole map to use another volume type, e.g. {persistentVolumeClaim: {claimName: x}}.
  volume:
    emptyDir:
      sizeLimit: 2Gi
  # Local mode of the client (proofgate/client): the application container mounts the replica
  # volume at the same dir and gets PROOFGATE_REPLICA, so ProofgateClient evaluates checks in
  # process from the file, read-only, with no network hop. The sidecar then runs with
  # socket.umask, so the file and its -wal/-shm are readable and writable by the pod's fsGroup
  # (set podSecurityContext.fsGroup): SQLite readers in WAL mode record read marks in -shm. The
  # mount is not readOnly for the same reason; the client never writes the database itself.
  shareWithApp: false
# full: a replica of every customer (PROOFGATE_MODE). lazy: only the customers this pod's service
# asks about, fetched from NATS on first use and then followed, within lazy.maxCustomers and
# lazy.maxBytes; ready at once, but a customer not yet kept cannot be answered while NATS is
# unreachable (docs/sidecar.md#modes). With lazy, replica.volume can be small (about
# lazy.maxBytes x 1.5 plus 1 MiB of WAL) and resources lower.
mode: full
lazy:
  # PROOFGATE_LAZY_MAX_CUSTOMERS and PROOFGATE_LAZY_MAX_BYTES; least recently checked out first.
  maxCustomers: 100000
  maxBytes: 64MiB
# How long a check with min_revision waits for the replica to reach it (PROOFGATE_MIN_REVISION_WAIT).
minRevisionWait: 2s
# Fraction of decisions published on proofgate.decisions, 0 to 1 (PROOFGATE_DECISION_LOG_SAMPLE).
decisionLogSample: "0"
logLevel: info
# Node's flags for the sidecar (NODE_OPTIONS): a small young generation keeps the resting RSS
# low (docs/sidecar.md, "Memory"). Empty: Node's defaults. The sidecar turns V8's pretenuring off
# itself, which NODE_OPTIONS cannot carry (docs/sidecar.md, "V8's pretenuring").
nodeOptions: "--max-semi-space-size=4"
# Measured (BENCHMARKS.md, with --max-semi-space-size=2; the 4 MiB above rests 2-6 MiB higher): RSS
# at rest 129 MiB restored from a snapshot and 148 MiB after a full replay at 1M customers (it does
# not grow with the region), about 220 MiB under load. Lower both after watching
# process_resident_memory_bytes.
resources:
  requests:
    cpu: 100m
    memory: 256Mi
  limits:
    cpu: 500m
    memory: 384Mi
# Ready once the replica has caught up with the state stream.
readinessProbe:
  httpGet:
    path: /readyz
    port: proofgate-http
  periodSeconds: 2
  timeoutSeconds: 1
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: proofgate-http
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
startupProbe:
  httpGet:
    path: /healthz
    port: proofgate-http
  periodSeconds: 1
  timeoutSeconds: 1
  failureThreshold: 60
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
# Kubernetes >= 1.29 native sidecar: adds restartPolicy: Always; include the container under
# initContainers instead of containers, and it starts (and is ready) before the application.
nativeSidecar: false
# Envoy / Istio external authorization (docs/ext-authz.md): the sidecar also serves
# envoy.service.auth.v3.Authorization/Check for the pod's mesh proxy, from a rules file.
extAuthz:
  enabled: false
  # An existing ConfigMap with the rules file (and the JWKS file it names, if any). Mounted as a
  # directory, never with subPath, so edits reach the sidecar (it reloads without a restart).
  configMap: ""
  # The rules file's key in that ConfigMap.
  rulesKey: rules.yaml
  # Port on 127.0.0.1 for the proxy; 0 serves ext_authz on the Check listener (grpcPort).
  port: 50062
# Extra EnvVar entries for the sidecar container.
extraEnv: []
{{- end }}

{{/*
Labels for the pod template's metadata: they mark the pod as carrying a proofgate sidecar, which
is what the writer chart's PodMonitor (podMonitor.enabled) selects to scrape every sidecar.
*/}}
{{- define "proofgate.sidecar.podLabels" -}}
proofgate.io/sidecar: "true"
{{- end }}

{{/* The merged values (defaults <- application's block), as YAML. Internal. */}}
{{- define "proofgate.sidecar.values" -}}
{{- $defaults := include "proofgate.sidecar.defaults" . | fromYaml }}
{{- $user := deepCopy (.values | default dict) }}
{{- $volume := dig "replica" "volume" nil $user }}
{{- $v := mergeOverwrite $defaults $user }}
{{- if $volume }}{{ $_ := set $v.replica "volume" $volume }}{{ end }}
{{- if not (has $v.transport (list "tcp" "unix" "both")) }}
{{- fail (printf "proofgateSidecar.transport must be tcp, unix or both, got %v" $v.transport) }}
{{- end }}
{{- if and $v.extAuthz.enabled (not $v.extAuthz.configMap) }}
{{- fail "proofgateSidecar.extAuthz.configMap: name the ConfigMap holding the ext_authz rules file" }}
{{- end }}
{{- toYaml $v }}
{{- end }}

{{- define "proofgate.sidecar.socketPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .socket.dir) .socket.file }}
{{- end }}

{{/* The sidecar container (a list item). */}}
{{- define "proofgate.sidecar.container" -}}
{{- $v := include "proofgate.sidecar.values" . | fromYaml -}}
{{- $root := .root -}}
{{- $tcp := or (eq $v.transport "tcp") (eq $v.transport "both") -}}
{{- $unix := or (eq $v.transport "unix") (eq $v.transport "both") -}}
{{- $umask := or $unix $v.replica.shareWithApp -}}
- name: {{ $v.name }}
  {{- if $v.image.digest }}
  image: {{ printf "%s@%s" $v.image.repository $v.image.digest | quote }}
  {{- else }}
  image: {{ printf "%s:%s" $v.image.repository (default (include "proofgate.sidecar.appVersion" .) $v.image.tag) | quote }}
  {{- end }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $umask }}
  # A umask so the socket is connectable, and a shared replica readable, by the pod's fsGroup (see socket.umask).
  command: ["/bin/sh", "-c", {{ printf "umask %s && exec node bin/proofgate.js sidecar" $v.socket.umask | quote }}]
  {{- else }}
  args: ["sidecar"]
  {{- end }}
  {{- if $v.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: proofgate-http
      containerPort: {{ $v.httpPort }}
      protocol: TCP
  env:
    - name: PROOFGATE_NATS_URL
      value: {{ tpl $v.nats.url $root | quote }}
    {{- if $v.nats.credentials.existingSecret }}
    - name: PROOFGATE_NATS_CREDS
      value: {{ printf "/etc/proofgate/nats/%s" $v.nats.credentials.key | quote }}
    {{- end }}
    {{- with $v.nats.userPassword }}
    {{- if .existingSecret }}
    - name: PROOFGATE_NATS_USER
      valueFrom:
        secretKeyRef:
          name: {{ .existingSecret }}
          key: {{ .userKey }}
    - name: PROOFGATE_NATS_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ .existingSecret }}
          key: {{ .passwordKey }}
    {{- end }}
    {{- end }}
    {{- with $v.nats.token }}
    {{- if .existingSecret }}
    - name: PROOFGATE_NATS_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ .existingSecret }}
          key: {{ .key }}
    {{- end }}
    {{- end }}
    {{- with $v.customerTokenKey }}
    {{- if .existingSecret }}
    - name: PROOFGATE_CUSTOMER_TOKEN_KEY
      valueFrom:
        secretKeyRef:
          name: {{ .existingSecret }}
          key: {{ .key }}
    {{- end }}
    {{- end }}
    - name: PROOFGATE_REPLICA
      value: {{ printf "%s/%s" (trimSuffix "/" $v.replica.dir) $v.replica.file | quote }}
    # Loopback or nothing: Check is only for the containers of this pod.
    - name: PROOFGATE_GRPC_LISTEN
      value: {{ ternary (printf "127.0.0.1:%v" $v.grpcPort) "" $tcp | quote }}
    - name: PROOFGATE_GRPC_SOCKET
      value: {{ ternary (include "proofgate.sidecar.socketPath" $v) "" $unix | quote }}
    - name: PROOFGATE_HTTP_LISTEN
      value: {{ printf "0.0.0.0:%v" $v.httpPort | quote }}
    - name: PROOFGATE_MODE
      value: {{ $v.mode | quote }}
    {{- if eq $v.mode "lazy" }}
    - name: PROOFGATE_LAZY_MAX_CUSTOMERS
      value: {{ $v.lazy.maxCustomers | int64 | toString | quote }}
    - name: PROOFGATE_LAZY_MAX_BYTES
      value: {{ $v.lazy.maxBytes | toString | quote }}
    {{- end }}
    - name: PROOFGATE_MIN_REVISION_WAIT
      value: {{ $v.minRevisionWait | quote }}
    - name: PROOFGATE_DECISION_LOG_SAMPLE
      value: {{ $v.decisionLogSample | toString | quote }}
    - name: PROOFGATE_LOG_LEVEL
      value: {{ $v.logLevel | quote }}
    {{- if $v.extAuthz.enabled }}
    - name: PROOFGATE_EXT_AUTHZ_RULES
      value: {{ printf "/etc/proofgate/ext-authz/%s" $v.extAuthz.rulesKey | quote }}
    # Loopback: only the pod's own proxy asks.
    - name: PROOFGATE_EXT_AUTHZ_LISTEN
      value: {{ ternary "" (printf "127.0.0.1:%v" $v.extAuthz.port) (eq (int $v.extAuthz.port) 0) | quote }}
    {{- end }}
    {{- with $v.nodeOptions }}
    - name: NODE_OPTIONS
      value: {{ . | quote }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: proofgate-replica
      mountPath: {{ $v.replica.dir }}
    - name: proofgate-tmp
      mountPath: /tmp
    {{- if $unix }}
    - name: proofgate-socket
      mountPath: {{ $v.socket.dir }}
    {{- end }}
    {{- if $v.nats.credentials.existingSecret }}
    - name: proofgate-nats-creds
      mountPath: /etc/proofgate/nats
      readOnly: true
    {{- end }}
    {{- if $v.extAuthz.enabled }}
    - name: proofgate-ext-authz
      mountPath: /etc/proofgate/ext-authz
      readOnly: true
    {{- end }}
{{- end }}

{{/*
"true" when the sidecar is a native sidecar (nativeSidecar: true), else empty: the application
chart then includes "proofgate.sidecar.container" under initContainers instead of containers.
*/}}
{{- define "proofgate.sidecar.native" -}}
{{- $v := include "proofgate.sidecar.values" . | fromYaml -}}
{{- if $v.nativeSidecar }}true{{ end }}
{{- end }}

{{/* The pod volumes the sidecar needs (list items). */}}
{{- define "proofgate.sidecar.volumes" -}}
{{- $v := include "proofgate.sidecar.values" . | fromYaml -}}
{{- $unix := or (eq $v.transport "unix") (eq $v.transport "both") -}}
- name: proofgate-replica
  {{- toYaml $v.replica.volume | nindent 2 }}
- name: proofgate-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $unix }}
- name: proofgate-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- if $v.nats.credentials.existingSecret }}
- name: proofgate-nats-creds
  secret:
    secretName: {{ $v.nats.credentials.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.nats.credentials.key }}
        path: {{ $v.nats.credentials.key }}
{{- end }}
{{- if $v.extAuthz.enabled }}
- name: proofgate-ext-authz
  configMap:
    name: {{ $v.extAuthz.configMap }}
{{- end }}
{{- end }}

{{/* Volume mounts for the application container: the socket directory in unix mode, the replica when shared. */}}
{{- define "proofgate.sidecar.appVolumeMounts" -}}
{{- $v := include "proofgate.sidecar.values" . | fromYaml -}}
{{- $mounts := list -}}
{{- if or (eq $v.transport "unix") (eq $v.transport "both") -}}
{{- $mounts = append $mounts (dict "name" "proofgate-socket" "mountPath" $v.socket.dir) -}}
{{- end -}}
{{- if $v.replica.shareWithApp -}}
{{- $mounts = append $mounts (dict "name" "proofgate-replica" "mountPath" $v.replica.dir) -}}
{{- end -}}
{{- if $mounts -}}{{ toYaml $mounts }}{{- end -}}
{{- end }}

{{/*
Environment for the application container: PROOFGATE_SIDECAR_ADDRESS, the gRPC target of the
sidecar (what `proofgate check` and ProofgateClient read): unix:<path> when a socket is enabled,
else 127.0.0.1:<port>; with replica.shareWithApp, PROOFGATE_REPLICA (ProofgateClient's local mode).
*/}}
{{- define "proofgate.sidecar.appEnv" -}}
{{- $v := include "proofgate.sidecar.values" . | fromYaml -}}
- name: PROOFGATE_SIDECAR_ADDRESS
  {{- if or (eq $v.transport "unix") (eq $v.transport "both") }}
  value: {{ printf "unix:%s" (include "proofgate.sidecar.socketPath" $v) | quote }}
  {{- else }}
  value: {{ printf "127.0.0.1:%v" $v.grpcPort | quote }}
  {{- end }}
{{- if $v.replica.shareWithApp }}
- name: PROOFGATE_REPLICA
  value: {{ printf "%s/%s" (trimSuffix "/" $v.replica.dir) $v.replica.file | quote }}
{{- with $v.customerTokenKey }}
{{- if .existingSecret }}
{{- /* The client's local mode looks customers up by their token, as the sidecar does. */}}
- name: PROOFGATE_CUSTOMER_TOKEN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
