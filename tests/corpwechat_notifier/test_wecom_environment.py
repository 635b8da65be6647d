"""The WeCom client still honours the environment's proxies and CA bundle, although its
session does not read the environment on every call: a real recording proxy and a real
TLS server on loopback."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from corpwechat_notifier.credentials import Credentials
from corpwechat_notifier.wecom import WeComClient, WeComUnavailable
from dev.fakes.wecom import GETTOKEN, USERID_BY_EMAIL, WeComSandbox

CORP_ID, SECRET, AGENT = "ww-proxy", "proxy-s3cret", 1000002
CREDS = Credentials(CORP_ID, SECRET, AGENT)
VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class RecordingProxy(ThreadingHTTPServer):
    """A forward proxy: records each request line, relays absolute-form requests to their
    origin and refuses CONNECT (so an HTTPS origin is never contacted)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: RecordingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.lines.append(self.requestline)
        self.send_error(403, "no tunnels here")

    def _relay(self) -> None:
        self.server.lines.append(self.requestline)
        target = urlsplit(self.path)
        if not target.scheme or not target.hostname:
            self.send_error(400, "not an absolute-form request")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("proxy-connection", "connection", "host")}
            upstream.request(self.command, path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type") or "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _relay
    do_POST = _relay


@pytest.fixture
def sandbox() -> Iterator[WeComSandbox]:
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT,
                      users={"alice"}, emails={"alice@example.com": "alice"}) as running:
        yield running


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    with RecordingProxy() as running:
        yield running


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy or CA bundle variable from the machine running the tests."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in VARIABLES:
            monkeypatch.delenv(name)
    return monkeypatch


def client_for(api_url: str) -> WeComClient:
    return WeComClient(api_url, timeout=(2.0, 5.0), attempts=1, backoff=0)


def test_http_proxy_from_the_environment_carries_every_call(sandbox, proxy, environment):
    environment.setenv("HTTP_PROXY", proxy.url)
    client = client_for(sandbox.api_url)
    try:
        assert client.userid_by_email(CREDS, "alice@example.com") == "alice"
        assert client.userid_by_email(CREDS, "nobody@example.com") is None
    finally:
        client.close()
    origin = sandbox.api_url.rstrip("/")
    # absolute-form request lines: the proxy, not the sandbox, got the connection
    assert [line.split("?")[0] for line in proxy.lines] == [
        f"GET {origin}/{GETTOKEN}", f"POST {origin}/{USERID_BY_EMAIL}",
        f"POST {origin}/{USERID_BY_EMAIL}"]
    assert all(line.endswith(" HTTP/1.1") for line in proxy.lines)
    assert len(sandbox.calls_to(USERID_BY_EMAIL)) == 2  # what the proxy relayed arrived


def test_no_proxy_bypasses_the_proxy(sandbox, proxy, environment):
    environment.setenv("HTTP_PROXY", proxy.url)
    environment.setenv("NO_PROXY", "127.0.0.1")
    client = client_for(sandbox.api_url)
    try:
        assert client.userid_by_email(CREDS, "alice@example.com") == "alice"
    finally:
        client.close()
    assert proxy.lines == []
    assert len(sandbox.calls_to(GETTOKEN)) == 1 and len(sandbox.calls_to(USERID_BY_EMAIL)) == 1


def test_https_proxy_from_the_environment_is_asked_for_a_tunnel(proxy, environment):
    environment.setenv("HTTPS_PROXY", proxy.url)
    environment.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not this one: the origin is https
    client = client_for("https://wecom.invalid/cgi-bin")
    try:
        with pytest.raises(WeComUnavailable, match=r"gettoken unreachable \(ProxyError\)"):
            client.token(CREDS)
    finally:
        client.close()
    assert len(proxy.lines) == 1 and proxy.lines[0].startswith("CONNECT wecom.invalid:443 ")


# ---------------------------------------------------------------- CA bundle


class TokenServer(ThreadingHTTPServer):
    """A TLS server on 127.0.0.1 that answers every call with a gettoken answer."""

    daemon_threads = True

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.calls = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/cgi-bin"

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _TokenHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.calls += 1
        body = json.dumps({"errcode": 0, "errmsg": "ok", "access_token": "tls-token",
                           "expires_in": 7200}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (``openssl req``)."""
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("openssl is not installed (Debian/Ubuntu: apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([binary, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[TokenServer]:
    with TokenServer(*certificate) as running:
        yield running


@pytest.mark.parametrize("variable", VARIABLES)
def test_a_ca_bundle_from_the_environment_is_trusted(tls_server, certificate, environment,
                                                     variable):
    environment.setenv(variable, str(certificate[0]))
    client = client_for(tls_server.api_url)
    try:
        assert client.token(CREDS) == "tls-token"
    finally:
        client.close()
    assert tls_server.calls == 1


def test_without_the_ca_bundle_the_server_is_not_trusted(tls_server, environment):
    client = client_for(tls_server.api_url)
    try:
        with pytest.raises(WeComUnavailable, match=r"gettoken unreachable \(SSLError\)"):
            client.token(CREDS)
    finally:
        client.close()
    assert tls_server.calls == 0
