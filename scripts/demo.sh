#!/usr/bin/env bash
# The main job, end to end on this machine:
#   1. a real local control plane (etcd, kube-apiserver, controller-manager,
#      scheduler, kwok nodes: one GPU node, one CPU node);
#   2. the CRD and least-privilege RBAC from manifests/, the operator running
#      as its own ServiceAccount;
#   3. a sample BEMService applied and shown Ready (kwok runs its pods);
#   4. a live runtime process serving a tiny offline toy model with BEM
#      routing, answering a real /v1/generate request.
# kwok pods do not execute containers, so step 4 runs the very same runtime
# command the pods run, as a local process on 127.0.0.1.
# Usage: scripts/demo.sh [--keep]   (--keep leaves everything running)
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0; [[ "${1:-}" == "--keep" ]] && KEEP=1

say() { printf '\n== %s\n' "$*"; }
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bash scripts/setup.sh
STATE="${BEM_DEVCLUSTER_DIR:-$PWD/.devcluster}"
export BEM_DEVCLUSTER_DIR="$STATE"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $KEEP -eq 0 ]]; then .venv/bin/bem-devcluster down >/dev/null 2>&1 || true; fi
  exit $rc
}
trap cleanup EXIT INT TERM

say "Starting the local control plane"
.venv/bin/bem-devcluster up
eval "$(.venv/bin/bem-devcluster env)"
kubectl get nodes -L nvidia.com/gpu.product

say "Installing the CRD, namespace and RBAC (kubectl apply -f manifests/)"
kubectl apply --server-side -f manifests/crd.yaml -f manifests/namespace.yaml -f manifests/rbac.yaml
kubectl wait --for=condition=Established crd/bemservices.bem.ai --timeout=60s

say "Running the operator as ServiceAccount bem-system/bem-operator (not cluster-admin)"
mkdir -p "$STATE/demo"
SA_KUBECONFIG="$STATE/demo/operator.kubeconfig"
cp "$KUBECONFIG" "$SA_KUBECONFIG"
token="$(kubectl -n bem-system create token bem-operator --duration=24h)"
KUBECONFIG="$SA_KUBECONFIG" kubectl config set-credentials bem-operator --token="$token" >/dev/null
KUBECONFIG="$SA_KUBECONFIG" kubectl config set-context --current --user=bem-operator >/dev/null
BEM_OPERATOR_BIND_ADDRESS=127.0.0.1 BEM_OPERATOR_METRICS_PORT="$(free_port)" \
  BEM_OPERATOR_HEALTH_PORT="$(free_port)" KUBECONFIG="$SA_KUBECONFIG" \
  .venv/bin/bem-operator >"$STATE/demo/operator.log" 2>&1 &
PIDS+=($!)

say "Applying the sample BEMService manifests/samples/image-model.yaml"
kubectl create namespace bem-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl -n bem-demo apply -f manifests/samples/image-model.yaml
if ! kubectl -n bem-demo wait --for=condition=Ready bems/bem-baked --timeout=180s; then
  echo "The BEMService did not become Ready; operator log:" >&2
  tail -50 "$STATE/demo/operator.log" >&2
  exit 1
fi
kubectl -n bem-demo get bems,deployments,services,pdb,pods -o wide

say "Serving a toy model with the runtime (bem-runtime serve on 127.0.0.1)"
TOY="$STATE/demo/toy"
[[ -d "$TOY/base" ]] || .venv/bin/bem-runtime make-toy --out "$TOY"
echo "demo-key-$(date +%s)" >"$STATE/demo/api-key"
PORT="$(free_port)"
.venv/bin/bem-runtime serve --model-dir "$TOY/base" --bem-dir "$TOY/bem" --model-name bem-baked \
  --host 127.0.0.1 --port "$PORT" --api-key-file "$STATE/demo/api-key" \
  >"$STATE/demo/runtime.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || { tail -30 "$STATE/demo/runtime.log" >&2; exit 1; }

say "POST /v1/generate"
curl -sS -X POST "http://127.0.0.1:$PORT/v1/generate" \
  -H "Authorization: Bearer $(cat "$STATE/demo/api-key")" -H 'Content-Type: application/json' \
  -d '{"prompt": "The operator reconciled", "max_new_tokens": 24, "temperature": 0, "seed": 7}' \
  | .venv/bin/python -m json.tool
curl -sS "http://127.0.0.1:$PORT/metrics" | grep -E '^bem_(requests_total|routing_decisions_total)' | head -8

if [[ $KEEP -eq 1 ]]; then
  say "Everything keeps running: eval \"\$(.venv/bin/bem-devcluster env)\"; runtime on 127.0.0.1:$PORT. Ctrl-C stops the operator and runtime; 'bem-devcluster down' stops the cluster."
  wait
fi
say "Demo finished"
