"""The typed errors of outbound HTTP: each names one reason, never a generic failure."""

from __future__ import annotations


class OutboundError(Exception):
    """An outbound request that was refused or failed; `reason` says why.

    `reason` reads after a subject such as "url" or a field name ("url host 10.0.0.1 is a private
    address"), so callers can put their own subject in front. `redirect` is the number of the
    redirect whose location failed (0: the URL the caller gave). `str()` is a full sentence.
    """

    def __init__(self, reason: str, *, redirect: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.redirect = redirect

    def __str__(self) -> str:
        subject = f"redirect {self.redirect} location" if self.redirect else "url"
        return f"{subject} {self.reason}"

    def at_redirect(self, redirect: int) -> OutboundError:
        """This error, attributed to the location of redirect number `redirect`."""
        self.redirect = redirect
        return self


class OutboundInvalidUrl(OutboundError):
    """The URL cannot be parsed as an absolute http(s) URL with a valid host."""


class OutboundBlocked(OutboundError):
    """The policy refuses the destination; nothing was sent to it.

    `rule` is a stable code for the rule that refused it: `scheme`, `userinfo`, `address`
    (the host is, or resolves to, an address outside the public internet), `internal_name`
    (localhost, metadata and private-use names), `homograph`, `downgrade` (https to http),
    `tenant_deny`, `tenant_allow`.
    """

    def __init__(self, reason: str, *, rule: str, redirect: int = 0) -> None:
        super().__init__(reason, redirect=redirect)
        self.rule = rule


class OutboundTooManyRedirects(OutboundError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"redirected more than {limit} times, the limit")
        self.limit = limit


class OutboundResponseTooLarge(OutboundError):
    """The response body exceeded the size limit; it was cut there, never read whole."""

    def __init__(self, limit: int, received: int, *, declared: int | None = None) -> None:
        if declared is not None:
            reason = f"answered with a {declared}-byte body; the limit is {limit} bytes"
        else:
            reason = f"answered with a body larger than the limit of {limit} bytes"
        super().__init__(reason)
        self.limit = limit
        self.received = received
        self.declared = declared


class OutboundTimeout(OutboundError):
    """A time limit ran out: `phase` is `total`, `connect`, `read`, `write` or `pool`."""

    def __init__(self, phase: str, limit: float | None) -> None:
        if phase == "total":
            reason = f"did not complete within the total time limit of {limit:g} s"
        elif limit is not None:
            reason = f"timed out in its {phase} phase (limit {limit:g} s)"
        else:
            reason = f"timed out in its {phase} phase"
        super().__init__(reason)
        self.phase = phase
        self.limit = limit


class OutboundConnectionError(OutboundError):
    """The destination was allowed but could not be reached (name unknown, refused, reset)."""


class OutboundTlsError(OutboundConnectionError):
    """The TLS handshake failed, for example the certificate does not match the host name."""


class OutboundProtocolError(OutboundError):
    """The server's answer is not valid HTTP, or its body cannot be decoded."""
