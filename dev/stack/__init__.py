"""The local dev stack: a dev broker routing by the Trigger manifests, and the chain."""
