"""email-notifier as a running function, over HTTP in both runtimes and CloudEvent modes,
against a real SMTP server (Mailpit): what arrives, who is refused, what is retried, TLS
and AUTH, and each recipient told once across replicas and restarts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from dev.support.mailpit import Mailpit
from dev.support.procs import FunctionProcess
from dev.support.wire import event as plain_event
from shared.events import Event
from tests.corpwechat_notifier.support import (
    PLATFORM_URL,
    add_notification_objects,
    b64,
)

NS = "cpaas-system"
DELIVERY_API = "kubeevent.io/v1alpha1"
SENDER = "Katanomi <noreply@example.com>"
SMTP_USER, SMTP_PASSWORD = "kubeevent", "Smtp-p4ss-w0rd-Lk29"
RUN_URL = f"{PLATFORM_URL}/console-devops/workspace/devops/artifactpromotionruns/my-promotion"
BOTH = ("corpwechat", "email")
SWEEP = plain_event({"type": "dev.knative.sources.ping", "source": "/apis/v1/namespaces/"
                     "kubeevent-enricher/pingsources/kubeevent-email-sweep"},
                    {"sweep": "notificationdeliveries"})




@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        add_notification_objects(api, NS)
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "email-users", "namespace": NS},
                 "data": {"admin": "admin@corp.example", "bob": "bob@corp.example",
                          "alice": "alice@corp.example",
                          "blocked": "blocked@elsewhere.example", "mallory": "not an address"}})
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "email-groups", "namespace": NS},
                 "data": {"release-managers": "rm1@corp.example, rm2@corp.example, bad"}})
        yield api


@pytest.fixture(scope="module")
def mailpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailpit]:
    """Plain SMTP; addresses outside corp.example are refused at RCPT TO (550), as a real
    server refuses an unknown mailbox."""
    with Mailpit(tmp_path_factory.mktemp("mailpit"),
                 allowed_recipients=r"@corp\.example$") as server:
        yield server


@pytest.fixture(autouse=True)
def clean(mailpit: Mailpit, kube: FakeKubeAPI) -> Iterator[None]:
    mailpit.clear()
    mailpit.chaos()
    kube.clear_faults()
    yield
    mailpit.chaos()


def environment(kube: FakeKubeAPI, path: Path, **extra: str) -> dict[str, str]:
    env = {
        "KUBECONFIG": str(kube.write_kubeconfig(path / "kubeconfig")),
        "SYSTEM_NAMESPACE": NS,
        "PLATFORM_URL": PLATFORM_URL,
        "TEMPLATE_CACHE_SECONDS": "0",
        "EMAIL_SETTINGS_CACHE_SECONDS": "0",
        "EMAIL_SMTP_DEADLINE_SECONDS": "5",
        "DELIVERY_SWEEP_INTERVAL_SECONDS": "1",
        "DELIVERY_RETENTION_INTERVAL_SECONDS": "1",
    }
    env.update(extra)
    return env


def plain_smtp(mailpit: Mailpit) -> dict[str, str]:
    return {"EMAIL_SMTP_HOST": "127.0.0.1", "EMAIL_SMTP_PORT": str(mailpit.smtp_port),
            "EMAIL_SMTP_TLS": "none", "EMAIL_FROM": SENDER}


def start(runtime: str, env: dict[str, str]) -> FunctionProcess:
    return FunctionProcess("email-notifier", runtime=runtime, env=env).start()


@pytest.fixture(scope="module")
def ff(kube, mailpit, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = start("ff", environment(kube, tmp_path_factory.mktemp("ff"), **plain_smtp(mailpit)))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def func(kube, mailpit, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = start("func", environment(kube, tmp_path_factory.mktemp("func"),
                                     **plain_smtp(mailpit)))
    yield proc
    proc.stop()


def request(*recipients: dict[str, Any], reason: str = "approvalpending", **kwargs: Any
            ) -> Event:
    return factory.notification_request(factory.enriched_event(reason),
                                        recipients=list(recipients), **kwargs)


def approvers() -> Event:
    """The seed's approval-pending request, admin and bob on corpwechat and email."""
    admin = factory.seed_recipient()
    admin["channels"] = list(BOTH)
    return request(admin, factory.recipient("bob", channels=BOTH))


