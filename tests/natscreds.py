"""NATS decentralized auth for tests, made here: an operator, an account and users as
NATS v2 JWTs signed with NKeys (the ``nkeys`` package), a nats-server configuration that
trusts the operator (memory resolver), and ``.creds`` files as ``nsc generate creds``
writes them. No ``nsc`` needed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict) -> str:
    claims = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": nats,
    }
    claims["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    )
    head = _b64(b'{"typ":"JWT","alg":"ed25519-nkey"}')
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


class Authority:
    """An operator with one account; :meth:`user` writes a .creds file for a new user."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.operator = _pair(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = _pair(nkeys.PREFIX_BYTE_ACCOUNT)
        unlimited = {
            "subs": -1,
            "data": -1,
            "payload": -1,
            "imports": -1,
            "exports": -1,
            "conn": -1,
            "leaf": -1,
        }
        self.account_jwt = _jwt(
            self.operator,
            self.account.public_key.decode(),
            "veylor-tests",
            {"type": "account", "version": 2, "limits": {**unlimited, "wildcards": True}},
        )
        self.operator_jwt = _jwt(
            self.operator, self.operator.public_key.decode(), "op", {"type": "operator", "version": 2}
        )

    def server_config(self) -> Path:
        path = self.workdir / "auth.conf"
        path.write_text(
            f"operator: {self.operator_jwt}\nresolver: MEMORY\n"
            f"resolver_preload: {{\n  {self.account.public_key.decode()}: {self.account_jwt}\n}}\n"
        )
        return path

    def user(self, name: str) -> tuple[Path, str]:
        """A new user's .creds file, and its seed (a secret no log may show)."""
        user = _pair(nkeys.PREFIX_BYTE_USER)
        token = _jwt(
            self.account,
            user.public_key.decode(),
            name,
            {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        )
        seed = user.seed.decode()
        path = self.workdir / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
        return path, seed
