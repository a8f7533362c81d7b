"""
memberlist's keyring and packet encryption (C{keyring.go}, C{security.go};
C{shared/WIRE.md} section 5).

An encrypted payload is C{vsn:u8 | nonce:12 | AES-GCM(ciphertext | tag:16)}.
Version 1 encrypts the message as is; version 0 (sent only by nodes whose
own protocol version is 1) first PKCS7-pads it to a multiple of 16 bytes.
The version byte is not authenticated; the caller's AAD (label bytes, or
the stream frame header plus label) is.

The sender always uses the primary key; the receiver tries every installed
key in order, so a cluster can rotate keys by installing the new key
everywhere, switching the primary, then removing the old key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DecryptError",
    "Keyring",
    "KeyringError",
    "encryption_overhead",
    "encryption_version",
    "validate_key",
]

VERSION_SIZE = 1
NONCE_SIZE = 12
TAG_SIZE = 16
BLOCK_SIZE = 16
MAX_ENCRYPTION_VERSION = 1
_KEY_SIZES = (16, 24, 32)


class KeyringError(ValueError):
    """
    A key or keyring operation was rejected: bad key size, bad base64,
    unknown key, or an attempt to remove the primary key.
    """


class DecryptError(ValueError):
    """
    A payload could not be decrypted: too short, unknown version, no key
    authenticates it, or (version 0) invalid padding.
    """


def encryption_overhead(version: int) -> int:
    """
    The most bytes encryption adds to a message: 29 for version 1, 45 for
    version 0 (which may add a full block of padding).
    """
    return _encrypted_length(version, 0)


def encryption_version(protocol_version: int) -> int:
    """
    The encryption version a node sends given its own protocol version:
    0 only for protocol version 1, otherwise 1 (memberlist
    C{encryptionVersion}).
    """
    return 0 if protocol_version == 1 else 1


def validate_key(key: bytes) -> None:
    """
    Check that C{key} is a usable AES key.

    @raise KeyringError: If it is not 16, 24 or 32 bytes long.
    """
    if not isinstance(key, bytes):
        raise KeyringError(f"key must be bytes, not {type(key).__name__}")
    if len(key) not in _KEY_SIZES:
        raise KeyringError(f"key size must be 16, 24 or 32 bytes, not {len(key)}")


def _encrypted_length(version: int, n: int) -> int:
    """C{encryptedLength} from security.go."""
    if version >= 1:
        return VERSION_SIZE + NONCE_SIZE + n + TAG_SIZE
    padding = BLOCK_SIZE - n % BLOCK_SIZE
    return VERSION_SIZE + NONCE_SIZE + n + padding + TAG_SIZE


def _pkcs7_pad(data: bytes) -> bytes:
    # Always 1-16 bytes: an aligned message gets a whole extra block, so the
    # receiver can always strip "last byte" bytes.
    more = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes((more,)) * more


def _pkcs7_unpad(data: bytes) -> bytes:
    # Go strips C{last byte} bytes without checking them; the padding is
    # authenticated, so a stricter check only ever rejects non-Go senders.
    if not data:
        raise DecryptError("empty plaintext cannot carry PKCS7 padding")
    more = data[-1]
    if not 1 <= more <= BLOCK_SIZE or more > len(data):
        raise DecryptError(f"invalid PKCS7 padding length {more}")
    if data[-more:] != bytes((more,)) * more:
        raise DecryptError("invalid PKCS7 padding bytes")
    return data[:-more]


def _decode_b64_key(text: str) -> bytes:
    # The message never repeats the text: it is a secret, or nearly one.
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(
            "not a base64 key (16, 24 or 32 bytes in standard base64)"
        ) from None
    validate_key(key)
    return key


class Keyring:
    """
    An ordered set of AES keys; element 0 is the primary, used to encrypt.

    @ivar random_bytes: Source of nonces, C{os.urandom} unless a test
        injects a deterministic one.
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """
        @param keys: At least one key; C{keys[0]} becomes the primary.
            Duplicates are ignored.
        @param random_bytes: Returns C{n} random bytes, for nonces.
        @raise KeyringError: If C{keys} is empty or a key is invalid.
        """
        if isinstance(keys, (bytes, bytearray, str)):
            # A lone key would otherwise be taken as a sequence of ints.
            raise KeyringError("keys must be a sequence of keys, not one key")
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        self.random_bytes = random_bytes
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            self.add_key(key)

    def __repr__(self) -> str:
        # Never show key material.
        return f"<Keyring with {len(self._keys)} key(s)>"

    @classmethod
    def from_base64(
        cls,
        *b64keys: str,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> Keyring:
        """
        Build a keyring from keys in serf's C{-encrypt} format: standard
        base64 with padding.  The first key is the primary.

        @raise KeyringError: On bad base64, a bad key size or no keys.
        """
        return cls([_decode_b64_key(k) for k in b64keys], random_bytes=random_bytes)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> Keyring:
        """
        Load a serf C{-keyring-file}: a JSON array of base64 keys, primary
        first.

        @raise KeyringError: If the file cannot be read or parsed, or holds
            no or invalid keys.
        """
        try:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError) as e:
            raise KeyringError(f"cannot read keyring file {path!s}: {e}") from e
        if not isinstance(loaded, list) or not all(isinstance(k, str) for k in loaded):
            raise KeyringError(
                f"keyring file {path!s} must hold a JSON list of base64 strings"
            )
        return cls.from_base64(*loaded, random_bytes=random_bytes)

    def primary_key(self) -> bytes:
        """The key used to encrypt."""
        return self._keys[0]

    def keys(self) -> list[bytes]:
        """All installed keys, primary first (a copy)."""
        return list(self._keys)

    def add_key(self, key: bytes) -> None:
        """
        Install C{key} as a secondary key (primary if it is the first).
        Installing a key that is already present does nothing.

        @raise KeyringError: If C{key} is not 16, 24 or 32 bytes.
        """
        validate_key(key)
        if key in self._keys:
            return
        self._keys.append(key)
        self._ciphers[key] = AESGCM(key)

    def use_key(self, key: bytes) -> None:
        """
        Make the installed C{key} the primary; the others keep their order.

        @raise KeyringError: If C{key} is not installed.
        """
        if key not in self._keys:
            raise KeyringError("requested key is not in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove_key(self, key: bytes) -> None:
        """
        Uninstall a secondary key.

        @raise KeyringError: If C{key} is the primary or is not installed.
        """
        if key == self._keys[0]:
            raise KeyringError("cannot remove the primary key")
        if key not in self._keys:
            raise KeyringError("requested key is not in the keyring")
        self._keys.remove(key)
        del self._ciphers[key]

    def encrypt(self, plaintext: bytes, aad: bytes = b"", version: int = 1) -> bytes:
        """
        Encrypt with the primary key.

        @param aad: Authenticated but unencrypted data (label, stream header).
        @param version: 1, or 0 to PKCS7-pad first (protocol version 1
            senders).
        @return: C{vsn | nonce | ciphertext | tag}, of length
            C{len(plaintext) + 29} for version 1 and
            C{1 + 12 + n + pad + 16} for version 0.
        """
        if version == 0:
            plaintext = _pkcs7_pad(plaintext)
        elif version != 1:
            raise ValueError(f"unsupported encryption version {version}")
        nonce = self.random_bytes(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"random source returned {len(nonce)} bytes, not 12")
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, plaintext, aad)
        return bytes((version,)) + nonce + sealed

    def decrypt(self, payload: bytes, aad: bytes = b"") -> bytes:
        """
        Decrypt a payload of either version, trying every key in order.

        @raise DecryptError: If the payload is empty, too short for its
            version, of an unknown version, authenticated by no key, or
            (version 0) badly padded.
        """
        if not payload:
            raise DecryptError("cannot decrypt empty payload")
        version = payload[0]
        if version > MAX_ENCRYPTION_VERSION:
            raise DecryptError(f"unsupported encryption version {version}")
        minimum = _encrypted_length(version, 0)
        if len(payload) < minimum:
            raise DecryptError(
                f"payload is too small to decrypt: {len(payload)} < {minimum}"
            )
        nonce = payload[VERSION_SIZE : VERSION_SIZE + NONCE_SIZE]
        sealed = payload[VERSION_SIZE + NONCE_SIZE :]
        for key in self._keys:
            try:
                plain = self._ciphers[key].decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            return _pkcs7_unpad(plain) if version == 0 else plain
        raise DecryptError("no installed keys could decrypt the message")
