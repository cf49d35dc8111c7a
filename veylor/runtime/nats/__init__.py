"""The NATS kinds (scale-out): an endpoint that publishes to a subject, a source that
subscribes to one. The settings and the headers are in :mod:`veylor.config.natsspec`.

One NATS connection per component (:mod:`.connection`), made with ``nats-py``; what is
to be published waits in an outbox (:mod:`.outbox`), never blocking the fan-out. With a
JetStream ``stream``, the endpoint publishes with acknowledgements (in order, exactly
once into the stream) and the source reads an ordered consumer from after the last
stream sequence it delivered (:mod:`.stream`). The decisions that need no I/O are pure
objects with unit tests: where a source is in its stream and its guards
(:mod:`.position`), and each publisher's sequence numbers (:mod:`.sequence`).
"""

from __future__ import annotations

from ..kinds import RuntimeKind
from .endpoint import NatsEndpoint, NatsLinkListener
from .source import NatsSource

KIND = RuntimeKind(endpoint=NatsEndpoint, listener=NatsLinkListener, source=NatsSource)

__all__ = ["KIND", "NatsEndpoint", "NatsLinkListener", "NatsSource"]
