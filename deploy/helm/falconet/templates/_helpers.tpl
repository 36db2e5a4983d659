{{/* Names: <release>-falconet, or the release name when it already says falconet. */}}
{{- define "falconet.fullname" -}}
{{- if contains "falconet" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-falconet" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "falconet.labels" -}}
app.kubernetes.io/name: falconet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (node, aggregator, nats). */}}
{{- define "falconet.selector" -}}
app.kubernetes.io/name: falconet
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "falconet.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Secrets holding the certificates, with the keys ca.crt, tls.crt and tls.key whichever way they are made. */}}
{{- define "falconet.serverTLS" -}}{{ include "falconet.fullname" . }}-server-tls{{- end -}}
{{- define "falconet.clientTLS" -}}{{ include "falconet.fullname" . }}-client-tls{{- end -}}

{{- define "falconet.natsName" -}}{{ include "falconet.fullname" . }}-nats{{- end -}}

{{/* Whether clients reach NATS over TLS with the chart's client certificate. */}}
{{- define "falconet.natsTLS" -}}
{{- if eq .Values.nats.mode "deploy" -}}{{ .Values.nats.deploy.tls }}{{- else -}}{{ .Values.nats.reference.tls }}{{- end -}}
{{- end -}}

{{/* The NATS URLs clients dial. */}}
{{- define "falconet.natsServers" -}}
{{- if eq .Values.nats.mode "deploy" -}}
{{- $scheme := ternary "tls" "nats" (eq (include "falconet.natsTLS" .) "true") -}}
{{- list (printf "%s://%s.%s.svc:4222" $scheme (include "falconet.natsName" .) .Release.Namespace) | toJson -}}
{{- else -}}
{{- if not .Values.nats.reference.servers -}}
{{- fail "nats.reference.servers must list the existing cluster's URLs when nats.mode is reference" -}}
{{- end -}}
{{- .Values.nats.reference.servers | toJson -}}
{{- end -}}
{{- end -}}

{{/* The one NATS connection block (server/fleet/connection.py) every component writes, as JSON. */}}
{{- define "falconet.natsConnection" -}}
{{- $c := dict "servers" (include "falconet.natsServers" . | fromJsonArray) -}}
{{- if eq (include "falconet.natsTLS" .) "true" -}}
{{- $_ := set $c "tls" (dict "ca" "/etc/falconet/client-tls/ca.crt" "cert" "/etc/falconet/client-tls/tls.crt" "key" "/etc/falconet/client-tls/tls.key") -}}
{{- end -}}
{{- if and (eq .Values.nats.mode "reference") .Values.nats.reference.auth.secretName -}}
{{- $a := .Values.nats.reference.auth -}}
{{- if not (has $a.type (list "credentials" "nkey_seed" "token_file")) -}}
{{- fail "nats.reference.auth.type must be credentials, nkey_seed or token_file" -}}
{{- end -}}
{{- $_ := set $c $a.type (printf "/etc/falconet/nats/%s" (required "nats.reference.auth.file names the key in the Secret" $a.file)) -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/* The server certificate's names: the aggregator's and NATS's services, every NATS pod, localhost. */}}
{{- define "falconet.serverSANs" -}}
{{- $ns := .Release.Namespace -}}
{{- $agg := printf "%s-aggregator" (include "falconet.fullname" .) -}}
{{- $nats := include "falconet.natsName" . -}}
{{- $names := list "localhost" $agg (printf "%s.%s.svc" $agg $ns) (printf "%s.%s.svc.cluster.local" $agg $ns) $nats (printf "%s.%s.svc" $nats $ns) (printf "%s.%s.svc.cluster.local" $nats $ns) (printf "*.%s-headless.%s.svc" $nats $ns) (printf "*.%s-headless.%s.svc.cluster.local" $nats $ns) -}}
{{- concat $names .Values.certs.extraSANs | toJson -}}
{{- end -}}
