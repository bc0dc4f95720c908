#!/usr/bin/env bash
# The main job, end to end on this machine, on real pods:
#   1. a local control plane (etcd, kube-apiserver, controller-manager, scheduler) with a
#      real kubelet node (containerd, bridge CNI, kube-proxy) and a kwok-faked GPU node;
#   2. the operator and runtime images built with buildah (from a debootstrapped Debian
#      base, wheels fetched on the host) and imported into the node's containerd;
#   3. the operator installed by Helm, running as a pod under the chart's ServiceAccount;
#   4. the sample BEMService manifests/samples/image-model.yaml (toy model baked into the
#      image) Ready on the real node;
#   5. a request answered by a runtime pod through the BEMService's Service (ClusterIP), then
#      two BEMCheckpoints (manifests/samples/checkpoints.yaml) loaded on its pods and one
#      request answered by each, by name;
#   6. request-rate autoscaling: Prometheus (run by the Prometheus operator) and KEDA installed,
#      the sample switched to the KEDA provider, and a short load through the Service scales it
#      from 1 to 2+ replicas, printed as the count changes;
#   7. the edge: Traefik (installed before the operator) as the Gateway API implementation, the
#      sample published through Gateway edge/edge by spec.gateway, and one HTTPS request through
#      it, verified with the edge's own CA.
# Usage: scripts/demo.sh [--keep] [--no-scale]
#   --keep leaves the cluster running (`bem-devcluster down` stops it); --no-scale skips step 6.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0; SCALE=1
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    --no-scale) SCALE=0 ;;
    *) echo "usage: scripts/demo.sh [--keep] [--no-scale]" >&2; exit 2 ;;
  esac
done

T0=$(date +%s%N)
say() {
  local ms=$(( ($(date +%s%N) - T0) / 1000000 ))
  printf '\n== [%4d.%ds] %s\n' $((ms / 1000)) $(((ms % 1000) / 100)) "$*"
}

