"""MQTT input of ``neoarray ingest``: subscribe to topics on a broker (paho-mqtt).

Each message (its topic is the tag) carries one record (a JSON or msgpack map) or a
list of them; a record may carry ``"@time"`` (seconds), else the time of arrival.  The
subscription is QoS 1 in a persistent session (``clean_session=False``, a fixed client
id) with manual acknowledgement: a message is acknowledged (PUBACK) only once its
records are durably committed, so a restart of this service loses no acknowledged
message: the broker delivers again what was not acknowledged.  That is at least once:
a message committed whose PUBACK was lost in a crash is stored again when redelivered.

Backpressure: the paho network thread waits for room in the committer's queue before
it reads on.  A payload that does not decode is rejected (counted, logged) and
acknowledged, so that it is not delivered forever.
"""
from __future__ import annotations

import json
import logging
import time

import msgpack

from .core import Outcome, Unit

log = logging.getLogger(__name__)

FORMATS = ("json", "msgpack")
KEEPALIVE_S = 30


def _decode(payload: bytes, fmt: str):
    if fmt == "json":
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


class MqttInput:
    """A paho client feeding ``committer`` from ``topics`` on ``host:port``."""

    def __init__(self, host: str, port: int, topics: list[str], committer, stats, *, client_id: str,
                 fmt: str = "json", username: str | None = None, password: str | None = None,
                 tls=None):
        import paho.mqtt.client as paho

        if fmt not in FORMATS:
            raise ValueError(f"MQTT payload format {fmt!r}: give one of {FORMATS}")
        self.topics, self.committer, self.stats, self.fmt = topics, committer, stats, fmt
        self.host, self.port = host, port
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, manual_ack=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.connected = False

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("mqtt: %s:%s refused the connection: %s", self.host, self.port, reason_code)
            return
        client.subscribe([(t, 1) for t in self.topics])
        self.connected = True
        log.info("mqtt: subscribed to %s at %s:%s", self.topics, self.host, self.port)

    def _message(self, client, userdata, message):
        try:
            doc = _decode(message.payload, self.fmt)
        except (ValueError, msgpack.UnpackException) as exc:
            self.stats.rejected("mqtt")
            log.warning("mqtt: a message on %s is not %s (rejected): %s", message.topic, self.fmt, exc)
            client.ack(message.mid, message.qos)
            return
        now = time.time()
        docs = doc if isinstance(doc, list) else [doc]
        entries = [(d.get("@time", now) if type(d) is dict else now, d) for d in docs]
        mid, qos, topic = message.mid, message.qos, message.topic

        def done(outcome: Outcome):
            if outcome.error is not None:
                log.warning("mqtt: a message on %s was not stored (%s): reconnecting for it to come "
                            "again", topic, outcome.error)
                client.reconnect()
                return
            for index, reason in outcome.rejected:
                log.warning("mqtt: record %d of a message on %s rejected: %s", index, topic, reason)
            client.ack(mid, qos)
        self.committer.submit(Unit(topic, entries, done, source="mqtt"))
