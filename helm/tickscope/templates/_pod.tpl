{{/* The pod's parts. helm/snippets/ holds the same sidecar for a pod spec made
     without this chart; tests/test_helm_chart.py keeps the two equal. */}}

{{/* The env the chart gives the engine: where the sidecar listens, the service name,
     and the downward-API names the shim reads (tickscope.shim.settings.K8S_ENV). */}}
{{- define "tickscope.engine.env" -}}
{{- $config := include "tickscope.sidecarConfig" . | fromYaml }}
{{- $protocol := .Values.engine.otlpProtocol }}
{{- $receiver := ternary "grpc" "http" (eq $protocol "grpc") }}
{{- $settings := index $config.receiver $receiver }}
{{- if not (dig "enabled" true $settings) }}
{{- fail (printf "engine.otlpProtocol is %s but the sidecar's receiver.%s is disabled in sidecar.config" $protocol $receiver) }}
{{- end }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ printf "http://127.0.0.1:%d" (int $settings.port) | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ default .Release.Name .Values.engine.serviceName | quote }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: K8S_CONTAINER_NAME
  value: engine
{{- end }}

{{/* The engine's env: the chart's, minus what engine.env names again, then engine.env. */}}
{{- define "tickscope.engine.allEnv" -}}
{{- $own := list }}
{{- range .Values.engine.env }}{{ $own = append $own .name }}{{ end }}
{{- $env := list }}
{{- range (include "tickscope.engine.env" . | fromYamlArray) }}
{{- if not (has .name $own) }}{{ $env = append $env . }}{{ end }}
{{- end }}
{{- toYaml (concat $env .Values.engine.env) }}
{{- end }}

{{/* The engine's liveness from its loops' heartbeats: "true" or "". On by default when
     the sidecar's config names heartbeats (engine.heartbeats); never beside a
     livenessProbe of the engine's own (a container has one). */}}
{{- define "tickscope.engine.heartbeatProbe.enabled" -}}
{{- $config := include "tickscope.sidecarConfig" . | fromYaml }}
{{- $heartbeats := dig "engine" "heartbeats" list $config }}
{{- $on := .Values.engine.heartbeatProbe.enabled }}
{{- if kindIs "invalid" $on }}
{{- $on = not (empty $heartbeats) }}
{{- if and $on .Values.engine.livenessProbe }}
{{- fail "engine.livenessProbe is set, and sidecar.config.engine.heartbeats turns engine.heartbeatProbe on: a container has one liveness probe. Set engine.heartbeatProbe.enabled=false to keep your own, or remove engine.livenessProbe" }}
{{- end }}
{{- else if $on }}
{{- if empty $heartbeats }}
{{- fail "engine.heartbeatProbe.enabled is true but sidecar.config.engine.heartbeats is empty: /engine/healthz would always answer 200. Name the engine's loops there, e.g. [{loop: main, max_age: 30s}]" }}
{{- end }}
{{- if .Values.engine.livenessProbe }}
{{- fail "engine.heartbeatProbe.enabled is true and engine.livenessProbe is set: a container has one liveness probe; set only one of them" }}
{{- end }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/* The sidecar's /engine/healthz, probed for the engine container. The port is the
     admin port's number: a named port must be one of the probed container's own. */}}
{{- define "tickscope.engine.heartbeatProbe" -}}
{{- $timing := omit .Values.engine.heartbeatProbe "enabled" -}}
httpGet:
  path: /engine/healthz
  port: {{ int .Values.sidecar.port }}
  scheme: {{ include "tickscope.scheme" . | upper }}
  {{- with .Values.sidecar.probes.httpHeaders }}
  httpHeaders:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- toYaml $timing | nindent 0 }}
{{- end }}