say "Installing what the project needs (scripts/setup.sh; cached after the first run)"
bash scripts/setup.sh
STATE="${BEM_DEVCLUSTER_DIR:-$PWD/.devcluster}"
export BEM_DEVCLUSTER_DIR="$STATE"
cleanup() {
  local rc=$?
  if [[ $KEEP -eq 0 ]]; then
    say "Tearing down (the node's iptables rules, links, mounts and cgroups go with it)"
    .venv/bin/bem-devcluster down || true
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

say "Starting the local cluster with a real node"
.venv/bin/bem-devcluster up
eval "$(.venv/bin/bem-devcluster env)"
kubectl get nodes -o wide

say "Building (when changed) and importing the images"
.venv/bin/bem-devcluster images

# Before the operator: it watches the optional kinds (HTTPRoute) the cluster serves when it starts.
say "The edge: Traefik as the Gateway API implementation, Gateway edge/edge (HTTPS for *.edge.test)"
.venv/bin/bem-devcluster edge

say "Installing the operator with Helm (helm/bem-operator, image bem-operator:0.1.0)"
export HELM_CACHE_HOME="$STATE/helm/cache" HELM_CONFIG_HOME="$STATE/helm/config" \
  HELM_DATA_HOME="$STATE/helm/data"
helm upgrade --install bem-operator helm/bem-operator -n bem-system --create-namespace \
  --wait --timeout 5m
kubectl -n bem-system get pods -o wide

say "Applying the sample BEMService manifests/samples/image-model.yaml"
kubectl create namespace bem-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl -n bem-demo apply -f manifests/samples/image-model.yaml
if ! kubectl -n bem-demo wait --for=condition=Ready bems/bem-baked --timeout=300s; then
  kubectl -n bem-demo get bems,pods -o wide >&2
  kubectl -n bem-system logs deploy/bem-operator --tail=40 >&2
  exit 1
fi
kubectl -n bem-demo get bems,deployments,services,pdb,pods -o wide

say "POST /v1/generate through the Service's ClusterIP"
CIP="$(kubectl -n bem-demo get service bem-baked -o jsonpath='{.spec.clusterIP}')"
PORT="$(kubectl -n bem-demo get service bem-baked -o jsonpath='{.spec.ports[0].port}')"
# Only once kube-proxy serves the ClusterIP here: otherwise the request would leave the
# machine by its default route.
.venv/bin/python -c "import sys; from devcluster.realnode import wait_served_here as w; print('$CIP is', w(sys.argv[1]))" "$CIP"
curl -sS --fail-with-body -m 60 -X POST "http://$CIP:$PORT/v1/generate" \
  -H 'Content-Type: application/json' \
  -d '{"prompt": "The operator reconciled", "max_new_tokens": 24, "temperature": 0, "seed": 7}' \
  | .venv/bin/python -m json.tool
POD="$(kubectl -n bem-demo get pods -l bem.ai/service=bem-baked -o jsonpath='{.items[0].metadata.name}')"
say "The runtime pod's own log (kubectl logs $POD, JSON lines)"
kubectl -n bem-demo logs "$POD" --tail=3

say "Two more checkpoints on the same pods (manifests/samples/checkpoints.yaml): no pod restarts"
kubectl -n bem-demo apply -f manifests/samples/checkpoints.yaml
if ! kubectl -n bem-demo wait --for=condition=Ready bemck/alpha bemck/beta --timeout=120s; then
  kubectl -n bem-demo get bemck -o yaml >&2
  exit 1
fi
kubectl -n bem-demo get bemck -o wide
for MODEL in alpha beta; do
  say "POST /v1/generate with \"model\": \"$MODEL\" through the Service"
  curl -sS --fail-with-body -m 60 -X POST "http://$CIP:$PORT/v1/generate" \
    -H 'Content-Type: application/json' \
    -d "{\"model\": \"$MODEL\", \"prompt\": \"The operator reconciled\", \"max_new_tokens\": 12, \"temperature\": 0, \"seed\": 7}" \
    | .venv/bin/python -m json.tool
done

if [[ $SCALE -eq 1 ]]; then
  say "Installing Prometheus (by the Prometheus operator) and KEDA into the cluster"
  .venv/bin/bem-devcluster addons
  PROM="$(.venv/bin/python -c 'from devcluster.addons import PROMETHEUS_URL as u; print(u)')"
  helm upgrade bem-operator helm/bem-operator -n bem-system --reuse-values --wait --timeout 5m \
    --set "autoscaling.keda.prometheusAddress=$PROM"
  # The operator finds KEDA's ScaledObject API when it starts.
  kubectl -n bem-system rollout restart deployment/bem-operator
  kubectl -n bem-system rollout status deployment/bem-operator --timeout=180s

  say "Switching the sample to request-rate autoscaling by KEDA (1..3 pods, 1 request/s per pod)"
  kubectl -n bem-demo patch bems bem-baked --type merge -p '{"spec": {"replicas": null,
    "monitoring": {"serviceMonitor": true, "interval": "5s"},
    "autoscaling": {"provider": "KEDA", "minReplicas": 1, "maxReplicas": 3,
      "targetRequestsPerSecond": 1,
      "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                               "policies": [{"type": "Pods", "value": 2, "periodSeconds": 5}]}}}}}'
  kubectl -n bem-demo wait --for=condition=Ready bems/bem-baked --timeout=120s
  kubectl -n bem-demo get scaledobject bem-baked

  say "A short load through the ClusterIP (3 request loops, at most 150 s): the replica count"
  .venv/bin/python -m devcluster.traffic "http://$CIP:$PORT" --loops 3 --seconds 150 \
    --namespace bem-demo --deployment bem-baked --until-ready 2
  kubectl -n bem-demo get bems bem-baked -o wide
fi

say "Publishing the sample through the Gateway edge/edge (spec.gateway)"
kubectl -n bem-demo patch bems bem-baked --type merge -p '{"spec": {"gateway": {
  "parentRefs": [{"name": "edge", "namespace": "edge"}], "hostnames": ["bem-baked.edge.test"]}}}'
kubectl -n bem-demo wait --for=condition=Gateway bems/bem-baked --timeout=60s
kubectl -n bem-demo get httproute bem-baked
kubectl -n bem-demo get bems bem-baked -o jsonpath='{.status.gateway.url}{"\n"}'
GIP="$(kubectl -n edge get service edge -o jsonpath='{.spec.clusterIP}')"
.venv/bin/python -c "import sys; from devcluster.realnode import wait_served_here as w; print('$GIP is', w(sys.argv[1]))" "$GIP"
say "POST https://bem-baked.edge.test/v1/generate through the Gateway ($GIP), verified with the edge CA"
HEADERS="$(mktemp)"
# The route is accepted before Traefik has programmed it: a few quick retries.
curl -sS --fail-with-body -m 60 --retry 10 --retry-delay 1 --retry-all-errors \
  --cacert "$STATE/edge-pki/ca.crt" --resolve "bem-baked.edge.test:443:$GIP" -D "$HEADERS" \
  -X POST https://bem-baked.edge.test/v1/generate -H 'Content-Type: application/json' \
  -d '{"prompt": "The operator reconciled", "max_new_tokens": 12, "temperature": 0, "seed": 7}' \
  | .venv/bin/python -m json.tool
grep -i -E '^(HTTP/|strict-transport-security|x-content-type-options)' "$HEADERS"
rm -f "$HEADERS"

if [[ $KEEP -eq 1 ]]; then
  say "Everything keeps running: eval \"\$(.venv/bin/bem-devcluster env)\"; 'bem-devcluster down' stops it."
fi
say "Demo finished"
