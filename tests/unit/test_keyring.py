"""
Tests for L{cluster.gossip.keyring}: the memberlist keyring rules and
AES-GCM packet encryption, checked against a nack captured from a real serf
agent (C{shared/WIRE.md} sections 5 and 9).
"""

from __future__ import annotations

import base64
import itertools
import json

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip.keyring import (
    DecryptError,
    Keyring,
    KeyringError,
    encryption_overhead,
    encryption_version,
)

SERF_KEY_B64 = "AQIDBAUGBwgJCgsMDQ4PEA=="
SERF_KEY = bytes(range(1, 17))
# WIRE.md section 9, "Encrypted nack": vsn 1, nonce, ciphertext, tag.
SERF_NACK = bytes.fromhex(
    "013eb8ca52505b07c22fa21736379536c9ceb7b5b005c0760b83733d2536a08118fdd33590d6"
)
NACK_PLAIN = bytes.fromhex("0b81a55365714e6f08")

K16 = bytes(range(16))
K24 = bytes(range(100, 124))
K32 = bytes(range(200, 232))


def counting_nonces() -> tuple[list[int], Keyring]:
    """A keyring whose nonces come from a counter, recording requests."""
    calls: list[int] = []
    counter = itertools.count()

    def random_bytes(n: int) -> bytes:
        calls.append(n)
        return next(counter).to_bytes(n, "big")

    return calls, Keyring([K16], random_bytes=random_bytes)


class SerfInteropTests(SynchronousTestCase):
    """Payloads captured from serf."""

    def test_decrypt_serf_nack(self) -> None:
        """The real encrypted nack decrypts to C{nack {SeqNo: 8}}."""
        keyring = Keyring.from_base64(SERF_KEY_B64)
        self.assertEqual(keyring.primary_key(), SERF_KEY)
        self.assertEqual(keyring.decrypt(SERF_NACK), NACK_PLAIN)

    def test_serf_nack_reproduced(self) -> None:
        """
        Encrypting the plaintext with serf's nonce gives serf's bytes: the
        layout and AAD handling match exactly.
        """
        nonce = SERF_NACK[1:13]
        keyring = Keyring([SERF_KEY], random_bytes=lambda n: nonce)
        self.assertEqual(keyring.encrypt(NACK_PLAIN), SERF_NACK)

    def test_serf_nack_wrong_aad(self) -> None:
        """The nack was sealed with empty AAD; a label breaks it."""
        keyring = Keyring([SERF_KEY])
        self.assertRaises(DecryptError, keyring.decrypt, SERF_NACK, b"label")

    def test_serf_nack_wrong_key(self) -> None:
        """Another key cannot open it."""
        self.assertRaises(DecryptError, Keyring([K16]).decrypt, SERF_NACK)