def records_of(kube: FakeKubeAPI, notification: str) -> dict[str, dict[str, Any]]:
    """subscriber → the email NotificationDelivery of ``notification``."""
    return {o["spec"]["recipient"]["name"]: o
            for o in kube.objects(DELIVERY_API, "NotificationDelivery", NS)
            if o["spec"]["notification"] == notification and o["spec"]["channel"] == "email"}


def received(mailpit: Mailpit) -> dict[str, int]:
    """Address → how many emails it received."""
    return {address: len(got) for address, got in mailpit.by_recipient().items()}


# ---------------------------------------------------------------- acceptance


@pytest.mark.parametrize("runtime", ["ff", "func"])
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_seed_approval_pending_is_one_email_to_each_approver(request, kube, mailpit, runtime,
                                                             mode):
    proc = request.getfixturevalue(runtime)
    event = approvers()
    answer = factory.post(proc.url, event, mode=mode)
    assert answer.status_code == 202, answer.text
    assert received(mailpit) == {"admin@corp.example": 1, "bob@corp.example": 1}
    (mail,) = mailpit.to("bob@corp.example")
    assert [t["Address"] for t in mail["To"]] == ["bob@corp.example"], "each alone"
    assert mail["From"]["Address"] == "noreply@example.com"
    assert mail["Subject"].startswith("制品晋级待您审批 / Artifact promotion awaiting your "
                                      "approval: devops/my-promotion")
    for expected in ("Requested by: alice", "registry.example.com/devops/app:v1.2.3",
                     "To: registry.example.com/prod/app", RUN_URL):
        assert expected in mail["Text"]
    assert f'<a href="{RUN_URL}">' in mail["HTML"]
    headers = mailpit.headers(mail["ID"])
    assert headers["Auto-Submitted"] == ["auto-generated"]
    assert headers["Content-Type"][0].startswith("multipart/alternative")
    made = records_of(kube, event["id"])
    assert {name: r["status"]["phase"] for name, r in made.items()} == \
        {"admin": "Sent", "bob": "Sent"}
    assert made["bob"]["metadata"]["labels"]["kubeevent.io/channel"] == "email"


def test_values_are_html_escaped_in_the_html_part(ff, mailpit):
    run = factory.promotion_run()
    run["spec"]["artifact"] = '<img src=x onerror="alert(1)">registry.example.com/a:v1'
    enriched = factory.enriched_event("approvalpending", obj=run)
    event = factory.notification_request(
        enriched, recipients=[factory.recipient("bob", channels=("email",))])
    assert factory.post(ff.url, event).status_code == 202
    (mail,) = mailpit.to("bob@corp.example")
    assert "<img" not in mail["HTML"] and "&lt;img src=x" in mail["HTML"]
    assert '<img src=x onerror="alert(1)">' in mail["Text"], "plain text is not HTML"


def test_recipients_without_email_in_their_channels_get_nothing(ff, mailpit):
    answer = factory.post(ff.url, request(factory.recipient("bob")))
    assert answer.status_code == 202, answer.text
    assert mailpit.messages() == []


def test_addresses_come_from_the_admin_not_from_the_subscription(ff, kube, mailpit,
                                                                 tmp_path):
    """carol subscribes with bob's address: by default it is not believed (she is not in
    email-users: nothing is sent, her record says why); opted in, it is used."""
    carol = factory.recipient("carol", mail="bob@corp.example", channels=("email",))
    mallory = factory.recipient("mallory", channels=("email",))
    event = request(carol, mallory)
    assert factory.post(ff.url, event).status_code == 202
    assert mailpit.messages() == []
    made = records_of(kube, event["id"])
    assert {n: (r["status"]["phase"], r["status"]["reason"]) for n, r in made.items()} == \
        {"carol": ("Refused", "NoTarget"), "mallory": ("Refused", "NoTarget")}
    proc = start("ff", environment(kube, tmp_path, EMAIL_ADDRESS_FROM_SUBSCRIPTION="true",
                                   **plain_smtp(mailpit)))
    try:
        again = request(carol)
        assert factory.post(proc.url, again).status_code == 202
        assert received(mailpit) == {"bob@corp.example": 1}
    finally:
        proc.stop()


