"""Outgoing HTTP: one pooled ``requests.Session`` that reads the environment once.

With ``trust_env`` on, requests scans every environment variable for proxies and
looks for ~/.netrc on each call, which cost more CPU per event than a function's
own work (bench/RESULTS.md). Here the environment is read once per origin:
proxies (``*_proxy``, ``NO_PROXY`` honoured) and a CA bundle
(``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``) still apply.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter


class PooledSession:
    def __init__(self, pool_size: int = 16, max_retries: int = 0) -> None:
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                               or os.environ.get("CURL_CA_BUNDLE") or True)
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size,
                              max_retries=max_retries)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._proxies: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for ``url``'s origin, looked up once."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            found = self._proxies.get(origin)
        if found is None:
            found = requests.utils.get_environ_proxies(url)
            with self._lock:
                self._proxies[origin] = found
        return found

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("proxies", self.proxies_for(url))
        return self.session.request(method, url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self.session.close()