class EncryptTests(SynchronousTestCase):
    """Payload layout, versions and round trips."""

    def test_round_trips(self) -> None:
        """Both versions, all key sizes, with and without AAD."""
        messages = [b"", b"x", bytes(15), bytes(16), bytes(17), bytes(1400)]
        for key, version, aad, msg in itertools.product(
            [K16, K24, K32], [0, 1], [b"", b"label", b"\x0a\x00\x00\x00\x41"], messages
        ):
            keyring = Keyring([key])
            sealed = keyring.encrypt(msg, aad=aad, version=version)
            self.assertEqual(sealed[0], version)
            self.assertEqual(keyring.decrypt(sealed, aad=aad), msg)

    def test_v1_length(self) -> None:
        """Version 1 adds exactly 29 bytes."""
        keyring = Keyring([K32])
        for n in (0, 1, 16, 100, 1400):
            self.assertEqual(len(keyring.encrypt(bytes(n))), n + 29)

    def test_v0_length(self) -> None:
        """
        Version 0 is C{1 + 12 + n + pad + 16}, pad 1-16 and a whole block
        when the message is already aligned.
        """
        keyring = Keyring([K16])
        for n in range(0, 70):
            pad = 16 - n % 16
            self.assertEqual(len(keyring.encrypt(bytes(n), version=0)), 29 + n + pad)
        self.assertEqual(len(keyring.encrypt(bytes(32), version=0)), 29 + 48)

    def test_v0_padding_content(self) -> None:
        """The padded plaintext is PKCS7: C{pad} bytes each equal to C{pad}."""
        keyring = Keyring([K16])
        sealed = keyring.encrypt(b"abc", version=0)
        inner = AESGCM(K16).decrypt(sealed[1:13], sealed[13:], b"")
        self.assertEqual(inner, b"abc" + bytes([13]) * 13)
        sealed = keyring.encrypt(bytes(16), version=0)
        inner = AESGCM(K16).decrypt(sealed[1:13], sealed[13:], b"")
        self.assertEqual(inner, bytes(16) + bytes([16]) * 16)

    def test_layout_and_nonce_source(self) -> None:
        """C{vsn | nonce | GCM}, with a fresh 12-byte nonce per message."""
        calls, keyring = counting_nonces()
        first = keyring.encrypt(b"hello", aad=b"l")
        second = keyring.encrypt(b"hello", aad=b"l")
        self.assertEqual(calls, [12, 12])
        self.assertEqual(first[1:13], bytes(12))
        self.assertEqual(second[1:13], (1).to_bytes(12, "big"))
        self.assertNotEqual(first[13:], second[13:])
        expected = AESGCM(K16).encrypt(bytes(12), b"hello", b"l")
        self.assertEqual(first, b"\x01" + bytes(12) + expected)

    def test_encrypt_with_primary(self) -> None:
        """Only the primary key seals; a keyring without it cannot open."""
        keyring = Keyring([K24, K16])
        sealed = keyring.encrypt(b"m")
        self.assertEqual(Keyring([K24]).decrypt(sealed), b"m")
        self.assertRaises(DecryptError, Keyring([K16]).decrypt, sealed)

    def test_unsupported_encrypt_version(self) -> None:
        """Only versions 0 and 1 exist."""
        self.assertRaises(ValueError, Keyring([K16]).encrypt, b"m", version=2)

    def test_wrong_aad(self) -> None:
        """AAD is authenticated: different or missing AAD fails."""
        keyring = Keyring([K16])
        for version in (0, 1):
            sealed = keyring.encrypt(b"payload", aad=b"prod", version=version)
            self.assertRaises(DecryptError, keyring.decrypt, sealed, aad=b"dev")
            self.assertRaises(DecryptError, keyring.decrypt, sealed)

    def test_version_byte_not_authenticated(self) -> None:
        """
        As in memberlist, the version byte is outside the AAD; flipping
        a v1 payload to v0 only changes how padding is handled.
        """
        keyring = Keyring([K16])
        sealed = bytearray(keyring.encrypt(b"a" * 20 + bytes([4]) * 4))
        sealed[0] = 0
        self.assertEqual(keyring.decrypt(bytes(sealed)), b"a" * 20)

    def test_helpers(self) -> None:
        """Overheads and version selection."""
        self.assertEqual(encryption_overhead(1), 29)
        self.assertEqual(encryption_overhead(0), 45)
        self.assertEqual(encryption_version(1), 0)
        self.assertEqual(encryption_version(2), 1)
        self.assertEqual(encryption_version(5), 1)


