"""The SDK's own exceptions: what a bus call raises, whichever broker is behind it.

Callers (services, the gateway, integrators) catch these, never a broker client's exceptions, so
changing `EDRS_<SERVICE>_BUS_URL` from `nats://` to `pulsar://` changes no `except` clause."""

from __future__ import annotations


class BusError(Exception):
    """The bus could not do what was asked (the broker, not the caller's input, is at fault)."""


class BusUnavailable(BusError, ConnectionError):
    """The broker cannot be reached, or dropped the connection; trying again later may work."""


class PublishError(BusUnavailable):
    """The broker did not confirm every message of a publish; nothing is known about the rest."""


class MalformedEvent(ValueError):
    """A message on the bus that is not an EDRS event: its body is no valid envelope, or the
    copies of envelope fields in its headers contradict the body. Readers skip (tails) or
    dead-letter (consumers) such a message, count it and log why; they never crash on it."""
