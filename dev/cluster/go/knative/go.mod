// Knative's CRDs, read from these module downloads (config/ of each), so the cluster
// tests validate our manifests against the real schemas. Nothing here is built.
module kubeevent-enricher/cluster/knative

go 1.25.0

require (
	knative.dev/eventing v0.49.2
	knative.dev/serving v0.49.1
)
