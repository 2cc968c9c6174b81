"""The alert sink: trail entry, log line, loopback-only webhook, throttle and suspend actions.

Everything is real: an Access on a SQLite store, the gateway's in-memory Limits, an
http.server on 127.0.0.1 in a thread for the webhook.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from veil.access import Access, Outcome, Principal
from veil.errors import InvalidInputError, PermissionDeniedError
from veil.serve._alerts import Alert, AlertSink, check_webhook
from veil.serve._limits import Limits
from veil.store import Store

LOG = logging.getLogger("veil.serve")


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Access]:
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    yield Access(store, Principal("operator"))
    store.dispose()


@pytest.fixture
def service_key(operator: Access) -> tuple[str, str]:
    info, token = operator.create_key("scraper", "consumer")
    return info.key_id, token


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    hold: ClassVar[threading.Event | None] = None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.hold is not None:
            self.hold.wait(10)
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the test reads the payloads, not the access log."""


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "hold": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", handler
    if handler.hold is not None:
        handler.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _alert(key_id: str, action: str = "alert", signal: str = "dependence") -> Alert:
    return Alert(signal, 31.5, 20.0, "above", 14, "adult-lr", key_id, "svc:scraper", action)


# ------------------------------------------------------------------ the webhook's address
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/alerts",
        "http://127.8.0.1/x",
        "https://localhost:8443/hook",
        "http://LOCALHOST/",
        "http://[::1]:9000/alerts",
        None,
    ],
)
def test_loopback_webhooks_are_accepted(url):
    assert check_webhook(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/alerts",
        "http://example.com/alerts",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://0.0.0.0:9000/",
        "http://[::ffff:8.8.8.8]/",
        "ftp://127.0.0.1/alerts",
        "file:///etc/passwd",
        "http://127.0.0.1:99999/",
        "127.0.0.1:9000",
    ],
)
def test_other_webhooks_are_refused_naming_the_fix(url, operator):
    with pytest.raises(InvalidInputError) as caught:
        check_webhook(url)
    assert caught.value.fix is not None
    assert "127.0.0.1" in caught.value.fix
    with pytest.raises(InvalidInputError):
        AlertSink(operator, LOG, None, url)


# ------------------------------------------------------------------ trail, log, webhook
def test_an_alert_is_a_trail_entry_a_log_line_and_a_webhook_post(
    operator, service_key, receiver, caplog
):
    url, handler = receiver
    key_id, token = service_key
    sink = AlertSink(operator, LOG, None, url)
    with caplog.at_level(logging.WARNING, logger="veil.serve"):
        assert sink.emit(_alert(key_id))
    assert sink.drain(10)
    sink.close()

    (entry,) = operator.trail.entries(action="serve.alert")
    assert entry.actor == "operator"
    assert entry.outcome is Outcome.ALLOWED
    expected = {
        "signal": "dependence",
        "statistic": 31.5,
        "threshold": 20.0,
        "queries": 14,
        "action": "alert",
        "model": "adult-lr",
        "key_id": key_id,
    }
    assert {k: entry.details[k] for k in expected} == expected
    assert operator.trail.verify().problems == ()

    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "serve.alert"]
    assert line.levelno == logging.WARNING
    assert line.signal == "dependence"  # type: ignore[attr-defined]
    assert line.key_id == key_id  # type: ignore[attr-defined]

    (payload,) = handler.received
    assert payload["event"] == "serve.alert"
    assert {k: payload[k] for k in expected} == expected
    assert sink.delivered == 1
    # "alert" only records: the key still works.
    assert Access(operator.store).authenticate(token).key_id == key_id


def test_a_policy_webhook_overrides_the_sink_default(operator, receiver):
    url, handler = receiver
    sink = AlertSink(operator, LOG, None, None)
    sink.emit(_alert("k1"), webhook=url)
    sink.emit(_alert("k2"))  # no webhook anywhere: nothing posted
    assert sink.drain(10)
    sink.close()
    assert [p["key_id"] for p in handler.received] == ["k1"]


def test_a_full_webhook_queue_drops_and_never_blocks(operator, receiver, caplog):
    url, handler = receiver
    handler.hold = threading.Event()  # the receiver hangs until released
    sink = AlertSink(operator, LOG, None, url, queue_size=1, timeout=10)
    with caplog.at_level(logging.WARNING, logger="veil.serve"):
        for i in range(5):  # one in flight, one queued, three dropped
            sink.emit(_alert(f"k{i}"))
    assert sink.dropped >= 3
    assert any(getattr(r, "event", None) == "serve.alert.dropped" for r in caplog.records)
    # Every alert is on the trail even when its webhook was dropped.
    assert len(operator.trail.entries(action="serve.alert")) == 5
    handler.hold.set()
    assert sink.drain(10)
    sink.close()
    assert 1 <= len(handler.received) <= 2


def test_a_dead_webhook_is_logged_not_raised(operator, caplog):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = AlertSink(operator, LOG, None, f"http://127.0.0.1:{port}/alerts", timeout=1)
    with caplog.at_level(logging.WARNING, logger="veil.serve"):
        assert sink.emit(_alert("k1"))
        assert sink.drain(10)
    sink.close()
    assert sink.failed == 1
    assert any(getattr(r, "event", None) == "serve.alert.webhook_failed" for r in caplog.records)


# ------------------------------------------------------------------ actions
def test_suspend_revokes_the_key_durably(operator, service_key):
    key_id, token = service_key
    other_worker = Access(operator.store)
    assert other_worker.authenticate(token).key_id == key_id
    sink = AlertSink(operator, LOG, None)
    assert sink.emit(_alert(key_id, "suspend"))

    with pytest.raises(PermissionDeniedError, match="revoked"):
        other_worker.authenticate(token)
    (revoke,) = operator.trail.entries(action="keys.revoke")
    assert "dependence" in revoke.purpose
    assert revoke.details["key_id"] == key_id
    (entry,) = operator.trail.entries(action="serve.alert")
    assert entry.outcome is Outcome.REFUSED
    assert entry.details["action"] == "suspend"
    assert entry.details["applied"] is True


def test_a_failed_action_is_logged_and_recorded_not_raised(operator, caplog):
    sink = AlertSink(operator, LOG, None)
    with caplog.at_level(logging.ERROR, logger="veil.serve"):
        assert not sink.emit(_alert("no-such-key", "suspend"))
    (entry,) = operator.trail.entries(action="serve.alert")
    assert entry.outcome is Outcome.ALLOWED  # nothing was refused: the key does not exist
    assert entry.details["applied"] is False
    assert any(getattr(r, "event", None) == "serve.alert.action_failed" for r in caplog.records)


def test_throttle_lowers_the_keys_rate(operator, service_key):
    key_id, _ = service_key
    limits = Limits.open(None, operator.store)
    sink = AlertSink(operator, LOG, limits)
    assert limits.throttled_rate(key_id) is None
    assert sink.emit(_alert(key_id, "throttle"), throttle_rate="2/minute", throttle_seconds=60)
    assert limits.throttled_rate(key_id) == "2/minute"
    (entry,) = operator.trail.entries(action="serve.alert")
    assert entry.outcome is Outcome.ALLOWED
    assert entry.details["action"] == "throttle"
