"""corpwechat-notifier: WeCom calls per notification and overhead per message.

Against the WeCom sandbox and the fake API server (the shipped templates, the
katanomi-config mapping), the notifier under functions-framework:

* tokens: a burst of concurrent first notifications, then sequential ones, all in
  one token lifetime; then the sandbox clock passes the token's expiry and more
  notifications follow. Target: one ``gettoken`` per token lifetime.
* fan-out: one notification to 1,000 recipients whose message is the same (the
  shipped templates do not depend on the subscriber). Target: one ``message/send``.
  Done twice: the first resolves 1,000 user ids by mail, the second finds them cached.
* overhead: one recipient, caches warm, sequential; the latency of a notification
  next to the sandbox's own ``message/send`` round trip measured from here,
  alternating. The difference is the notifier's overhead per message.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from bench.common import (
    BenchProcess,
    emit,
    log,
    ms,
    percentile,
    profile_path,
    run_load,
    session,
    show_profile,
    table,
)
from bench.world import World, sized_promotion_run
from dev.fakes.wecom import GETTOKEN, MESSAGE_SEND, USERID_BY_EMAIL, WeComSandbox
from dev.support.factory import enriched_event, notification_request, recipient
from dev.support.seed import ROOT
from dev.support.wire import to_binary

NAME = "notifier"
FUNCTION = "corpwechat-notifier"
NS = "cpaas-system"
CORP_ID, AGENT = "ww0123456789abcdef", 1000002
SECRET = "Fx7_Qp-s3cret-Vw9zKd2LmN4bR8tY6uJ1hG5cX3eA0"
PLATFORM_URL = "https://acp.example.com"
FANOUT = 1_000
TEMPLATES = ROOT / "manifests" / "templates" / "kubeevent.artifactpromotionrun.template.yaml"
CONFIG = ROOT / "manifests" / "base" / "katanomi-config.yaml"
CRDS = ROOT / "manifests" / "crds"
DELIVERY_CRD = ROOT / "manifests" / "delivery" / "notificationdeliveries.yaml"


def user(i: int) -> str:
    return f"user{i:05d}"


def setup_kube(world: World) -> None:
    kube = world.kube
    kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    if CRDS.exists():
        kube.load_yaml(CRDS)
    kube.load_yaml(DELIVERY_CRD)  # the delivery records, as deployed
    # What `export PLATFORM_URL=...; cat ... | envsubst | kubectl apply -f -` creates:
    # the file holds no other dollar sign.
    kube.load_yaml(TEMPLATES.read_text(encoding="utf-8").replace("${PLATFORM_URL}",
                                                                  PLATFORM_URL))
    kube.load_yaml(CONFIG)


@contextmanager
def sandbox(users: int = FANOUT) -> Iterator[WeComSandbox]:
    names = [user(i) for i in range(users)] + ["admin"]
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT, users=names,
                      emails={f"{n}@example.com": n for n in names}) as wecom:
        yield wecom


def notifier_env(world: World, wecom: WeComSandbox) -> dict[str, str]:
    return {"KUBECONFIG": str(world.kubeconfig), "SYSTEM_NAMESPACE": NS,
            "CORPWECHAT_API_URL": wecom.api_url, "CORPWECHAT_CORP_ID": CORP_ID,
            "CORPWECHAT_CORP_SECRET": SECRET, "CORPWECHAT_AGENT_ID": str(AGENT),
            "PLATFORM_URL": PLATFORM_URL,
            # What is measured includes the mail lookups (both sources are opt-in).
            "CORPWECHAT_USERID_BY_MAIL": "true", "CORPWECHAT_USERID_FROM_USERNAME": "true"}


def notification(recipients: list[dict[str, Any]], run: str) -> tuple[dict[str, str], bytes]:
    """A notification request for an approval-pending run named ``run`` (~20 KB event)."""
    enriched = enriched_event("approvalpending", obj=sized_promotion_run(run, "devops"))
    headers, body = to_binary(notification_request(enriched, recipients=recipients))
    return dict(headers), body


def people(n: int) -> list[dict[str, Any]]:
    return [recipient(user(i), mail=f"{user(i)}@example.com") for i in range(n)]


def counts(wecom: WeComSandbox) -> dict[str, int]:
    return {e: len(wecom.calls_to(e)) for e in (GETTOKEN, MESSAGE_SEND, USERID_BY_EMAIL)}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def tokens(proc: BenchProcess, wecom: WeComSandbox, *, burst: int, sequential: int,
           after: int) -> dict[str, Any]:
    """gettoken calls in one token lifetime (cold start burst + sequential), then the next."""
    start = counts(wecom)
    jobs = [notification([recipient("admin")], f"token-run-{i}") for i in range(burst)]
    statuses: list[int] = []
    barrier = threading.Barrier(burst)

    def fire(i: int) -> None:
        headers, body = jobs[i]
        barrier.wait()
        statuses.append(requests.post(proc.url, data=body, headers=headers, timeout=60)
                        .status_code)

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seq = run_load(proc.url, lambda i: notification([recipient("admin")], f"seq-run-{i}"),
                   sequential, concurrency=1)
    first = delta(counts(wecom), start)
    wecom.advance(wecom.token_ttl + 1)  # the token's lifetime is over (sandbox clock)
    mark = counts(wecom)
    later = run_load(proc.url, lambda i: notification([recipient("admin")], f"late-run-{i}"),
                     after, concurrency=1)
    second = delta(counts(wecom), mark)
    ok = all(s == 202 for s in statuses) and seq.ok(202) and later.ok(202)
    return {"notifications_first_lifetime": burst + sequential,
            "concurrent_first": burst,
            "gettoken_first_lifetime": first[GETTOKEN],
            "notifications_second_lifetime": after,
            "gettoken_second_lifetime": second[GETTOKEN],
            "all_202": ok,
            "met": ok and first[GETTOKEN] == 1 and second[GETTOKEN] == 1}


def fanout(proc: BenchProcess, wecom: WeComSandbox, n: int) -> list[dict[str, Any]]:
    """One notification to ``n`` recipients with the same message: cold, then warm lookups."""
    rows = []
    for label in ("user ids looked up", "user ids cached"):
        headers, body = notification(people(n), f"fanout-run-{label[9:15]}")
        before = counts(wecom)
        delivered = len(wecom.delivered)
        t0 = time.perf_counter()
        status = requests.post(proc.url, data=body, headers=headers, timeout=300).status_code
        elapsed = time.perf_counter() - t0
        calls = delta(counts(wecom), before)
        rows.append({"case": label, "recipients": n, "status": status,
                     "message_send": calls[MESSAGE_SEND],
                     "get_userid_by_email": calls[USERID_BY_EMAIL],
                     "gettoken": calls[GETTOKEN],
                     "delivered": len(wecom.delivered) - delivered,
                     "latency_ms": ms(elapsed),
                     "met": status == 202 and calls[MESSAGE_SEND] == 1})
    return rows


def overhead(proc: BenchProcess, wecom: WeComSandbox, count: int) -> dict[str, Any]:
    """Notification latency vs the sandbox's message/send round trip, alternating."""
    client = session(2)
    direct: list[float] = []
    via: list[float] = []
    url = f"{wecom.api_url}/message/send"
    cpu0 = proc.cpu()
    for i in range(count):
        token = wecom.issue_token()
        payload = json.dumps({"touser": "admin", "msgtype": "text", "agentid": AGENT,
                              "text": {"content": f"direct message {i}"},
                              "enable_duplicate_check": 1,
                              "duplicate_check_interval": 1800}).encode()
        t0 = time.perf_counter()
        answer = client.post(url, params={"access_token": token}, data=payload,
                             headers={"Content-Type": "application/json"}, timeout=30)
        direct.append(time.perf_counter() - t0)
        if answer.json().get("errcode") != 0:
            raise RuntimeError(f"sandbox answered {answer.text}")
        request = notification([recipient("admin")], f"oh-run-{i}")
        one = run_load(proc.url, lambda _, r=request: r, 1, concurrency=1, client=client)
        if not one.ok(202):
            raise RuntimeError(f"notifier answered {dict(one.statuses)}")
        via += one.latencies
    cpu_ms = (proc.cpu() - cpu0) * 1000.0 / count
    d50, v50 = percentile(direct, 50), percentile(via, 50)
    return {"notifications": count, "sandbox_p50_ms": ms(d50),
            "notifier_p50_ms": ms(v50), "notifier_p95_ms": ms(percentile(via, 95)),
            "overhead_p50_ms": ms(v50 - d50), "notifier_cpu_ms": round(cpu_ms, 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    burst, sequential, after, count = (8, 10, 5, 15) if args.quick else (16, 40, 20, 60)
    with World() as world, sandbox() as wecom:
        setup_kube(world)
        proc = BenchProcess(FUNCTION, env=notifier_env(world, wecom),
                            profile=profile_path("notifier", args.profile))
        try:
            proc.start(timeout=60)
            log(f"notifier: tokens ({burst} concurrent + {sequential} sequential, then "
                f"{after} after expiry)")
            token = tokens(proc, wecom, burst=burst, sequential=sequential, after=after)
            log(f"notifier: one notification to {FANOUT} recipients")
            fan = fanout(proc, wecom, FANOUT)
            log(f"notifier: overhead over the sandbox round trip ({count} notifications)")
            over = overhead(proc, wecom, count)
            rss = proc.rss()
        finally:
            proc.stop()
        for line in show_profile(proc.profile):
            print("   ", line)
    table("corpwechat-notifier: gettoken per token lifetime (target 1)",
          ["notifications", "concurrent first", "gettoken", "after expiry", "gettoken",
           "met"],
          [[token["notifications_first_lifetime"], token["concurrent_first"],
            token["gettoken_first_lifetime"], token["notifications_second_lifetime"],
            token["gettoken_second_lifetime"], token["met"]]])
    table(f"corpwechat-notifier: one notification to {FANOUT} recipients, same content "
          "(target: 1 message/send)",
          ["case", "status", "message/send", "get_userid_by_email", "delivered", "latency ms",
           "met"],
          [[r["case"], r["status"], r["message_send"], r["get_userid_by_email"],
            r["delivered"], r["latency_ms"], r["met"]] for r in fan])
    table("corpwechat-notifier: per-message overhead over the sandbox round trip",
          ["n", "sandbox p50 ms", "notifier p50 ms", "p95 ms", "overhead p50 ms",
           "notifier CPU ms", "RSS MB"],
          [[over["notifications"], over["sandbox_p50_ms"], over["notifier_p50_ms"],
            over["notifier_p95_ms"], over["overhead_p50_ms"], over["notifier_cpu_ms"],
            rss["rss_mb"]]])
    return emit(NAME, {"tokens": token, "fanout": fan, "overhead": over, **rss})


def coldstart_subject(world: World) -> Any:
    """A notification to one recipient, delivered through the sandbox."""
    from bench.coldstart import Subject

    setup_kube(world)
    stack = world.enter_context(sandbox(users=1))

    def request() -> tuple[dict[str, str], bytes, dict[str, str]]:
        headers, body = notification([recipient("admin")], f"cold-{uuid.uuid4().hex[:8]}")
        return headers, body, {}

    return Subject(FUNCTION, lambda runtime: BenchProcess(
        FUNCTION, runtime=runtime, env=notifier_env(world, stack)), request, ok=(202,),
        reset=lambda: stack.reset(tokens=True))