class DecryptRejectionTests(SynchronousTestCase):
    """Malformed payloads raise L{DecryptError}."""

    def setUp(self) -> None:
        self.keyring = Keyring([K16])

    def test_empty(self) -> None:
        """Nothing to decrypt."""
        self.assertRaises(DecryptError, self.keyring.decrypt, b"")

    def test_unknown_version(self) -> None:
        """Versions above 1 are refused."""
        sealed = bytearray(self.keyring.encrypt(b"m" * 40))
        for vsn in (2, 7, 255):
            sealed[0] = vsn
            error = self.assertRaises(DecryptError, self.keyring.decrypt, bytes(sealed))
            self.assertIn("version", str(error))

    def test_minimum_lengths(self) -> None:
        """29 bytes is the v1 minimum; 45 the v0 minimum."""
        v1 = self.keyring.encrypt(b"")
        self.assertEqual(len(v1), 29)
        self.assertEqual(self.keyring.decrypt(v1), b"")
        self.assertRaises(DecryptError, self.keyring.decrypt, v1[:28])
        v0 = self.keyring.encrypt(b"", version=0)
        self.assertEqual(len(v0), 45)
        self.assertEqual(self.keyring.decrypt(v0), b"")
        self.assertRaises(DecryptError, self.keyring.decrypt, v0[:44])
        # A 29..44-byte payload is fine for v1 but too small for v0.
        error = self.assertRaises(DecryptError, self.keyring.decrypt, b"\x00" * 44)
        self.assertIn("too small", str(error))

    def test_bad_padding(self) -> None:
        """An authentic v0 payload whose plaintext is not PKCS7 is refused."""
        nonce = bytes(12)
        aead = AESGCM(K16)
        for plain in [bytes(16), b"a" * 15 + b"\x11", b"a" * 14 + b"\x01\x02", b""]:
            sealed = b"\x00" + nonce + aead.encrypt(nonce, plain, b"")
            if len(sealed) < 45:
                sealed = b"\x00" + nonce + aead.encrypt(nonce, plain * 2, b"")
            self.assertRaises(DecryptError, self.keyring.decrypt, sealed)

    def test_every_truncation(self) -> None:
        """Every strict prefix of a sealed message is refused."""
        for version in (0, 1):
            sealed = self.keyring.encrypt(b"some message", version=version)
            for n in range(len(sealed)):
                self.assertRaises(DecryptError, self.keyring.decrypt, sealed[:n])

    @given(st.binary(max_size=300), st.data())
    @settings(max_examples=200)
    def test_truncated_property(self, msg: bytes, data: st.DataObject) -> None:
        """Any strict prefix raises L{DecryptError}."""
        sealed = self.keyring.encrypt(msg, version=data.draw(st.sampled_from([0, 1])))
        n = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
        self.assertRaises(DecryptError, self.keyring.decrypt, sealed[:n])


class KeyringRuleTests(SynchronousTestCase):
    """Construction, add/use/remove and rotation."""

    def test_construct(self) -> None:
        """The first key is primary; duplicates collapse; order kept."""
        keyring = Keyring([K16, K24, K16, K32])
        self.assertEqual(keyring.primary_key(), K16)
        self.assertEqual(keyring.keys(), [K16, K24, K32])

    def test_construct_invalid(self) -> None:
        """Empty keyrings and bad key sizes are refused with a reason."""
        error = self.assertRaises(KeyringError, Keyring, [])
        self.assertIn("at least one key", str(error))
        for bad in (b"", b"x" * 15, b"x" * 17, b"x" * 33, b"x" * 64):
            error = self.assertRaises(KeyringError, Keyring, [K16, bad])
            self.assertIn("16, 24 or 32", str(error))
        self.assertRaises(KeyringError, Keyring, K16)

    def test_keys_is_a_copy(self) -> None:
        """Mutating the returned list does not touch the keyring."""
        keyring = Keyring([K16])
        keyring.keys().append(K32)
        self.assertEqual(keyring.keys(), [K16])

    def test_add_key(self) -> None:
        """Adds as secondary, ignores duplicates, validates."""
        keyring = Keyring([K16])
        keyring.add_key(K32)
        keyring.add_key(K32)
        keyring.add_key(K16)
        self.assertEqual(keyring.keys(), [K16, K32])
        self.assertRaises(KeyringError, keyring.add_key, b"short")
        self.assertEqual(keyring.keys(), [K16, K32])

    def test_use_key(self) -> None:
        """Moves an installed key to the front, others keep their order."""
        keyring = Keyring([K16, K24, K32])
        keyring.use_key(K32)
        self.assertEqual(keyring.keys(), [K32, K16, K24])
        self.assertEqual(keyring.primary_key(), K32)
        keyring.use_key(K32)
        self.assertEqual(keyring.keys(), [K32, K16, K24])
        self.assertRaises(KeyringError, keyring.use_key, b"z" * 16)

    def test_remove_key(self) -> None:
        """Secondaries can go; the primary and unknown keys cannot."""
        keyring = Keyring([K16, K24, K32])
        keyring.remove_key(K24)
        self.assertEqual(keyring.keys(), [K16, K32])
        error = self.assertRaises(KeyringError, keyring.remove_key, K16)
        self.assertIn("cannot remove the primary key", str(error))
        self.assertRaises(KeyringError, keyring.remove_key, K24)
        self.assertEqual(keyring.keys(), [K16, K32])

    def test_removed_key_no_longer_decrypts(self) -> None:
        """After removal, messages under that key are refused."""
        sealed = Keyring([K24]).encrypt(b"m")
        keyring = Keyring([K16, K24])
        self.assertEqual(keyring.decrypt(sealed), b"m")
        keyring.remove_key(K24)
        self.assertRaises(DecryptError, keyring.decrypt, sealed)

    def test_rotation(self) -> None:
        """
        The serf rotation sequence: install new everywhere, switch the
        primary, remove the old key; both sides talk throughout.
        """
        old, new = K16, K32
        a = Keyring([old])
        b = Keyring([old])
        from_old = a.encrypt(b"before")
        # [new, old] reads what [old] sent.
        self.assertEqual(Keyring([new, old]).decrypt(from_old), b"before")
        a.add_key(new)
        b.add_key(new)
        a.use_key(new)
        self.assertEqual(b.decrypt(a.encrypt(b"during")), b"during")
        self.assertEqual(a.decrypt(b.encrypt(b"during")), b"during")
        b.use_key(new)
        a.remove_key(old)
        b.remove_key(old)
        self.assertEqual(b.decrypt(a.encrypt(b"after", version=0)), b"after")
        self.assertRaises(DecryptError, a.decrypt, from_old)

    def test_repr_hides_keys(self) -> None:
        """No key material in the repr."""
        self.assertNotIn(K16.hex(), repr(Keyring([K16])))
        self.assertNotIn(repr(K16), repr(Keyring([K16])))


