"""SSH transport: sessions to hosts (strict host keys, key/agent auth, jump hosts), retries.

    connect(host, timeout=10) -> SshSession     implements deployer.transport.session.Session
    resolve(host, ssh_config) -> ConnectSpec    inventory vars merged with ~/.ssh/config
    retrying(fn, what=..., host=...)            tenacity policy for transient failures
    fake.FakeSession                            recording fake for unit tests
"""
from __future__ import annotations

from deployer.transport.config import ConnectSpec, load_ssh_config, resolve
from deployer.transport.result import Result
from deployer.transport.retry import (
    connect_retrying,
    is_transient,
    retry_transient,
    retrying,
)
from deployer.transport.session import Session, remote_command
from deployer.transport.ssh import SshSession, connect

__all__ = [
    "ConnectSpec",
    "Result",
    "Session",
    "SshSession",
    "connect",
    "connect_retrying",
    "is_transient",
    "load_ssh_config",
    "remote_command",
    "resolve",
    "retry_transient",
    "retrying",
]