def test_a_group_goes_to_the_addresses_the_admin_mapped_it_to(ff, mailpit):
    group = factory.recipient("release-managers", channels=("email",))
    group["subscriber"]["kind"] = "Group"
    answer = factory.post(ff.url, request(group))
    assert answer.status_code == 202, answer.text
    assert received(mailpit) == {"rm1@corp.example": 1, "rm2@corp.example": 1}


def test_a_5xx_for_one_recipient_refuses_that_recipient_only(ff, kube, mailpit):
    event = request(factory.recipient("blocked", channels=("email",)),
                    factory.recipient("bob", channels=("email",)))
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    assert received(mailpit) == {"bob@corp.example": 1}
    made = records_of(kube, event["id"])
    blocked = made["blocked"]["status"]
    assert (blocked["phase"], blocked["reason"]) == ("Refused", "Rejected")
    assert "550" in blocked["message"] and not blocked.get("pending")
    assert made["bob"]["status"]["phase"] == "Sent"
    assert factory.post(ff.url, event).status_code == 202  # redelivered: nothing more
    assert received(mailpit) == {"bob@corp.example": 1}


def test_a_4xx_is_retried_and_each_recipient_gets_it_once(ff, kube, mailpit):
    """451 at RCPT TO: 503 (Knative retries), the records keep the message; when the
    server takes mail again the redelivery sends each one once."""
    mailpit.chaos(recipient=451)
    event = approvers()
    answer = factory.post(ff.url, event)
    assert answer.status_code == 503, answer.text
    assert "451" in answer.text
    assert mailpit.messages() == []
    made = records_of(kube, event["id"])
    for record in made.values():
        assert (record["status"]["phase"], record["status"]["reason"]) == \
            ("Failed", "Unreachable")
        assert record["status"]["pending"]["target"].endswith("@corp.example")
    mailpit.chaos()
    assert factory.post(ff.url, event).status_code == 202
    assert factory.post(ff.url, event).status_code == 202
    assert received(mailpit) == {"admin@corp.example": 1, "bob@corp.example": 1}
    assert {r["status"]["phase"] for r in records_of(kube, event["id"]).values()} == {"Sent"}


def test_what_failed_is_sent_by_the_sweep_without_a_new_event(ff, kube, mailpit):
    mailpit.chaos(recipient=421)
    event = request(factory.recipient("bob", channels=("email",)))
    assert factory.post(ff.url, event).status_code == 503
    mailpit.chaos()
    for record in records_of(kube, event["id"]).values():  # as if its time had come
        record["status"]["nextAttemptAt"] = "2026-01-01T00:00:00Z"
        kube.update_object(record)
    time.sleep(1.1)  # the sweep's lease interval
    answer = factory.post(ff.url, SWEEP)
    assert answer.status_code == 202, answer.text
    swept = [r for r in ff.log_records() if r.get("message") == "delivery records swept"][-1]
    assert swept["resent"] == 1
    assert received(mailpit) == {"bob@corp.example": 1}
    assert records_of(kube, event["id"])["bob"]["status"]["phase"] == "Sent"


def test_a_refused_sender_is_configuration_and_not_retried(ff, kube, mailpit):
    mailpit.chaos(sender=553)
    event = request(factory.recipient("bob", channels=("email",)))
    answer = factory.post(ff.url, event)
    assert answer.status_code == 422, answer.text
    reason = answer.text
    assert "refused the sender" in reason and "553" in reason and reason.count("\n") == 1
    assert mailpit.messages() == []
    assert records_of(kube, event["id"])["bob"]["status"]["phase"] == "Failed"


def test_no_smtp_server_configured_is_a_422_naming_what_to_set(kube, tmp_path):
    proc = start("ff", environment(kube, tmp_path))
    try:
        answer = factory.post(proc.url, request(factory.recipient("bob", channels=("email",))))
        assert answer.status_code == 422
        assert "EMAIL_SMTP_HOST" in answer.text
        assert "kubeevent-email-server" in answer.text
    finally:
        proc.stop()


