#!/usr/bin/env bash
# Build the real control plane the cluster tests run against, from the Go modules pinned in
# dev/cluster/go: kube-apiserver, kubectl, etcd; Knative Eventing's own commands (its
# ApiServerSource and PingSource adapters, and the MT channel-based Broker with its
# InMemoryChannel, controllers and webhook: dev/cluster/eventing.py runs them); Knative's
# NATS JetStream channel (eventing-natss controller and dispatcher) and the nats-server it
# pins (dev/cluster/natss.py); Knative's func CLI (v0.49.2, the func of Knative 1.22); and
# Mailpit (v1.33.1), a real SMTP server for the email notifier's tests.
#
#   dev/cluster/build.sh            # build into .cluster/bin unless it is already current
#   dev/cluster/build.sh --check    # exit 0 when .cluster/bin is current, 1 otherwise
#   dev/cluster/build.sh --if-go    # build when Go is on PATH; without it say so in one line
#                                     # and exit 0 (under CI=true: exit 1)
#
# The binaries are rebuilt only when a go.mod/go.sum, this script or `go version` changes
# (their hash is kept in .cluster/bin/.stamp). Nothing is downloaded except Go modules.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
GO_DIR=$ROOT/dev/cluster/go
OUT=$ROOT/.cluster/bin
K8S_VERSION=v1.35.4
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"

if ! command -v go >/dev/null 2>&1; then
  if [ "${1:-}" = "--if-go" ] && [ "${CI:-}" != "true" ]; then
    echo "real-cluster tests skipped: no Go toolchain on PATH to build .cluster/bin (tests/cluster)"
    exit 0
  fi
  echo "build.sh: no Go toolchain (go) on PATH: the real-cluster tests need it" >&2
  exit 3
fi

# Knative Eventing's commands (module dev/cluster/go/adapter): binary name -> package.
declare -A EVENTING=(
  [apiserver_receive_adapter]=knative.dev/eventing/cmd/apiserver_receive_adapter
  [mtping]=knative.dev/eventing/cmd/mtping
  [broker_ingress]=knative.dev/eventing/cmd/broker/ingress
  [broker_filter]=knative.dev/eventing/cmd/broker/filter
  [imc_dispatcher]=knative.dev/eventing/cmd/in_memory/channel_dispatcher
  [imc_controller]=knative.dev/eventing/cmd/in_memory/channel_controller
  [mtchannel_broker]=knative.dev/eventing/cmd/mtchannel_broker
  [eventing_controller]=knative.dev/eventing/cmd/controller
  [eventing_webhook]=knative.dev/eventing/cmd/webhook
)
EVENTING_ORDER=(apiserver_receive_adapter mtping broker_ingress broker_filter imc_dispatcher
  imc_controller mtchannel_broker eventing_controller eventing_webhook)
# The durable channel (module dev/cluster/go/natss).
declare -A NATSS=(
  [nats-server]=github.com/nats-io/nats-server/v2
  [natss_controller]=knative.dev/eventing-natss/cmd/jetstream/controller
  [natss_dispatcher]=knative.dev/eventing-natss/cmd/jetstream/dispatcher
)
NATSS_ORDER=(nats-server natss_controller natss_dispatcher)
# A real SMTP server for the email notifier (module dev/cluster/go/mailpit; Go 1.26).
MAILPIT=github.com/axllent/mailpit

stamp() {
  {
    go version
    cat "$0"
    cat "$GO_DIR"/*/go.mod "$GO_DIR"/*/go.sum
  } | sha256sum | cut -d' ' -f1
}
WANT=$(stamp)
current() { [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$WANT" ] \
  && for b in kube-apiserver kubectl etcd func mailpit "${!EVENTING[@]}" "${!NATSS[@]}"; do
       [ -x "$OUT/$b" ] || return 1; done; }

if [ "${1:-}" = "--check" ]; then current; exit; fi
if current; then echo "cluster binaries are current in .cluster/bin"; exit 0; fi

mkdir -p "$OUT"
rm -f "$OUT/.stamp"
K8S_MINOR=${K8S_VERSION#v1.}; K8S_MINOR=${K8S_MINOR%%.*}
# Without these /version says v0.0.0-master and clients warn about version skew.
LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
  LDF="$LDF -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

started=$(date +%s)
step() { echo "[cluster build $(( $(date +%s) - started ))s] $*"; }

# Module downloads are their own step: a network hiccup is retried, a build failure is not.
# func's module graph names versions the proxy does not serve (knative.dev/eventing
# v0.49.0) that no package of the func command imports: download what the build needs.
download() {
  case $1 in
    func) go list -deps knative.dev/func/cmd/func >/dev/null ;;
    *) go mod download ;;
  esac
}
for mod in controlplane adapter knative natss func mailpit; do
  for attempt in 1 2 3; do
    step "downloading modules for $mod (attempt $attempt)"
    if (cd "$GO_DIR/$mod" && download "$mod"); then break; fi
    [ "$attempt" = 3 ] && { echo "build.sh: go mod download failed for $mod" >&2; exit 1; }
    sleep 5
  done
done

build() {  # build MODULE OUTPUT PACKAGE LDFLAGS
  local mod=$1 name=$2 pkg=$3 ldflags=$4
  step "building $name ($pkg); a cold build takes minutes"
  # Print a line every minute so a long compile is visibly alive.
  ( while sleep 60; do step "still building $name"; done ) &
  local ticker=$!
  if ! (cd "$GO_DIR/$mod" && go build -p 2 -ldflags "$ldflags" -o "$OUT/$name.tmp" "$pkg"); then
    kill "$ticker" 2>/dev/null || true
    echo "build.sh: building $name failed" >&2
    exit 1
  fi
  kill "$ticker" 2>/dev/null || true
  mv "$OUT/$name.tmp" "$OUT/$name"
}
build controlplane etcd go.etcd.io/etcd/server/v3 "-s -w"
build controlplane kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$LDF"
build controlplane kubectl k8s.io/kubernetes/cmd/kubectl "$LDF"
for name in "${EVENTING_ORDER[@]}"; do
  build adapter "$name" "${EVENTING[$name]}" "-s -w"
done
for name in "${NATSS_ORDER[@]}"; do
  build natss "$name" "${NATSS[$name]}" "-s -w"
done
build func func knative.dev/func/cmd/func "-s -w -X knative.dev/func/pkg/version.Vers=v0.49.2"
build mailpit mailpit "$MAILPIT" "-s -w"

echo "$WANT" > "$OUT/.stamp"
step "done: $("$OUT/kube-apiserver" --version), $("$OUT/etcd" --version | head -1)"
