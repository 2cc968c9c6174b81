"""Where the attack monitor's alerts go, and what they do to the key: :class:`AlertSink`.

An alert (:class:`Alert`) is raised by :class:`~veil.serve._monitor.Monitor` once per (key,
model, signal). The sink, in this order:

1. **acts** as the model's monitor policy says: ``"alert"`` does nothing more; ``"throttle"``
   lowers the key's rate through the gateway's limits (``limits.throttle``, shared by every
   worker when the limits live in Redis); ``"suspend"`` revokes the key through the
   operator's :class:`~veil.access.Access`, which is durable and reaches every worker within
   ``Access.max_age`` (one second), since each re-reads the key's status;
2. **records** a ``serve.alert`` entry on the trail in a transaction of its own, by the
   operator (the account that started ``veil serve``), outcome ``refused`` when the key was
   suspended and ``allowed`` otherwise, with the signal, statistic, threshold, query count,
   action, model and key id;
3. **logs** a JSON line on the gateway's logger at level warning, with the same fields;
4. **posts** the same fields as JSON to an optional webhook, from a background thread fed by
   a bounded queue: a full queue drops the alert (and logs that it did), a slow or dead
   receiver costs at most the timeout of that thread, never a request's time.

**Why only loopback webhooks.** The gateway runs beside personal data; a webhook that could
name any host would let whoever edits the policy file exfiltrate alert contents or probe the
internal network from the gateway (server-side request forgery). Only ``localhost`` and
literal loopback addresses are accepted, checked when the policy is loaded
(:func:`check_webhook`); host names are not resolved, so DNS cannot point a name elsewhere
later, proxies from the environment are ignored and redirects are not followed. A local relay
can forward alerts onward under the operator's own control.

An alert's failure to act or to be recorded is logged at level error and never turns into
the request's failure: the request that tripped the monitor was already answered within
its budget and its limits.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from veil.access import Access, Outcome
from veil.errors import InvalidInputError, VeilError

__all__ = ["ACTIONS", "Alert", "AlertSink", "check_webhook"]

ACTIONS = ("alert", "throttle", "suspend")
WEBHOOK_TIMEOUT = 2.0
_LOCAL_NAMES = frozenset({"localhost", "localhost."})


def check_webhook(url: str | None) -> str | None:
    """``url`` if it is an http(s) URL on this machine's loopback interface, else refuse.

    Raises:
        InvalidInputError: Not http(s), no host, or a host other than ``localhost``,
            ``127.0.0.0/8`` or ``::1``.
    """
    if url is None:
        return None
    fix = "post alerts to a relay on this machine, e.g. http://127.0.0.1:9000/alerts"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a malformed port raises here
    except ValueError as exc:
        raise InvalidInputError(
            "the monitor's webhook is not a valid URL",
            expected="http://127.0.0.1:PORT/PATH, http://[::1]:PORT/PATH or http://localhost:PORT/PATH",
            got=f"{url!r} ({exc})",
            fix=fix,
        ) from exc
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError(
            "the monitor's webhook must be an http(s) URL with a host",
            expected="http://127.0.0.1:PORT/PATH",
            got=repr(url),
            fix=fix,
        )
    if host.lower() in _LOCAL_NAMES:
        return url
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInputError(
            "the monitor's webhook must be on this machine's loopback interface",
            expected="host localhost, 127.0.0.1 (any of 127.0.0.0/8) or ::1",
            got=f"host {host!r} in {url!r}",
            fix=fix + " (host names other than localhost are not resolved: DNS could "
            "point them anywhere)",
        )
    return url


@dataclass(frozen=True)
class Alert:
    """One signal that crossed its threshold for one key and model.

    Attributes:
        signal: ``"prada"``, ``"dependence"`` or ``"probing"``.
        statistic: The signal's value when it crossed.
        threshold: The threshold it crossed.
        direction: ``"below"`` (alert when statistic < threshold) or ``"above"`` (>=).
        queries: Queries of this key to this model seen by this worker so far.
        model: The served model's name.
        key_id: The service key's id.
        principal: The principal the key stands for.
        action: What the policy does: ``"alert"``, ``"throttle"`` or ``"suspend"``.
    """

    signal: str
    statistic: float
    threshold: float
    direction: str
    queries: int
    model: str
    key_id: str
    principal: str
    action: str

    def describe(self) -> str:
        sign = "<" if self.direction == "below" else ">="
        return (
            f"attack monitor: {self.signal} {self.statistic:.4g} {sign} {self.threshold:.4g} "
            f"after {self.queries} queries of {self.model} by key {self.key_id}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AlertSink:
    """Acts on alerts, records them on the trail, logs them and posts them to a webhook.

    Args:
        operator: The gateway operator's access (records alerts; revokes keys).
        log: The gateway's logger (``veil.serve``).
        limits: The gateway's limits (``throttle(key_id, rate, seconds)``); used only by
            the ``throttle`` action.
        webhook: Default webhook for alerts whose policy names none (checked here).
        queue_size: Alerts waiting for the webhook before new ones are dropped.
        timeout: Seconds one webhook POST may take.

    Raises:
        InvalidInputError: ``webhook`` is not on the loopback interface.
    """

    def __init__(
        self,
        operator: Access,
        log: logging.Logger,
        limits: Any,
        webhook: str | None = None,
        *,
        queue_size: int = 100,
        timeout: float = WEBHOOK_TIMEOUT,
    ) -> None:
        self.operator = operator
        self.log = log
        self.limits = limits
        self.webhook = check_webhook(webhook)
        self.timeout = timeout
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    # ------------------------------------------------------------ the four steps
    def emit(
        self,
        alert: Alert,
        *,
        throttle_rate: str = "1/second",
        throttle_seconds: float = 3600.0,
        webhook: str | None = None,
    ) -> bool:
        """Act on ``alert``, record, log and post it; return whether the action took effect.

        Never raises: a failure of any step is logged at level error.
        """
        applied = self._act(alert, throttle_rate, throttle_seconds)
        fields = alert.to_json() | {"applied": applied}
        try:
            self.operator.record(
                "serve.alert",
                outcome=Outcome.REFUSED
                if alert.action == "suspend" and applied
                else Outcome.ALLOWED,
                purpose="attack monitor",
                details=fields,
            )
        except (VeilError, OSError) as exc:  # the store is down: the log line still tells
            self.log.exception("serve.alert not recorded on the trail", extra={"error": str(exc)})
        self.log.warning(alert.describe(), extra={"event": "serve.alert", **fields})
        target = webhook or self.webhook
        if target is not None:
            self._post(target, {"event": "serve.alert", **fields})
        return applied

    def _act(self, alert: Alert, rate: str, seconds: float) -> bool:
        if alert.action == "alert":
            return True
        try:
            if alert.action == "throttle":
                self.limits.throttle(alert.key_id, rate, seconds)
            elif alert.action == "suspend":
                self.operator.revoke_key(alert.key_id, reason=alert.describe())
            else:
                raise InvalidInputError(
                    "unknown monitor action",
                    expected=" | ".join(ACTIONS),
                    got=repr(alert.action),
                )
        except (VeilError, OSError) as exc:
            self.log.exception(
                "the attack monitor's action failed",
                extra={
                    "event": "serve.alert.action_failed",
                    "action": alert.action,
                    "key_id": alert.key_id,
                    "error": str(exc),
                },
            )
            return False
        return True

    # ------------------------------------------------------------ the webhook thread
    def _post(self, url: str, payload: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait((url, payload))
        except queue.Full:
            self.dropped += 1
            self.log.warning(
                "alert webhook queue full: alert dropped",
                extra={
                    "event": "serve.alert.dropped",
                    "key_id": payload.get("key_id"),
                    "signal": payload.get("signal"),
                    "dropped": self.dropped,
                },
            )

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._deliver, name="veil-alert-webhook", daemon=True
                )
                self._thread.start()

    def _deliver(self) -> None:
        import httpx  # noqa: PLC0415  (veil[serve]; only a sink with a webhook needs it)

        # No proxies from the environment, no redirects: the POST goes where the policy says.
        with httpx.Client(timeout=self.timeout, trust_env=False, follow_redirects=False) as client:
            while (item := self._queue.get()) is not None:
                url, payload = item
                try:
                    client.post(url, json=payload).raise_for_status()
                    self.delivered += 1
                except httpx.HTTPError as exc:
                    self.failed += 1
                    self.log.warning(
                        "alert webhook failed",
                        extra={
                            "event": "serve.alert.webhook_failed",
                            "url": url,
                            "error": str(exc),
                        },
                    )
                finally:
                    self._queue.task_done()
            self._queue.task_done()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until queued webhooks are sent (or failed); False if ``timeout`` passed first."""
        done = self._queue.all_tasks_done
        with done:
            return done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def close(self, timeout: float = WEBHOOK_TIMEOUT + 1.0) -> None:
        """Send what is queued (up to ``timeout``) and stop the webhook thread."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            self.log.warning("alert webhook queue still full at shutdown")
            return
        thread.join(timeout)
        self._thread = None