def test_a_bad_signature_is_refused_before_anything_is_sent(ff, mailpit):
    event = request(factory.recipient("bob", channels=("email",)), signed=False)
    answer = factory.post(ff.url, event)
    assert answer.status_code == 403, answer.text
    assert mailpit.messages() == []


# ---------------------------------------------------------------- TLS, AUTH, deadline


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_and_login_from_the_server_secret(kube, tmp_path, tls):
    """The documented Secret (base64 values, the CA in ca.crt), nothing in the
    environment; a wrong password (env override) is 422 and never shown."""
    with Mailpit(tmp_path / "mailpit", tls=tls, auth=(SMTP_USER, SMTP_PASSWORD)) as server:
        assert server.ca_file is not None
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "kubeevent-email-server", "namespace": NS},
                  "data": {"host": b64("127.0.0.1"), "port": b64(str(server.smtp_port)),
                           "tls": b64(tls), "username": b64(SMTP_USER),
                           "password": b64(SMTP_PASSWORD), "from": b64(SENDER),
                           "ca.crt": b64(server.ca_file.read_text())}}
        kube.add(secret)
        proc = start("ff", environment(kube, tmp_path))
        wrong = start("ff", environment(kube, tmp_path / "wrong",
                                        EMAIL_SMTP_PASSWORD="not-the-password-93"))
        try:
            answer = factory.post(proc.url, request(factory.recipient("bob",
                                                                      channels=("email",))))
            assert answer.status_code == 202, answer.text
            assert received(server) == {"bob@corp.example": 1}
            answer = factory.post(wrong.url, request(factory.recipient("admin",
                                                                       channels=("email",))))
            assert answer.status_code == 422, answer.text
            assert "refused the login" in answer.text
            logged = proc.output() + wrong.output()
            assert SMTP_PASSWORD not in logged and "not-the-password-93" not in logged
            assert SMTP_PASSWORD not in answer.text
        finally:
            proc.stop()
            wrong.stop()
            kube.delete_object("v1", "Secret", "kubeevent-email-server", NS)


def test_a_server_that_does_not_trust_our_ca_is_not_sent_to(kube, tmp_path):
    """STARTTLS to a certificate no CA we trust signed: 503, nothing sent in clear."""
    with Mailpit(tmp_path / "mailpit", tls="starttls") as server:
        proc = start("ff", environment(kube, tmp_path, EMAIL_SMTP_HOST="127.0.0.1",
                                       EMAIL_SMTP_PORT=str(server.smtp_port),
                                       EMAIL_SMTP_TLS="starttls", EMAIL_FROM=SENDER))
        try:
            answer = factory.post(proc.url, request(factory.recipient("bob",
                                                                      channels=("email",))))
            assert answer.status_code == 503, answer.text
            assert server.messages() == []
        finally:
            proc.stop()


