"""The real Kubernetes control plane (kube-apiserver, etcd, kubectl) and Knative's own
ApiServerSource adapter, built from Go modules, and the tests that run against them."""
