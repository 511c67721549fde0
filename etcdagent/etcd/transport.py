"""HTTP sessions towards one member: TLS material, server name override, connection pooling."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from etcdagent import __version__
from etcdagent.settings import TLSSettings

USER_AGENT = f"etcdagent/{__version__}"


class _ServerNameAdapter(HTTPAdapter):
    """Verifies the server certificate against a fixed name and sends it as SNI.

    Needed when members are reached by IP (hostNetwork, kubeadm) but their certificates name a
    DNS host: requests has no option for it, urllib3's pools do.
    """

    def __init__(self, server_name: str, **kwargs: Any) -> None:
        self._server_name = server_name
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["server_hostname"] = self._server_name
        pool_kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


def make_session(tls: TLSSettings) -> requests.Session:
    """A session for one member; TLS settings apply to https URLs only."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = False  # an HTTPS_PROXY meant for the internet must not intercept etcd
    if tls.ca_file is not None:
        session.verify = str(tls.ca_file)
    if tls.cert_file is not None and tls.key_file is not None:
        session.cert = (str(tls.cert_file), str(tls.key_file))
    if tls.server_name:
        session.mount("https://", _ServerNameAdapter(tls.server_name))
    return session
