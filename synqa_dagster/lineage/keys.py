"""Ed25519 signing keys, key ids, and the HMAC secret that pseudonymises reviewer ids.

Where the signing key comes from (:func:`load_signing_key`, first match wins):

1. the environment variable (default ``SYNQA_SIGNING_KEY``): either the PEM text itself (PKCS#8, unencrypted)
   or the path of a PEM file;
2. the configured ``key_path``;
3. ``default_path`` (default :func:`synqa_dagster.paths.default_signing_key_path`), created on first use: the
   parent folder with mode 0700, the file through ``os.open(O_CREAT | O_EXCL, 0o600)`` plus ``fchmod(0o600)`` (so
   the umask plays no part; then linked into place, so a concurrent creator never sees half a key and never
   overwrites one), PKCS#8 PEM, unencrypted.

A key or secret *file* (whatever the source) is refused when its mode grants anything to group or others
(``mode & 0o077``): ``chmod 600`` it. Refused rather than tightened, unlike the review database: a key that others
could read may already have been copied, so the operator should decide whether to rotate it, not have the
permissions quietly fixed. The mode is checked on the open file descriptor the bytes are read from (``fstat``), so
a file swapped in between the check and the read is not used. Only Ed25519 keys are accepted.

Key id: ``"ed25519:" + the first 16 hex digits of SHA-256(raw 32-byte public key)``, i.e. 64 bits of the hash
of the RFC 8032 public key encoding (:func:`key_id_of`). It names a key in DSSE envelopes and reports; it is not
a secret and not a security boundary (the signature check against the full public key is).

Reviewer ids never leave the instance in clear: :func:`hmac_id` replaces them with
``"hmac-sha256:" + hex(HMAC-SHA256(secret, id))``, the secret coming from :func:`load_or_create_secret`.

References: RFC 8032 (Ed25519), RFC 5958 (PKCS#8), RFC 2104 (HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from synqa_dagster.paths import default_signing_key_path

__all__ = [
    "SigningKeyError", "SigningKey", "load_signing_key", "public_key_from_pem", "key_id_of", "raw_public_bytes",
    "load_or_create_secret", "hmac_id", "DEFAULT_ENV_VAR",
]

DEFAULT_ENV_VAR = "SYNQA_SIGNING_KEY"
SECRET_SIZE = 32


class SigningKeyError(ValueError):
    """A key or secret cannot be used: unreadable, wrong type, encrypted, or too widely readable.

    The message names the file (or the environment variable) and what to do about it.
    """


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32-byte RFC 8032 encoding of an Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Key id of an Ed25519 public key: ``"ed25519:" + sha256(raw 32-byte public key).hexdigest()[:16]``."""
    return "ed25519:" + hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def public_key_from_pem(pem: bytes | str) -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``) holding an Ed25519 key.

    Raises:
        SigningKeyError: not a PEM public key, or not Ed25519.
    """
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"public key is {type(key).__name__}, only Ed25519 is supported")
    return key


class SigningKey:
    """An Ed25519 private key with its id; never prints or exposes the private bytes.

    Args:
        private_key: the loaded key.
        source: where it came from, for messages (``"env:SYNQA_SIGNING_KEY"``, a file path...).
    Attributes:
        key_id: ``"ed25519:<16 hex>"`` (see :func:`key_id_of`).
        public_key: the Ed25519 public key.
        source: where the key was loaded from (never the key itself).
    """

    __slots__ = ("_private", "public_key", "key_id", "source")

    def __init__(self, private_key: Ed25519PrivateKey, source: str = "memory") -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key from {source} is {type(private_key).__name__}, "
                                  "only Ed25519 is supported")
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.source = source

    @classmethod
    def generate(cls) -> "SigningKey":
        """A fresh random key (kept in memory; see :func:`load_signing_key` for persisted keys)."""
        return cls(Ed25519PrivateKey.generate(), source="generated")

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data`` (deterministic, RFC 8032)."""
        return self._private.sign(bytes(data))

    def public_pem(self) -> str:
        """The public key as SubjectPublicKeyInfo PEM text (safe to publish)."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for writing the key file only. Handle with care."""
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self):  # no pickling: it would carry the private key
        raise TypeError("SigningKey cannot be pickled (it holds a private key); pass the key path instead")


