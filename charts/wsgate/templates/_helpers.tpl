{{/*
Naming. The name defaults to "wsgate" rather than .Chart.Name so the helpers give the same
names when a host chart calls them with this chart's context (.Subcharts.wsgate).
*/}}
{{- define "wsgate.name" -}}
{{- default "wsgate" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wsgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "wsgate.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wsgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name + instance only, because selectors are immutable. */}}
{{- define "wsgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wsgate.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "wsgate.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wsgate
{{- end }}

{{- define "wsgate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | trunc 63 }}
{{- end }}

{{- define "wsgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "wsgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the HMAC key: existingSecret, else "<fullname>-hmac". */}}
{{- define "wsgate.hmacSecretName" -}}
{{- default (printf "%s-hmac" (include "wsgate.fullname" .)) .Values.hmacSecret.existingSecret }}
{{- end }}

{{/* Name of the Secret holding the admin publish token: existingSecret, else "<fullname>-publish-token". */}}
{{- define "wsgate.publishTokenSecretName" -}}
{{- default (printf "%s-publish-token" (include "wsgate.fullname" .)) .Values.publishToken.existingSecret }}
{{- end }}

{{/*
The publish token's place, as the body of a secretKeyRef. A host chart gives it to a producer in the
same pod (sidecar mode) with this chart's context:
  valueFrom:
    secretKeyRef:
      {{- include "wsgate.publishTokenSecretKeyRef" .Subcharts.wsgate | nindent 6 }}
*/}}
{{- define "wsgate.publishTokenSecretKeyRef" -}}
name: {{ include "wsgate.publishTokenSecretName" . }}
key: {{ .Values.publishToken.key }}
{{- end }}

{{/* The config file exactly as the ConfigMap carries it; the checksum annotation hashes the same text. */}}
{{- define "wsgate.configYAML" -}}
{{- toYaml .Values.config }}
{{- end }}

{{/*
Pod annotation that rolls the pods when the config, or a key given as a value (hmacSecret.value,
publishToken.value), changes. A generated publish token is left out: upgrades keep it, and a
`helm template` render would otherwise restart every pod (and cut its sockets) on each sync.
*/}}
{{- define "wsgate.configChecksum" -}}
{{- $sum := include "wsgate.configYAML" . | sha256sum }}
{{- if .Values.hmacSecret.value }}
{{- $sum = print $sum (.Values.hmacSecret.value | sha256sum) | sha256sum }}
{{- end }}
{{- if and .Values.publishToken.enabled .Values.publishToken.value }}
{{- $sum = print $sum (.Values.publishToken.value | sha256sum) | sha256sum }}
{{- end }}
{{- $sum }}
{{- end }}

{{/*
Port number of a listen address (":8080", "0.0.0.0:8080", "[::]:8080"). Called with a dict:
(dict "addr" .Values.config.listen "key" "config.listen").
*/}}
{{- define "wsgate.port" -}}
{{- $port := regexFind ":[0-9]+$" (toString .addr) | trimPrefix ":" }}
{{- if not $port }}
{{- fail (printf "%s: %q has no port (want host:port or :port)" .key (toString .addr)) }}
{{- end }}
{{- $port }}
{{- end }}

{{- define "wsgate.httpPort" -}}
{{- include "wsgate.port" (dict "addr" (.Values.config.listen | default ":8080") "key" "config.listen") }}
{{- end }}

{{- define "wsgate.adminPort" -}}
{{- include "wsgate.port" (dict "addr" (.Values.config.admin_listen | default ":9090") "key" "config.admin_listen") }}
{{- end }}

{{/*
Whole seconds (rounded up) in a Go duration string such as "25s", "1m30s", "1500ms".
Called with a dict: (dict "value" "25s" "key" "config.shutdown_grace").
*/}}
{{- define "wsgate.durationSeconds" -}}
{{- $d := toString .value }}
{{- if eq $d "0" }}
{{- 0 }}
{{- else }}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$" $d) }}
{{- fail (printf "%s: %q is not a Go duration (e.g. 25s, 1m30s)" .key $d) }}
{{- end }}
{{- $unit := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 }}
{{- $total := 0.0 }}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $d -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $part | float64 }}
{{- $u := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" $part "" }}
{{- $total = addf $total (mulf $num (get $unit $u)) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}
{{- end }}

{{- define "wsgate.shutdownGraceSeconds" -}}
{{- include "wsgate.durationSeconds" (dict "value" (.Values.config.shutdown_grace | default "25s") "key" "config.shutdown_grace") }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the kubelet must wait longer than the preStop sleep plus wsgate's
own shutdown_grace, or the last sockets are cut by SIGKILL instead of a 1001 close.
*/}}
{{- define "wsgate.terminationGracePeriodSeconds" -}}
{{- $floor := add (include "wsgate.shutdownGraceSeconds" . | int) (include "wsgate.preStopSleepSeconds" . | int) }}
{{- $set := .Values.terminationGracePeriodSeconds | default 0 | int }}
{{- if eq $set 0 }}
{{- add $floor 5 }}
{{- else if le $set $floor }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.shutdown_grace + preStopSleepSeconds (%d)" $set $floor) }}
{{- else }}
{{- $set }}
{{- end }}
{{- end }}

{{/* The preStop sleep actually used: 0 on clusters older than 1.30 (no lifecycle sleep action). */}}
{{- define "wsgate.preStopSleepSeconds" -}}
{{- if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version }}
{{- .Values.preStopSleepSeconds | default 0 | int }}
{{- else }}
{{- 0 }}
{{- end }}
{{- end }}

{{/* True ("true") when any route uses the Pub/Sub bridge. */}}
{{- define "wsgate.hasBridgeRoutes" -}}
{{- range .Values.config.routes }}
{{- if or (get . "subscribe") (get . "publish") }}true{{ end }}
{{- end }}
{{- end }}

{{/* Largest number of pods the standalone Deployment can run. */}}
{{- define "wsgate.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.maxReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/* Smallest number of pods the standalone Deployment runs (PDB only makes sense above 1). */}}
{{- define "wsgate.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express. Every template that matters includes it, so a bad combination
fails `helm template`/`helm install` before anything reaches the cluster.
*/}}
{{- define "wsgate.validate" -}}
{{- $auth := .Values.config.auth | default dict }}
{{- if get $auth "hmac_secret" }}
{{- fail "config.auth.hmac_secret must stay empty: the ConfigMap is not secret. Set hmacSecret.value or hmacSecret.existingSecret." }}
{{- end }}
{{- if and (not .Values.hmacSecret.enabled) (not (get $auth "jwks_url")) (not (get $auth "public_keys")) }}
{{- fail "no verification key: enable hmacSecret, or set config.auth.jwks_url or config.auth.public_keys" }}
{{- end }}
{{- if and .Values.hmacSecret.value .Values.hmacSecret.existingSecret }}
{{- fail "hmacSecret: set value or existingSecret, not both" }}
{{- end }}
{{- if and .Values.hmacSecret.value (lt (len .Values.hmacSecret.value) 32) }}
{{- fail "hmacSecret.value must be at least 32 bytes" }}
{{- end }}
{{- if get (.Values.config.admin | default dict) "publish_token" }}
{{- fail "config.admin.publish_token must stay empty: the ConfigMap is not secret. Set publishToken.value or publishToken.existingSecret." }}
{{- end }}
{{- if and .Values.publishToken.value .Values.publishToken.existingSecret }}
{{- fail "publishToken: set value or existingSecret, not both" }}
{{- end }}
{{- if and .Values.publishToken.value (lt (len .Values.publishToken.value) 16) }}
{{- fail "publishToken.value must be at least 16 bytes" }}
{{- end }}
{{- if and (eq .Values.mode "standalone") (include "wsgate.hasBridgeRoutes" .) (not (get (.Values.config.redis | default dict) "url")) (gt (include "wsgate.maxReplicas" . | int) 1) }}
{{- fail "config.redis.url is required when more than one replica serves bridge routes (subscribe/publish): the in-process broker does not reach other pods" }}
{{- end }}
{{- $_ := include "wsgate.terminationGracePeriodSeconds" . }}
{{- $_ := include "wsgate.httpPort" . }}
{{- $_ := include "wsgate.adminPort" . }}
{{- end }}

{{/* Volumes the wsgate container mounts; names are prefixed so they don't clash in a host pod. */}}
{{- define "wsgate.volumes" -}}
- name: wsgate-config
  configMap:
    name: {{ include "wsgate.fullname" . }}
- name: wsgate-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end }}

{{/*
The wsgate container. Shared by the standalone Deployment and by wsgate.sidecarContainer,
so both deliveries probe, mount and harden it the same way.
*/}}
{{- define "wsgate.container" -}}
- name: wsgate
  image: {{ include "wsgate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["serve", "--config", "/etc/wsgate/config.yaml"]
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: http
      containerPort: {{ include "wsgate.httpPort" . }}
      protocol: TCP
    - name: admin
      containerPort: {{ include "wsgate.adminPort" . }}
      protocol: TCP
  {{- if or .Values.hmacSecret.enabled .Values.publishToken.enabled .Values.extraEnv }}
  env:
    {{- if .Values.hmacSecret.enabled }}
    - name: WSGATE_AUTH_HMAC_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ include "wsgate.hmacSecretName" . }}
          key: {{ .Values.hmacSecret.key }}
    {{- end }}
    {{- if .Values.publishToken.enabled }}
    - name: WSGATE_ADMIN_PUBLISH_TOKEN
      valueFrom:
        secretKeyRef:
          {{- include "wsgate.publishTokenSecretKeyRef" . | nindent 10 }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.startupProbe.enabled }}
  startupProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: {{ .Values.startupProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.startupProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.startupProbe.failureThreshold }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    initialDelaySeconds: {{ .Values.livenessProbe.initialDelaySeconds }}
    periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    initialDelaySeconds: {{ .Values.readinessProbe.initialDelaySeconds }}
    periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
  {{- $sleep := include "wsgate.preStopSleepSeconds" . | int }}
  {{- if gt $sleep 0 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ $sleep }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: wsgate-config
      mountPath: /etc/wsgate
      readOnly: true
    - name: wsgate-tmp
      mountPath: /tmp
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
wsgate as a container of another workload. A host chart that depends on this chart (mode: sidecar)
writes, inside its pod spec:

  initContainers:            # native sidecar (sidecar.native: true, Kubernetes >= 1.29)
    {{- include "wsgate.sidecarContainer" .Subcharts.wsgate | nindent 4 }}
  volumes:
    {{- include "wsgate.sidecarVolumes" .Subcharts.wsgate | nindent 4 }}

and in the pod template's annotations:

  checksum/wsgate-config: {{ include "wsgate.configChecksum" .Subcharts.wsgate }}

A producer in the host pod (the app) reaches POST /publish on 127.0.0.1 and reads the token from
the Secret this chart names (wsgate.publishTokenSecretKeyRef above).

With sidecar.native: false the same include goes under containers: instead.
The host pod should set terminationGracePeriodSeconds to at least
{{ include "wsgate.terminationGracePeriodSeconds" .Subcharts.wsgate }}.
*/}}
{{- define "wsgate.sidecarContainer" -}}
{{- include "wsgate.validate" . }}
{{- if and .Values.sidecar.native (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail "sidecar.native: native sidecars (initContainers with restartPolicy Always) need Kubernetes >= 1.29; set sidecar.native=false and include wsgate.sidecarContainer under containers" }}
{{- end }}
{{- include "wsgate.container" (merge (dict "native" .Values.sidecar.native) .) }}
{{- end }}

{{- define "wsgate.sidecarVolumes" -}}
{{- include "wsgate.volumes" . }}
{{- end }}
