{{/*
What the operator may do; the same rules in cluster-wide (ClusterRole) and namespaced (Role)
mode. manifests/rbac.yaml holds the same list; tests/install/test_consistency.py proves it.
*/}}
{{- define "bem-operator.rbacRules" -}}
# The custom resource: listed and watched (the operator's cache; kopf writes nothing
# to it); status written through the status subresource (merge patch).
- apiGroups: [bem.ai]
  resources: [bemservices]
  verbs: [list, watch]
- apiGroups: [bem.ai]
  resources: [bemservices/status]
  verbs: [patch]
# BEMCheckpoints likewise: listed and watched, status written from what each pod says.
- apiGroups: [bem.ai]
  resources: [bemcheckpoints]
  verbs: [list, watch]
- apiGroups: [bem.ai]
  resources: [bemcheckpoints/status]
  verbs: [patch]
# Children, watched by owner label for drift correction (list, watch) and written by
# server-side apply (patch, plus create when absent); the operator reads them from its
# watch cache, never by get. Deployment and Service always exist; the others are deleted
# when the spec stops asking for them.
# The start list of BEMCheckpoints the pods mount, their NetworkPolicy, then the Deployment.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch]
# The runtime pods' NetworkPolicy (spec.networkPolicy, on by default).
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [list, watch, create, patch, delete]
# KEDA's ScaledObject (spec.autoscaling.provider KEDA); the HPA KEDA makes from it is read
# through the horizontalpodautoscalers watch above (it carries the ScaledObject's labels).
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [list, watch, create, patch, delete]
# The edge: Gateway API's HTTPRoute (spec.gateway; its status says whether a Gateway took
# it), with Traefik's rate-limit Middleware (spec.gateway.rateLimit), or an Ingress
# (spec.ingress).
- apiGroups: [traefik.io]
  resources: [middlewares]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [list, watch, create, patch, delete]
# Kubernetes events for what a user must know (the reconcile posts core/v1 events, never patches).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# References checked before rollout, so a missing one gives Degraded with a clear message;
# create: each BEMService's admin token for its pods' checkpoint API (made once, never
# listed or watched).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
# Runtime pods, watched by owner label and only read: their container states say whether
# the model loaded (a failure degrades the BEMService with the runtime's own message).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- end }}
