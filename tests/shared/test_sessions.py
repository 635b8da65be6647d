"""The pooled session reads the environment once but still honours proxies."""

from __future__ import annotations

import pytest

from dev.support.sink import RecordingSink
from shared.sessions import PooledSession


@pytest.fixture
def proxy_and_target():
    with RecordingSink(default_status=204) as proxy, RecordingSink(default_status=202) as target:
        yield proxy, target


def test_a_proxy_from_the_environment_is_used(monkeypatch, proxy_and_target) -> None:
    proxy, target = proxy_and_target
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("http_proxy", proxy.url)
    session = PooledSession()
    answer = session.post(target.url + "/ns/broker", data=b"{}", timeout=5)
    assert answer.status_code == 204, "answered by the proxy"
    assert [r.path for r in proxy.received] == [target.url + "/ns/broker"]
    assert target.received == []


def test_no_proxy_bypasses_it(monkeypatch, proxy_and_target) -> None:
    proxy, target = proxy_and_target
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    session = PooledSession()
    assert session.post(target.url + "/x", data=b"{}", timeout=5).status_code == 202
    assert [r.path for r in target.received] == ["/x"]
    assert proxy.received == []


def test_the_environment_is_read_once_per_origin(monkeypatch, proxy_and_target) -> None:
    _, target = proxy_and_target
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    session = PooledSession()
    assert session.session.trust_env is False
    for _ in range(3):
        session.post(target.url + "/x", data=b"{}", timeout=5)
    assert list(session._proxies) == [target.url]
    assert len(target.received) == 3