def _private_from_pem(data: bytes, source: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(f"{source}: the private key is encrypted; synqa needs an unencrypted PKCS#8 "
                              "PEM") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{source}: not a PEM private key (expected PKCS#8 "
                              "'-----BEGIN PRIVATE KEY-----')") from None
    return SigningKey(key, source=source)  # type: ignore[arg-type]


def _read_private_file(path: Path, what: str = "private key file") -> bytes:
    """The bytes of ``path``, after checking (on the open descriptor) that it is a regular file that neither
    group nor others may access."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"{path}: {what} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SigningKeyError(f"{path}: {what} has mode {mode:04o}, readable or writable by "
                                  f"group/others; refusing to use it (run: chmod 600 {path})")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _load_key_file(path: Path, source: str) -> SigningKey:
    if not path.is_file():
        raise SigningKeyError(f"{source}: key file {path} does not exist")
    return _private_from_pem(_read_private_file(path), source)


def _create_private_file(path: Path, payload: bytes) -> bool:
    """Create ``path`` with mode 0600 holding ``payload``, atomically and without overwriting.

    The bytes go to a temporary file opened with ``O_CREAT | O_EXCL`` and mode 0600 (then ``fchmod`` 0600, which the
    umask does not touch), are fsynced, then hard-linked to ``path`` (fails if it exists). A missing parent folder
    is created 0700. Returns False if another process created ``path`` first.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode is subject to the umask
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # exactly 0600 whatever the umask (os.open's mode is masked by it)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_signing_key(key_path: str | os.PathLike[str] | None = None, env_var: str = DEFAULT_ENV_VAR,
                     default_path: Path | None = None) -> SigningKey:
    """Load the Ed25519 signing key: ``$env_var`` (PEM text or a path), else ``key_path``, else ``default_path``.

    Args:
        key_path: a configured key file (PKCS#8 PEM), used when the environment variable is unset or empty.
        env_var: the environment variable to look at first.
        default_path: the embedded default key, created on first use (parent 0700, file 0600);
            ``None`` means :func:`synqa_dagster.paths.default_signing_key_path`.
    Returns:
        The :class:`SigningKey`; its ``source`` says which of the three was used.
    Raises:
        SigningKeyError: the chosen key is missing (configured paths are never created), unreadable, encrypted, not
            Ed25519, or its file is accessible to group/others.
    """
    env_value = os.environ.get(env_var, "").strip() if env_var else ""
    if env_value:
        unquoted = env_value.strip("'\"").strip().replace("\\n", "\n")
        if "-----BEGIN" in unquoted or "PRIVATE KEY" in unquoted or "\n" in unquoted:
            # PEM text (possibly quoted, or with literal \n as in .env files). Never echo it: it is the secret.
            if not unquoted.startswith("-----BEGIN"):
                raise SigningKeyError(f"${env_var} looks like key material but not a PEM block (value not shown)")
            return _private_from_pem(unquoted.encode("utf-8"), f"${env_var}")
        return _load_key_file(Path(unquoted).expanduser(), f"${env_var} ({unquoted})")
    if key_path:
        path = Path(key_path).expanduser()
        return _load_key_file(path, str(path))
    if default_path is None:
        default_path = default_signing_key_path()
    default_path = Path(default_path)
    if not default_path.exists():
        key = SigningKey(Ed25519PrivateKey.generate())
        _create_private_file(default_path, key.private_pem())  # False: someone else won the race; load theirs
    return _load_key_file(default_path, str(default_path))


def load_or_create_secret(path: Path) -> bytes:
    """The 32-byte HMAC secret stored (raw bytes) at ``path``, created on first use (parent 0700, file 0600).

    Raises:
        SigningKeyError: the file is accessible to group/others, or does not hold exactly 32 bytes.
    """
    path = Path(path)
    if not path.exists():
        _create_private_file(path, secrets.token_bytes(SECRET_SIZE))
    data = _read_private_file(path, "secret file")
    if len(data) != SECRET_SIZE:
        raise SigningKeyError(f"{path}: secret must be exactly {SECRET_SIZE} bytes, found {len(data)}")
    return data


def hmac_id(secret: bytes, value: str | bytes) -> str:
    """Pseudonymise an identifier: ``"hmac-sha256:" + hex(HMAC-SHA256(secret, value))`` (str as UTF-8).

    Raises:
        ValueError: ``secret`` shorter than 16 bytes.
    """
    if len(secret) < 16:
        raise ValueError("HMAC secret must be at least 16 bytes")
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return "hmac-sha256:" + hmac.new(secret, data, hashlib.sha256).hexdigest()
