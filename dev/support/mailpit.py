"""Mailpit, a real SMTP server with a REST API, as a local process.

Built unmodified from ``github.com/axllent/mailpit`` by dev/cluster/build.sh into
``.cluster/bin/mailpit``. ``Mailpit(workdir).start()`` listens on two free loopback ports
(SMTP and HTTP), stores in ``workdir``, and is read back the way a person reads a mailbox:
``messages()`` (newest first), ``message(id)`` (text, HTML, headers), ``clear()``.

``tls="starttls"`` or ``"implicit"`` serves a certificate signed by a CA made for this
server (``ca_file``: what a client must trust); ``auth`` requires those credentials;
``chaos(...)`` makes the real server answer SMTP errors (Mailpit's chaos triggers: 4xx or
5xx at MAIL FROM, RCPT TO or AUTH, with a probability).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import requests

from dev.cluster.controlplane import Process
from dev.support.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / ".cluster" / "bin" / "mailpit"


def why_not() -> str | None:
    """One line saying why Mailpit cannot run here, or ``None``."""
    if not BINARY.exists():
        return f"{BINARY.relative_to(ROOT)} is missing (dev/cluster/build.sh builds it)"
    return None


class Mailpit:
    def __init__(self, workdir: Path, *, tls: str = "", auth: tuple[str, str] | None = None,
                 chaos: bool = True, allowed_recipients: str = "") -> None:
        if tls not in ("", "starttls", "implicit"):
            raise ValueError(tls)
        self.dir = workdir
        self.tls = tls
        self.auth = auth
        self.chaos_enabled = chaos
        # A regular expression: other recipients get 550 at RCPT TO (one refused, the
        # others of a transaction taken).
        self.allowed_recipients = allowed_recipients
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.ca_file: Path | None = None
        self.process: Process | None = None
        self.http = requests.Session()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    def argv(self) -> list[str]:
        argv = [str(BINARY), "--smtp", f"127.0.0.1:{self.smtp_port}",
                "--listen", f"127.0.0.1:{self.http_port}",
                "--database", str(self.dir / "mailpit.db"),
                "--disable-version-check", "--smtp-disable-rdns", "--quiet"]
        if self.chaos_enabled:
            argv.append("--enable-chaos")
        if self.allowed_recipients:
            argv += ["--smtp-allowed-recipients", self.allowed_recipients]
        if self.tls:
            cert, key = self._certificate()
            argv += ["--smtp-tls-cert", str(cert), "--smtp-tls-key", str(key)]
            argv.append("--smtp-require-tls" if self.tls == "implicit"
                        else "--smtp-require-starttls")
        if self.auth is not None:
            users = self.dir / "smtp-users"
            users.write_text(f"{self.auth[0]}:{self.auth[1]}\n")
            argv += ["--smtp-auth-file", str(users)]
            if not self.tls:
                argv.append("--smtp-auth-allow-insecure")
        return argv

    def start(self, timeout: float = 30.0) -> Mailpit:
        problem = why_not()
        if problem:
            raise RuntimeError(problem)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = Process("mailpit", self.argv(), self.dir / "mailpit.log")
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"mailpit exited:\n{self.process.tail()}")
            try:
                if self.http.get(f"{self.api}/info", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mailpit did not answer in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
        self.http.close()

    def __enter__(self) -> Mailpit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading

    def messages(self) -> list[dict[str, Any]]:
        """Every message stored, newest first (Mailpit's summaries: From, To, Subject…)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.http.get(f"{self.api}/messages",
                                 params={"start": len(found), "limit": 500}, timeout=10)
            page.raise_for_status()
            body = page.json()
            found += body.get("messages") or []
            if len(found) >= int(body.get("total") or 0) or not body.get("messages"):
                return found

    def message(self, message_id: str) -> dict[str, Any]:
        """One message in full: ``Text``, ``HTML``, ``From``, ``To``, ``Subject``…"""
        got = self.http.get(f"{self.api}/message/{message_id}", timeout=10)
        got.raise_for_status()
        return dict(got.json())

    def headers(self, message_id: str) -> dict[str, list[str]]:
        got = self.http.get(f"{self.api}/message/{message_id}/headers", timeout=10)
        got.raise_for_status()
        return dict(got.json())

    def to(self, address: str) -> list[dict[str, Any]]:
        """The messages ``address`` received (To), oldest first, in full."""
        return [self.message(m["ID"]) for m in reversed(self.messages())
                if any(t.get("Address", "").lower() == address.lower()
                       for t in m.get("To") or [])]

    def by_recipient(self) -> dict[str, list[dict[str, Any]]]:
        """Address (To) → the messages it received (summaries, newest first)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for message in self.messages():
            for to in message.get("To") or []:
                found.setdefault(to["Address"], []).append(message)
        return found

    def clear(self) -> None:
        self.http.delete(f"{self.api}/messages", timeout=10).raise_for_status()

    def chaos(self, *, sender: int = 0, recipient: int = 0, authentication: int = 0,
              probability: int = 100) -> None:
        """Answer SMTP errors: ``sender`` at MAIL FROM, ``recipient`` at RCPT TO,
        ``authentication`` at AUTH (an error code, 0 for none), with ``probability`` %."""
        triggers = {name: {"ErrorCode": code or 451, "Probability": probability if code else 0}
                    for name, code in (("Sender", sender), ("Recipient", recipient),
                                       ("Authentication", authentication))}
        self.http.put(f"{self.api}/chaos", json=triggers, timeout=10).raise_for_status()

    # ------------------------------------------------------------------ TLS

    def _certificate(self) -> tuple[Path, Path]:
        """A CA (``ca_file``) and a certificate it signs for 127.0.0.1 and localhost."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeevent test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert_file, key_file = self.dir / "smtp.pem", self.dir / "smtp.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file
