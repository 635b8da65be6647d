"""The optional monitoring manifests and the scrape annotations fit what the functions
export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.manifests.test_overlays import find, objects

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"


def exported() -> set[str]:
    """Every metric family the four functions register."""
    import corpwechat_notifier.app
    import email_notifier.app
    import enricher.app
    import subscription_filter.app
    import subscription_filter.store
    from corpwechat_notifier.shared import metrics as notifier
    from email_notifier.shared import metrics as email_metrics
    from enricher.shared import metrics as enricher_metrics
    from subscription_filter.shared import metrics as filter_metrics

    del corpwechat_notifier, email_notifier, enricher, subscription_filter
    return {c._name for m in (notifier, email_metrics, enricher_metrics, filter_metrics)
            for c in m._made.values()}


def test_the_dashboard_uses_only_metrics_the_functions_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= {re.sub(r"_(total|bucket|count|sum)$", "", n)
                     for n in re.findall(r"kubeevent_[a-z_]+", target["expr"])}
    families = exported()
    assert used and used <= families, used - families
    for needed in ("kubeevent_notifications", "kubeevent_wecom_api_calls",
                   "kubeevent_request_duration_seconds", "kubeevent_subscriptions"):
        assert needed in used, f"the dashboard shows {needed}"


def test_every_function_is_scraped_on_its_own_port() -> None:
    objs = objects("knative")
    for name in ("kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
                 "email-notifier"):
        service = find(objs, "Service", name, "kubeevent-enricher")
        assert service is not None
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = template["spec"]["containers"][0]["ports"]
        assert annotations["prometheus.io/port"] == str(ports[0]["containerPort"])
