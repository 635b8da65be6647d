"""subscription-filter: match enriched kube events against personal ClusterSubscriptions."""
