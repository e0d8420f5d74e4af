"""The embedded default's local PKI: a CA, server and client certificates and a token signing key, made once.

`make run`, the harnesses and the tests need mTLS and signed tokens with nothing to set up, so a gateway whose
tls_* / jwt_* paths are empty generates them here under `pki_dir` (the run's directory), and the clients of the
same run read them back. A real deployment never uses this: its certificates and keys come from Secrets
(docs/deploy.md). Only tests, harnesses and `make run` mint tokens (`LocalPKI.mint_token`); the gateway only
verifies them (gateway/auth.py).

Several processes may start at once on one directory (a gateway and its clients, parallel tests): `ensure`
holds an exclusive lock file while it checks and generates, and every file is written under a temporary name
then renamed into place, private keys with mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config import GatewayConfig

TOKEN_ALGORITHM = "ES256"
"""The local signing key is EC P-256: ES256 is what service meshes and OAuth2 issuers verify everywhere."""
FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key", "jwt.key", "jwt.pub")
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
"""The server certificate's subject alternative names: the loopback addresses the local clients dial."""
VALID_DAYS = 365
_DEFAULTS = GatewayConfig()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """An EC P-256 public key as a JWK (RFC 7517) whose `kid` is its RFC 7638 thumbprint."""
    numbers = public_key.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _b64url(numbers.x.to_bytes(32, "big")),
           "y": _b64url(numbers.y.to_bytes(32, "big"))}
    thumbprint = _b64url(hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest())
    return {**jwk, "kid": thumbprint, "alg": TOKEN_ALGORITHM, "use": "sig"}


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write `data` to `path` atomically (a temporary name, then rename): readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, public_key, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey, *,
                 ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_NAMES[1:])]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class LocalPKI:
    """The files of one local PKI under `directory` (see the module docstring); `ensure()` before reading them."""

    directory: Path

    def __init__(self, directory: str | Path) -> None:
        object.__setattr__(self, "directory", Path(directory))

    def path(self, name: str) -> Path:
        if name not in FILES:
            raise ValueError(f"not a file of the local PKI: {name!r} (one of {FILES})")
        return self.directory / name

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def ensure(self) -> LocalPKI:
        """Generate every file once; a no-op when they all exist. Safe when several processes call it at once."""
        if all((self.directory / f).is_file() for f in FILES):
            return self
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not all((self.directory / f).is_file() for f in FILES):
                    self._generate()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return self

    def _generate(self) -> None:
        """A new CA and everything it signs (a partial set from an interrupted run is replaced whole)."""
        ca_key, server_key, client_key, jwt_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
        ca = _certificate("intent-platform local CA", ca_key.public_key(), None, ca_key, ca=True)
        server = _certificate("localhost", server_key.public_key(), ca.subject, ca_key, server=True)
        client = _certificate("intent-platform local client", client_key.public_key(), ca.subject, ca_key)
        pem = serialization.Encoding.PEM
        public = jwt_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
        # keys before the certificates and ca.crt last: `ensure` checks for every file, so a crash part-way
        # leaves a set that is regenerated whole next time
        for name, data, private in (("ca.key", _key_pem(ca_key), True), ("server.key", _key_pem(server_key), True),
                                    ("client.key", _key_pem(client_key), True), ("jwt.key", _key_pem(jwt_key), True),
                                    ("jwt.pub", public, False), ("server.crt", server.public_bytes(pem), False),
                                    ("client.crt", client.public_bytes(pem), False),
                                    ("ca.crt", ca.public_bytes(pem), False)):
            _write(self.directory / name, data, private)

    def jwks(self) -> dict:
        """The token signing key's public half as a JWKS document ({"keys": [jwk]}), for a `jwt_jwks` file."""
        public = serialization.load_pem_public_key(self.read("jwt.pub"))
        return {"keys": [public_jwk(public)]}

    def mint_token(self, scopes: Iterable[str], ttl_s: float = 3600.0, subject: str = "local-client", *,
                   issuer: str = _DEFAULTS.jwt_issuer, audience: str = _DEFAULTS.jwt_audience,
                   now: float | None = None) -> str:
        """A JWT signed with jwt.key carrying `scope` (space-separated, the OAuth2 convention), iss, aud, sub, iat,
        nbf and exp (`now` + `ttl_s`; a negative ttl gives an expired token, for tests)."""
        self.ensure()
        key = serialization.load_pem_private_key(self.read("jwt.key"), password=None)
        issued = int(time.time() if now is None else now)
        claims = {"iss": issuer, "aud": audience, "sub": subject, "scope": " ".join(scopes), "iat": issued,
                  "nbf": issued, "exp": int(issued + ttl_s), "jti": uuid.uuid4().hex}
        return jwt.encode(claims, key, algorithm=TOKEN_ALGORITHM,
                          headers={"kid": public_jwk(key.public_key())["kid"]})
