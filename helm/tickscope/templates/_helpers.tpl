{{/* Names and labels, as `helm create` makes them. */}}
{{- define "tickscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tickscope.fullname" -}}
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

{{/* A name derived from the full name: "<fullname>-<suffix>", at most 63 characters. */}}
{{- define "tickscope.childName" -}}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "tickscope.fullname" (index . 0) | trunc (int (sub 62 (len $suffix)))) $suffix | trimSuffix "-" }}
{{- end }}

{{- define "tickscope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tickscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tickscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tickscope.labels" -}}
helm.sh/chart: {{ include "tickscope.chart" . }}
{{ include "tickscope.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tickscope
{{- end }}

{{- define "tickscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tickscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest. */}}
{{- define "tickscope.image" -}}
{{- $image := index . 0 }}
{{- $defaultTag := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $defaultTag (toString $image.tag)) }}
{{- end }}
{{- end }}

{{/* What is switched on: "true" or "" (templates compare with `if`). null means
     "when the cluster has the API" for ServiceMonitor and PrometheusRule. */}}
{{- define "tickscope.serviceMonitor.enabled" -}}
{{- $on := .Values.serviceMonitor.enabled }}
{{- if kindIs "invalid" $on }}
{{- $on = .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{- define "tickscope.prometheusRule.enabled" -}}
{{- $on := .Values.prometheusRule.enabled }}
{{- if kindIs "invalid" $on }}
{{- $on = .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule" }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{- define "tickscope.scrapeAnnotations.enabled" -}}
{{- $on := .Values.scrapeAnnotations.enabled }}
{{- if kindIs "invalid" $on }}
{{- $on = not (include "tickscope.serviceMonitor.enabled" .) }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/* A native sidecar (restartable init container) from Kubernetes 1.29 on, where the
     SidecarContainers feature is on by default. */}}
{{- define "tickscope.sidecar.native" -}}
{{- $on := .Values.sidecar.native }}
{{- if kindIs "invalid" $on }}
{{- $on = semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{- define "tickscope.tls.enabled" -}}
{{- if .Values.sidecar.webConfig.tls.enabled }}true{{ end }}
{{- end }}

{{/* A web config file is mounted: rendered from values, or the user's own Secret. */}}
{{- define "tickscope.webConfig.enabled" -}}
{{- $w := .Values.sidecar.webConfig }}
{{- if or $w.existingSecret $w.tls.enabled $w.basicAuthUsers $w.extra }}true{{ end }}
{{- end }}

{{- define "tickscope.webConfig.secretName" -}}
{{- default (include "tickscope.childName" (list . "web-config")) .Values.sidecar.webConfig.existingSecret }}
{{- end }}

{{/* Where the sidecar's files are mounted: one projected volume at /etc/tickscope. */}}
{{- define "tickscope.configDir" -}}/etc/tickscope{{- end }}
{{- define "tickscope.webConfigPath" -}}/etc/tickscope/web/web-config.yml{{- end }}
{{- define "tickscope.tlsDir" -}}/etc/tickscope/tls{{- end }}

{{/* The web config file the chart renders (docs/security.md). */}}
{{- define "tickscope.webConfig" -}}
{{- $w := .Values.sidecar.webConfig }}
{{- $file := dict }}
{{- if $w.tls.enabled }}
{{- $_ := required "sidecar.webConfig.tls.existingSecret: name the kubernetes.io/tls Secret with the admin port's certificate (or bring the whole web config in sidecar.webConfig.existingSecret)" $w.tls.existingSecret }}
{{- $_ := set $file "tls_server_config" (dict "cert_file" (printf "%s/tls.crt" (include "tickscope.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "tickscope.tlsDir" .))) }}
{{- end }}
{{- if $w.basicAuthUsers }}
{{- $_ := set $file "basic_auth_users" $w.basicAuthUsers }}
{{- end }}
{{- $file = mustMergeOverwrite $file (deepCopy $w.extra) }}
{{- toYaml $file }}
{{- end }}

{{/* The engine process the sidecar watches: engine.processes[0] of its config. */}}
{{- define "tickscope.engineProcess" -}}
{{- $p := .Values.sidecar.engineProcess }}
{{- $proc := dict "name" $p.name "required" $p.required "cpu_limit_divisor" "1m" }}
{{- $given := 0 }}
{{- if $p.processName }}{{ $given = add1 $given }}{{ $_ := set $proc "process_name" $p.processName }}{{ end }}
{{- if $p.pidFile }}{{ $given = add1 $given }}{{ $_ := set $proc "pid_file" $p.pidFile }}{{ end }}
{{- if $p.cmdline }}{{ $given = add1 $given }}{{ $_ := set $proc "cmdline" $p.cmdline }}{{ end }}
{{- if gt $given 1 }}
{{- fail "sidecar.engineProcess: set one of cmdline, processName and pidFile" }}
{{- end }}
{{- if eq $given 0 }}
{{- $words := concat (.Values.engine.command | default list) (.Values.engine.args | default list) }}
{{- if not $words }}
{{- fail "sidecar.engineProcess: engine.command and engine.args are empty, so the chart cannot tell how the engine's process looks: set sidecar.engineProcess.cmdline (a regex over its command line), processName or pidFile" }}
{{- end }}
{{- $_ := set $proc "cmdline" (printf "(^|[\\s/])%s(\\s|$)" (regexQuoteMeta (toString (last $words)))) }}
{{- end }}
{{- toYaml $proc }}
{{- end }}

{{/* The sidecar's whole config file: what the chart sets, with sidecar.config merged
     over it (maps merge key by key, lists are replaced). */}}
{{- define "tickscope.sidecarConfig" -}}
{{- $v := .Values }}
{{- $defaults := dict
  "server" (dict "bind" "0.0.0.0" "port" (int $v.sidecar.port))
  "receiver" (dict
    "http" (dict "bind" "127.0.0.1" "port" 4318)
    "grpc" (dict "bind" "127.0.0.1" "port" 4317))
  "engine" (dict "processes" (list (include "tickscope.engineProcess" . | fromYaml)))
  "logging" (dict "format" "json") }}
{{- if include "tickscope.webConfig.enabled" . }}
{{- $_ := set $defaults.server "web_config_file" (include "tickscope.webConfigPath" .) }}
{{- end }}
{{- $config := mustMergeOverwrite $defaults (deepCopy ($v.sidecar.config | default dict)) }}
{{- $server := $config.server | default dict }}
{{- if ne (toString (int $server.port)) (toString (int $v.sidecar.port)) }}
{{- fail (printf "sidecar.config.server.port (%v) differs from sidecar.port (%v): the probes, the Service and the ServiceMonitor use sidecar.port; set only that" $server.port $v.sidecar.port) }}
{{- end }}
{{- $processes := list }}
{{- range $proc := (dig "engine" "processes" list $config) }}
{{- if and (kindIs "map" $proc) (not (hasKey $proc "cpu_limit_divisor")) }}
{{- $proc = merge (dict "cpu_limit_divisor" "1m") $proc }}
{{- end }}
{{- $processes = append $processes $proc }}
{{- end }}
{{- if hasKey $config "engine" }}
{{- $_ := set $config.engine "processes" $processes }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Admin port scheme. */}}
{{- define "tickscope.scheme" -}}
{{- if include "tickscope.tls.enabled" . }}https{{ else }}http{{ end }}
{{- end }}
