"""Who may act through the console, and from where: the checks every action (a ``POST``
that changes something) passes before it runs. Reads need none of them.

An action must come from the console's own pages (same origin, a JSON body: a page on
another site can neither send that without a CORS preflight, which the console never
grants, nor forge the ``Origin`` and ``Sec-Fetch-Site`` headers) and from an operator:
a bearer token, basic-auth credentials, or an identity header set by a trusted proxy.
Secrets are compared in constant time and never logged; the operator's identity is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.errors import ConfigError
from services.common.http import http_error
from services.common.settings import ConsoleSettings

__all__ = ["OPERATORS", "REALM", "Operators", "action"]

log = structlog.get_logger(__name__)

#: The basic-auth realm the browser shows in its sign-in prompt.
REALM: Final = "suno console"
#: The longest identity taken from the trusted header (anything longer is cut).
MAX_IDENTITY_LENGTH: Final = 200


def _digest(value: bytes) -> bytes:
    """Compared by digest so that every comparison takes the same time whatever the length."""
    return hashlib.sha256(value).digest()


@dataclass(frozen=True, slots=True)
class Operators:
    """The operators the console accepts and whether it takes actions at all."""

    tokens: tuple[bytes, ...] = ()
    #: (user, digest of the password) pairs.
    credentials: tuple[tuple[str, bytes], ...] = ()
    identity_header: str = ""
    read_only: bool = False

    @classmethod
    def from_settings(cls, settings: ConsoleSettings) -> Operators:
        """Raises :class:`ConfigError` for a credential that is not ``user:password``."""
        credentials = []
        for secret in settings.operator_credentials:
            user, colon, password = secret.get().partition(":")
            if not colon or not user or not password:
                raise ConfigError(
                    "CONSOLE_OPERATOR_CREDENTIALS must be user:password pairs, comma-separated"
                )
            credentials.append((user, _digest(password.encode())))
        return cls(
            tokens=tuple(_digest(token.get().encode()) for token in settings.operator_tokens),
            credentials=tuple(credentials),
            identity_header=settings.trusted_identity_header.strip(),
            read_only=settings.read_only,
        )

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.credentials or self.identity_header)

    @property
    def actions(self) -> bool:
        """Whether an operator can act at all: not read-only, and some way to sign in."""
        return self.configured and not self.read_only

    def identify(self, request: web.Request) -> str | None:
        """The operator behind ``request``, ``None`` when it names no accepted one."""
        if self.identity_header:
            named = request.headers.get(self.identity_header, "").strip()
            if named:
                return named[:MAX_IDENTITY_LENGTH]
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and self.tokens:
            return self._token(value.strip())
        if scheme.lower() == "basic" and self.credentials:
            return self._basic(value.strip())
        return None

    def _token(self, given: str) -> str | None:
        digest = _digest(given.encode())
        found = None
        for number, token in enumerate(self.tokens, start=1):  # no early exit: same time
            if hmac.compare_digest(digest, token) and found is None:
                found = f"token-{number}"
        return found

    def _basic(self, encoded: str) -> str | None:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        user_digest, password_digest = _digest(user.encode()), _digest(password.encode())
        found = None
        for known, secret in self.credentials:
            same_user = hmac.compare_digest(user_digest, _digest(known.encode()))
            if hmac.compare_digest(password_digest, secret) & same_user and found is None:
                found = known
        return found

    def challenge(self) -> dict[str, str] | None:
        """The ``WWW-Authenticate`` header of a 401: basic when credentials are accepted
        (the browser then prompts for them), else bearer when tokens are."""
        if self.credentials:
            return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        if self.tokens:
            return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
        return None

    def how_to_sign_in(self) -> str:
        ways = []
        if self.credentials:
            ways.append("sign in with an operator's user name and password (basic auth)")
        if self.tokens:
            ways.append("send Authorization: Bearer <operator token>")
        if self.identity_header:
            ways.append("come through the console's authenticating proxy")
        return "this action needs an operator: " + ", or ".join(ways)


OPERATORS = web.AppKey("console_operators", Operators)


def same_origin(request: web.Request) -> bool:
    """Whether the browser says the request comes from the console's own pages:
    ``Sec-Fetch-Site`` when it sends one (it cannot be set by a page), else ``Origin``."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    return request.headers.get("Origin") == f"{request.scheme}://{request.host}"


def _refusal(operators: Operators, request: web.Request) -> web.Response | None:
    """The answer refusing ``request`` before its action runs, ``None`` when it may run."""
    if operators.read_only:
        return http_error(403, "read_only", "this console is read-only (CONSOLE_READ_ONLY=true)")
    if not operators.configured:
        return http_error(
            403,
            "actions_disabled",
            "console actions are off: set CONSOLE_OPERATOR_TOKENS, "
            "CONSOLE_OPERATOR_CREDENTIALS or CONSOLE_TRUSTED_IDENTITY_HEADER to enable them",
        )
    if request.content_type != "application/json":
        return http_error(
            415, "unsupported_media_type", "an action's body must be JSON (application/json)"
        )
    if not same_origin(request):
        return http_error(
            403,
            "cross_site",
            "actions are only taken from the console's own pages: Origin must be the "
            "console's own (or Sec-Fetch-Site same-origin)",
        )
    return None


def action(name: str) -> Callable[[Handler], Handler]:
    """Runs the handler only for a same-origin JSON ``POST`` by an operator (whose identity
    is bound to every log line of the action), and logs the action's outcome."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            operators = request.app[OPERATORS]
            refused = _refusal(operators, request)
            if refused is not None:
                return refused
            operator = operators.identify(request)
            if operator is None:
                log.warning("console_action_unauthorized", action=name, path=request.path)
                return http_error(
                    401, "unauthorized", operators.how_to_sign_in(), headers=operators.challenge()
                )
            try:
                body = orjson.loads(await request.read() or b"{}")
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                return http_error(400, "invalid_body", "an action's body must be a JSON object")
            with structlog.contextvars.bound_contextvars(operator=operator, action=name):
                response = await handler(request)
            log.info(
                "console_action",
                action=name,
                operator=operator,
                path=request.path,
                status=response.status,
            )
            return response

        return guarded

    return wrap