class LoadingTests(SynchronousTestCase):
    """serf's C{-encrypt} and C{-keyring-file} formats."""

    def test_from_base64(self) -> None:
        """Several keys, first primary; all sizes."""
        b64 = [base64.b64encode(k).decode() for k in (K32, K16, K24)]
        keyring = Keyring.from_base64(*b64)
        self.assertEqual(keyring.keys(), [K32, K16, K24])

    def test_from_base64_bad(self) -> None:
        """Bad base64, wrong sizes and no keys raise L{KeyringError}."""
        for bad in ("not base64!", "AQIDBAUGBwgJCgsMDQ4PEA", "AQID", ""):
            self.assertRaises(KeyringError, Keyring.from_base64, bad)
        self.assertRaises(KeyringError, Keyring.from_base64)

    def test_bad_key_is_never_echoed(self) -> None:
        """
        The error for a mistyped key says what is wrong in words and repeats
        no part of the text, which is a secret or nearly one.
        """
        typo = base64.b64encode(K32).decode().replace("A", "!", 1) + "x"
        error = self.assertRaises(KeyringError, Keyring.from_base64, typo)
        message = str(error)
        self.assertIn("not a base64 key", message)
        for start in range(len(typo) - 5):
            self.assertNotIn(typo[start : start + 6], message)

    def test_from_file(self) -> None:
        """A JSON list of base64 keys, primary first."""
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump([base64.b64encode(k).decode() for k in (K24, K16)], f)
        keyring = Keyring.from_file(path)
        self.assertEqual(keyring.keys(), [K24, K16])

    def test_from_file_serf_key(self) -> None:
        """A keyring file with the serf test key decrypts serf's nack."""
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump([SERF_KEY_B64], f)
        self.assertEqual(Keyring.from_file(path).decrypt(SERF_NACK), NACK_PLAIN)

    def test_from_file_bad(self) -> None:
        """Missing file, bad JSON, wrong shape, bad key: L{KeyringError}."""
        self.assertRaises(KeyringError, Keyring.from_file, self.mktemp())
        for content in ("{", '{"a": 1}', "[1, 2]", '["AQID"]', "[]"):
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(content)
            self.assertRaises(KeyringError, Keyring.from_file, path)
