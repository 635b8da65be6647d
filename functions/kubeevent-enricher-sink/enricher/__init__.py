"""kubeevent-enricher-sink: join a Kubernetes Event to its object, emit an enriched CloudEvent."""
