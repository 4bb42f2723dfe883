{{/* The alert rules of alert-rules/ (files/alert-rules: copies, kept identical by
     scripts/sync-chart-files.py and a test), with URLs made absolute, thresholds
     from values, disabled alerts left out and extra labels added. */}}

{{/* Each tunable threshold: the alert, its values key, the exact text of the
     comparison in the rule's expression and of the number in its summary, as in
     alert-rules/ (a render fails when the rule no longer contains them once). */}}
{{- define "tickscope.thresholdTable" -}}
HostCpuBusy: {key: hostCpuBusyRatio, op: ">", expr: "> 0.90", summary: "above 90%", unit: percent}
HostMemoryLow: {key: hostMemoryAvailableLowRatio, op: "<", expr: "< 0.15", summary: "below 15%", unit: percent}
HostMemoryCritical: {key: hostMemoryAvailableCriticalRatio, op: "<", expr: "< 0.05", summary: "below 5%", unit: percent}
HostFilesystemAlmostFull: {key: hostFilesystemUsedWarningRatio, op: ">", expr: "> 0.85", summary: "more than 85%", unit: percent}
HostFilesystemFull: {key: hostFilesystemUsedCriticalRatio, op: ">", expr: "> 0.95", summary: "more than 95%", unit: percent}
EngineOOMImminent: {key: engineMemoryLimitRatio, op: ">", expr: "> 0.90", summary: "more than 90%", unit: percent}
ExchangeHighLatency: {key: exchangeLatencyP99Seconds, op: ">", expr: "> 2\n", summary: "above 2s", unit: seconds}
ExchangeErrorRate: {key: exchangeErrorRatio, op: ">", expr: "> 0.01", summary: "above 1%", unit: percent}
OrderRejectionRate: {key: orderRejectionRatio, op: ">", expr: "> 0.05", summary: "more than 5%", unit: percent}
MarketDataStale: {key: marketDataStaleSeconds, op: ">", expr: "> 30\n", summary: "older than 30s", unit: seconds}
ExchangeClockSkew: {key: exchangeClockSkewSeconds, op: ">", expr: "> 1\n", summary: "more than 1s", unit: seconds}
BalanceDrawdown: {key: balanceDrawdownRatio, op: ">", expr: "> 0.10\n", summary: "more than 10%", unit: percent}
{{- end }}

{{/* Replace `old` by `new` in `text`, which must hold it exactly once. */}}
{{- define "tickscope.replaceOnce" -}}
{{- $what := index . 0 }}{{- $old := index . 1 }}{{- $new := index . 2 }}{{- $text := index . 3 }}
{{- $found := len (regexFindAll (regexQuoteMeta $old) $text -1) }}
{{- if ne $found 1 }}
{{- fail (printf "prometheusRule.thresholds: %s holds %q %d times, expected once (alert-rules/ changed: update the chart's threshold table in templates/_rules.tpl)" $what $old $found) }}
{{- end }}
{{- replace $old $new $text }}
{{- end }}

{{- define "tickscope.ruleGroups" -}}
{{- $root := . }}
{{- $pr := .Values.prometheusRule }}
{{- $runbookBase := tpl (toString $pr.runbookBaseURL) $root | trimSuffix "/" }}
{{- $grafana := toString $pr.grafanaURL | trimSuffix "/" }}
{{- $table := include "tickscope.thresholdTable" . | fromYaml }}
{{- $groups := list }}
{{- $files := .Files.Glob "files/alert-rules/*.rules.yml" }}
{{- if not $files }}
{{- fail "files/alert-rules/ is empty: run scripts/sync-chart-files.py" }}
{{- end }}
{{- range $path, $_ := $files }}
{{- range $group := ($root.Files.Get $path | fromYaml).groups }}
{{- $rules := list }}
{{- range $rule := $group.rules }}
{{- if not (has $rule.alert $pr.disabledAlerts) }}
{{- $r := deepCopy $rule }}
{{- with (index $table (toString $rule.alert)) }}
{{- $value := index $pr.thresholds .key }}
{{- $default := regexFind "[0-9.]+" .expr | float64 }}
{{- if ne (float64 $value) $default }}
{{- $new := printf "%s %v" .op $value }}
{{- if hasSuffix "\n" .expr }}{{ $new = printf "%s\n" $new }}{{ end }}
{{- $_ := set $r "expr" (include "tickscope.replaceOnce" (list (printf "the expression of %s" $rule.alert) .expr $new $r.expr)) }}
{{- $shown := ternary (printf "%.4g%%" (mulf $value 100)) (printf "%.4gs" (float64 $value)) (eq .unit "percent") }}
{{- $summary := regexReplaceAll "[0-9.]+(%|s)$" .summary $shown }}
{{- $annotations := $r.annotations }}
{{- $_ := set $annotations "summary" (include "tickscope.replaceOnce" (list (printf "the summary of %s" $rule.alert) .summary $summary $annotations.summary)) }}
{{- end }}
{{- end }}
{{- with $r.annotations }}
{{- if and $runbookBase .runbook_url (not (regexMatch "^[a-z]+://" .runbook_url)) }}
{{- $_ := set . "runbook_url" (printf "%s/%s" $runbookBase (trimPrefix "/" .runbook_url)) }}
{{- end }}
{{- if and $grafana .dashboard_url (hasPrefix "/" .dashboard_url) }}
{{- $_ := set . "dashboard_url" (printf "%s%s" $grafana .dashboard_url) }}
{{- end }}
{{- end }}
{{- if $pr.additionalRuleLabels }}
{{- $_ := set $r "labels" (merge (deepCopy ($r.labels | default dict)) $pr.additionalRuleLabels) }}
{{- end }}
{{- $rules = append $rules $r }}
{{- end }}
{{- end }}
{{- if $rules }}
{{- $g := deepCopy $group }}
{{- $_ := set $g "rules" $rules }}
{{- $groups = append $groups $g }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $groups }}
{{- end }}