def test_a_server_that_never_answers_ends_at_the_deadline(kube, tmp_path):
    """A listener that accepts and says nothing (a fault no real server shows on
    demand): 503 once the per-message deadline has passed."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    proc = start("ff", environment(kube, tmp_path, EMAIL_SMTP_HOST="127.0.0.1",
                                   EMAIL_SMTP_PORT=str(port), EMAIL_SMTP_TLS="none",
                                   EMAIL_FROM=SENDER, EMAIL_SMTP_DEADLINE_SECONDS="1",
                                   EMAIL_SMTP_CONNECT_TIMEOUT_SECONDS="1"))
    try:
        answer = factory.post(proc.url, request(factory.recipient("bob", channels=("email",))))
        assert answer.status_code == 503, answer.text
        assert "unreachable" in answer.text
        assert held, "the notifier connected"
    finally:
        proc.stop()
        stop.set()
        thread.join()
        listener.close()
        for conn in held:
            conn.close()


# ---------------------------------------------------------------- replicas and restarts


def seed_scenarios() -> list[Event]:
    """The source document's four notifications, their people on "corpwechat,email":
    the approvers for the pending one, the requester for the others."""
    alice = factory.recipient("alice", channels=BOTH)
    return [approvers(), *(request(alice, reason=reason)
                           for reason in ("approvaldenied", "running", "failed"))]


def test_two_replicas_and_a_restart_send_each_email_once(kube, mailpit, tmp_path):
    """The seed's four notifications delivered to two replicas at once, then again to a
    restarted one (the broker's retries): each person's email once per notification."""
    replicas = [start("ff", environment(kube, tmp_path / str(i), **plain_smtp(mailpit)))
                for i in range(2)]
    try:
        events = seed_scenarios()
        answers: list[int] = []

        def deliver(event: Event, proc: FunctionProcess) -> None:
            answers.append(factory.post(proc.url, event).status_code)

        threads = [threading.Thread(target=deliver, args=(event, proc))
                   for event in events for proc in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # a replica that met the other's claim hands it over (202) or asks again (503)
        assert set(answers) <= {202, 503}
        replicas[0].stop()
        replicas[0] = start("ff", environment(kube, tmp_path / "again", **plain_smtp(mailpit)))
        for event in events:  # the broker's retries, to the restarted replica
            assert factory.post(replicas[0].url, event).status_code == 202
        assert received(mailpit) == {"admin@corp.example": 1, "bob@corp.example": 1,
                                     "alice@corp.example": 3}
        subjects = sorted(m["Subject"].split(" / ")[0] for m in mailpit.messages()
                          if m["To"][0]["Address"] == "alice@corp.example")
        assert subjects == sorted(["制品晋级申请被拒绝", "制品晋级已批准，正在执行",
                                   "制品晋级失败"])
        for event in events:
            assert {r["status"]["phase"] for r in records_of(kube, event["id"]).values()} \
                == {"Sent"}
    finally:
        for proc in replicas:
            proc.stop()


# ---------------------------------------------------------------- faults at DATA


class FaultySmtp:
    """An SMTP server that takes everything up to the message's end and then answers
    ``reply`` (e.g. 554 or 452), or drops the connection (``reply=None``): faults a real
    server cannot be made to show on demand. Each message's recipients are kept."""

    def __init__(self, reply: str | None) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.transactions: list[list[str]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 faulty ESMTP\r\n")
            recipients: list[str] = []
            for raw in lines:
                command = raw.decode("utf-8", "replace").strip()
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    conn.sendall(b"250-faulty\r\n250 8BITMIME\r\n")
                elif verb == "RCPT":
                    recipients.append(command.split(":", 1)[1].strip(" <>"))
                    conn.sendall(b"250 ok\r\n")
                elif verb == "DATA":
                    conn.sendall(b"354 go on\r\n")
                    for body in lines:
                        if body.rstrip(b"\r\n") == b".":
                            break
                    self.transactions.append(recipients)
                    if self.reply is None:
                        return  # the connection drops before the answer
                    conn.sendall(self.reply.encode() + b"\r\n")
                    recipients = []
                elif verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:  # MAIL, RSET, NOOP
                    conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(("reply", "status", "phase", "reason"), [
    ("554 5.7.1 message refused by policy", 202, "Refused", "Rejected"),
    ("452 4.3.1 insufficient system storage", 503, "Failed", "Unreachable"),
    (None, 503, "Failed", "Unreachable"),  # dropped after the data, before the answer
])
def test_a_fault_after_the_message_data(kube, tmp_path, reply, status, phase, reason):
    """The server's answer to the message's data decides for that recipient: 5xx refused
    for good, 4xx or no answer kept for the retry (the record keeps the email)."""
    server = FaultySmtp(reply)
    proc = start("ff", environment(kube, tmp_path, EMAIL_SMTP_HOST="127.0.0.1",
                                   EMAIL_SMTP_PORT=str(server.port), EMAIL_SMTP_TLS="none",
                                   EMAIL_FROM=SENDER))
    try:
        event = request(factory.recipient("bob", channels=("email",)))
        answer = factory.post(proc.url, event)
        assert answer.status_code == status, answer.text
        assert server.transactions == [["bob@corp.example"]], "the data was sent"
        record = records_of(kube, event["id"])["bob"]["status"]
        assert (record["phase"], record["reason"]) == (phase, reason)
        assert bool(record.get("pending")) == (status == 503)
    finally:
        proc.stop()
        server.close()
