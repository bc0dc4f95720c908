"""Readiness probes of the components, over loopback."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from devcluster.processes import Component, log_path, tail


class StartupError(RuntimeError):
    """A component did not become ready; the message carries its log tail."""


def admin_tls(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def self_signed_tls() -> ssl.SSLContext:
    # Controller-manager and scheduler serve /healthz with a self-signed
    # certificate they generate; on loopback we only want the status code.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_ok(url: str, ctx: ssl.SSLContext | None = None, *, timeout: float = 3.0) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    component: Component | None = None,
    log: Path | None = None,
    interval: float = 0.25,
) -> None:
    """Poll check() until true; fail fast when the component process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if component is not None and not component.is_ours():
            raise StartupError(f"{component.name} exited while waiting for {what}:\n"
                               f"{tail(log) if log else ''}")
        time.sleep(interval)
    detail = f"\nlast log lines of {log}:\n{tail(log)}" if log else ""
    raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def wait_for_component(state_dir: Path, comp: Component, what: str, check: Callable[[], bool],
                       timeout: float) -> None:
    """wait_until for a component of a state folder, with its log in the error."""
    wait_until(what, check, timeout=timeout, component=comp,
               log=log_path(state_dir, comp.name))
