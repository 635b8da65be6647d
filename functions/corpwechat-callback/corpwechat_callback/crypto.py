"""WeCom's callback crypto (doc 91144), with ``cryptography``'s AES.

The app's callback settings hold a Token and a 43-character EncodingAESKey. The AES key is
``base64(EncodingAESKey + "=")`` (32 bytes), AES-256-CBC with the key's first 16 bytes as
the IV, PKCS#7 padding to a multiple of **32** bytes (a 16-byte unpadder rejects WeCom's
own sample). The plaintext is 16 random bytes, the message's length (4 bytes, big-endian),
the message, then the corp id it is for. ``msg_signature`` is the SHA-1 of the sorted
concatenation of the token, timestamp, nonce and ciphertext.

Everything that does not check out is a ``Refused`` with a one-line reason; nothing here
says which byte was wrong beyond that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeCom's PKCS#7 block


class Refused(ValueError):
    """A callback that cannot be believed (bad signature, key, corp id or shape)."""


@dataclass(frozen=True)
class CallbackKeys:
    token: str
    aes_key: bytes
    corp_id: str

    @classmethod
    def parse(cls, token: str, encoding_aes_key: str, corp_id: str) -> CallbackKeys:
        """``ValueError`` (naming the setting, never its value) when unusable."""
        if not token:
            raise ValueError("the callback Token is empty")
        if len(encoding_aes_key) != 43:
            raise ValueError("the EncodingAESKey must be 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the EncodingAESKey is not base64") from None
        if len(key) != 32:
            raise ValueError("the EncodingAESKey does not make a 32-byte key")
        if not corp_id:
            raise ValueError("the corp id is empty")
        return cls(token, key, corp_id)


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypted)))
                        .encode("utf-8")).hexdigest()


def verify(keys: CallbackKeys, msg_signature: str, timestamp: str, nonce: str,
           encrypted: str) -> None:
    wanted = signature(keys.token, timestamp, nonce, encrypted)
    if not hmac.compare_digest(wanted, msg_signature.strip().lower()):
        raise Refused("msg_signature does not match")


def _cipher(keys: CallbackKeys) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(keys.aes_key), modes.CBC(keys.aes_key[:16]))


def decrypt(keys: CallbackKeys, encrypted: str) -> str:
    """The message inside ``encrypted``; ``Refused`` unless it is well formed and for
    this corp."""
    try:
        data = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("the encrypted text is not base64") from None
    if not data or len(data) % 16:
        raise Refused("the encrypted text is not whole AES blocks")
    decryptor = _cipher(keys).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise Refused("the decrypted text is not padded as WeCom pads it (wrong key?)")
    plain = plain[:-pad]
    if len(plain) < 20:
        raise Refused("the decrypted text is too short")
    (length,) = struct.unpack(">I", plain[16:20])
    message, receiver = plain[20:20 + length], plain[20 + length:]
    if len(message) != length:
        raise Refused("the decrypted text is shorter than it says")
    if receiver.decode("utf-8", "replace") != keys.corp_id:
        raise Refused("the message is for another corp")
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("the message is not UTF-8") from None


def encrypt(keys: CallbackKeys, message: str, random: bytes | None = None) -> str:
    """``message`` as WeCom expects a passive reply (``random``: the 16 leading bytes)."""
    body = message.encode("utf-8")
    plain = (random or os.urandom(16)) + struct.pack(">I", len(body)) + body \
        + keys.corp_id.encode("utf-8")
    pad = BLOCK - len(plain) % BLOCK
    plain += bytes([pad]) * pad
    encryptor = _cipher(keys).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")