{{- define "tickscope.engine.container" -}}
{{- $e := .Values.engine -}}
name: engine
image: {{ include "tickscope.image" (list $e.image "latest") | quote }}
imagePullPolicy: {{ $e.image.pullPolicy }}
{{- with $e.command }}
command:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.args }}
args:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.workingDir }}
workingDir: {{ . | quote }}
{{- end }}
env:
  {{- include "tickscope.engine.allEnv" . | nindent 2 }}
{{- with $e.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.ports }}
ports:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if include "tickscope.engine.heartbeatProbe.enabled" . }}
livenessProbe:
  {{- include "tickscope.engine.heartbeatProbe" . | nindent 2 }}
{{- else }}
{{- with $e.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- with $e.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.lifecycle }}
lifecycle:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $e.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or $e.tmpDir.enabled $e.volumeMounts }}
volumeMounts:
  {{- if $e.tmpDir.enabled }}
  - name: engine-tmp
    mountPath: /tmp
  {{- end }}
  {{- with $e.volumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The engine container's limits, through the downward API, with the divisors the
     sidecar's config expects: bytes for memory, millicores for CPU (cpu_limit_divisor
     1m; the default divisor 1 would round 500m up to 1). Only the limits the engine
     has: without one the downward API reports the node's allocatable resources. */}}
{{- define "tickscope.sidecar.env" -}}
{{- $limits := dig "limits" dict (.Values.engine.resources | default dict) }}
{{- if $limits.memory }}
- name: ENGINE_MEMORY_LIMIT
  valueFrom:
    resourceFieldRef:
      containerName: engine
      resource: limits.memory
      divisor: "1"
{{- end }}
{{- if $limits.cpu }}
- name: ENGINE_CPU_LIMIT
  valueFrom:
    resourceFieldRef:
      containerName: engine
      resource: limits.cpu
      divisor: 1m
{{- end }}
{{- with .Values.sidecar.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tickscope.sidecar.probe" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- $timing := index . 2 -}}
httpGet:
  path: {{ $path }}
  port: admin
  scheme: {{ include "tickscope.scheme" $root | upper }}
  {{- with $root.Values.sidecar.probes.httpHeaders }}
  httpHeaders:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- toYaml $timing | nindent 0 }}
{{- end }}

{{- define "tickscope.sidecar.container" -}}
{{- $s := .Values.sidecar }}
{{- $w := $s.webConfig }}
{{- $config := include "tickscope.sidecarConfig" . | fromYaml }}
{{- if and $w.basicAuthUsers (eq (toString (dig "server" "probes_without_auth" true $config)) "false") (not $s.probes.httpHeaders) }}
{{- fail "sidecar.config.server.probes_without_auth is false with basic auth on: the kubelet's probes would get 401. Keep it true, or give the probes an Authorization header in sidecar.probes.httpHeaders" }}
{{- end -}}
name: tickscope
image: {{ include "tickscope.image" (list $s.image .Chart.AppVersion) | quote }}
imagePullPolicy: {{ $s.image.pullPolicy }}
{{- if include "tickscope.sidecar.native" . }}
restartPolicy: Always
{{- end }}
args:
  - run
  - --config
  - {{ include "tickscope.configDir" . }}/tickscope.yaml
{{- with (include "tickscope.sidecar.env" . | fromYamlArray) }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: admin
    containerPort: {{ int $s.port }}
    protocol: TCP
startupProbe:
  {{- include "tickscope.sidecar.probe" (list . "/healthz" $s.probes.startup) | nindent 2 }}
livenessProbe:
  {{- include "tickscope.sidecar.probe" (list . "/healthz" $s.probes.liveness) | nindent 2 }}
readinessProbe:
  {{- include "tickscope.sidecar.probe" (list . "/readyz" $s.probes.readiness) | nindent 2 }}
{{- with $s.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: tickscope-config
    mountPath: {{ include "tickscope.configDir" . }}
    readOnly: true
  - name: tickscope-tmp
    mountPath: /tmp
{{- end }}

{{/* The sidecar's volumes: its config (and web config, certificate) in one projected
     volume, and a small /tmp (the root filesystem is read-only). */}}
{{- define "tickscope.sidecar.volumes" -}}
- name: tickscope-config
  projected:
    sources:
      - configMap:
          name: {{ include "tickscope.childName" (list . "config") }}
          items:
            - key: tickscope.yaml
              path: tickscope.yaml
      {{- if include "tickscope.webConfig.enabled" . }}
      - secret:
          name: {{ include "tickscope.webConfig.secretName" . }}
          items:
            - key: web-config.yml
              path: web/web-config.yml
      {{- end }}
      {{- if and (include "tickscope.tls.enabled" .) .Values.sidecar.webConfig.tls.existingSecret }}
      - secret:
          name: {{ .Values.sidecar.webConfig.tls.existingSecret }}
          items:
            - key: tls.crt
              path: tls/tls.crt
            - key: tls.key
              path: tls/tls.key
      {{- end }}
- name: tickscope-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end }}
