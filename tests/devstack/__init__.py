"""Tests of the dev stack (dev/stack): its broker and the chain it runs. They run on the
dev broker, an imitation of Knative's kept to what the manifests use; what only
Knative's own broker shows is tested through it in tests/cluster."""
