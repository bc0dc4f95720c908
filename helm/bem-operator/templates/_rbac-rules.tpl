{{/*
What the operator may do; the same rules in cluster-wide (ClusterRole) and namespaced (Role)
mode. manifests/rbac.yaml holds the same list; tests/install/test_consistency.py proves it.
*/}}
{{- define "bem-operator.rbacRules" -}}
# The custom resource: watched, read, annotated by kopf's progress storage (patch);
# status written through the status subresource (merge patch).
- apiGroups: [bem.ai]
  resources: [bemservices]
  verbs: [get, list, watch, patch]
- apiGroups: [bem.ai]
  resources: [bemservices/status]
  verbs: [patch]
# Children: server-side apply (patch, plus create when absent), read, deleted when
# no longer wanted, watched by owner label for drift correction.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, list, watch, create, patch, delete]
# Kubernetes events for what a user must know (kopf posts core/v1 events, never patches).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# References checked before rollout, so a missing one gives Degraded with a clear message.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
{{- end }}
