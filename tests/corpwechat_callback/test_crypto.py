"""WeCom's callback crypto against WeCom's own published sample (doc 91144), not only
against our own encryption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpwechat_callback.crypto import CallbackKeys, Refused, decrypt, encrypt, signature, verify

# WeCom's own published sample (doc 91144; the same in its WXBizMsgCrypt examples), kept
# beside this test with its provenance.
VECTORS = json.loads((Path(__file__).with_name("wecom-callback-vectors.json"))
                     .read_text(encoding="utf-8"))
APP = VECTORS["app"]
KEYS = CallbackKeys.parse(APP["token"], APP["encoding_aes_key"], APP["corp_id"])


def test_wecoms_url_verification_sample_checks_out_and_decrypts() -> None:
    sample = VECTORS["url_verification"]
    verify(KEYS, sample["msg_signature"], sample["timestamp"], sample["nonce"],
           sample["echostr"])
    assert decrypt(KEYS, sample["echostr"]) == sample["answer_body"]


def test_wecoms_message_sample_with_its_32_byte_padding_decrypts() -> None:
    sample = VECTORS["message"]
    verify(KEYS, sample["msg_signature"], sample["timestamp"], sample["nonce"],
           sample["encrypt"])
    assert decrypt(KEYS, sample["encrypt"]) == sample["plaintext"]
    assert sample["padding_bytes"] > 16, "the sample a 16-byte unpadder rejects"


def test_our_encryption_reproduces_wecoms_ciphertext_from_its_random_bytes() -> None:
    sample = VECTORS["message"]
    import base64

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    raw = base64.b64decode(sample["encrypt"])
    cipher = Cipher(algorithms.AES(KEYS.aes_key), modes.CBC(KEYS.aes_key[:16])).decryptor()
    random16 = (cipher.update(raw) + cipher.finalize())[:16]
    assert encrypt(KEYS, sample["plaintext"], random16) == sample["encrypt"]


@pytest.mark.parametrize("change", ["signature", "timestamp", "nonce", "ciphertext"])
def test_any_signed_part_changed_is_refused(change: str) -> None:
    sample = dict(VECTORS["message"])
    parts = {"signature": "msg_signature", "timestamp": "timestamp", "nonce": "nonce",
             "ciphertext": "encrypt"}
    key = parts[change]
    sample[key] = ("0" if sample[key][0] != "0" else "1") + sample[key][1:]
    with pytest.raises(Refused, match="msg_signature does not match"):
        verify(KEYS, sample["msg_signature"], sample["timestamp"], sample["nonce"],
               sample["encrypt"])


def test_another_key_or_another_corp_is_refused() -> None:
    sample = VECTORS["message"]
    other = CallbackKeys.parse(APP["token"], "a" * 43, APP["corp_id"])
    with pytest.raises(Refused):
        decrypt(other, sample["encrypt"])
    elsewhere = CallbackKeys.parse(APP["token"], APP["encoding_aes_key"], "wwsomeoneelse")
    with pytest.raises(Refused, match="for another corp"):
        decrypt(elsewhere, sample["encrypt"])
    for junk in ("", "not base64!", "QUJD"):
        with pytest.raises(Refused):
            decrypt(KEYS, junk)


def test_signature_is_sha1_of_the_sorted_parts() -> None:
    sample = VECTORS["url_verification"]
    assert signature(APP["token"], sample["timestamp"], sample["nonce"], sample["echostr"]) \
        == sample["msg_signature"]


@pytest.mark.parametrize(("token", "key", "corp", "said"), [
    ("", "a" * 43, "corp", "Token is empty"),
    ("t", "a" * 42, "corp", "43 characters"),
    ("t", "!" * 43, "corp", "not base64"),
    ("t", "a" * 43, "", "corp id is empty"),
])
def test_unusable_settings_are_refused_without_their_value(token, key, corp, said) -> None:
    with pytest.raises(ValueError, match=said) as raised:
        CallbackKeys.parse(token, key, corp)
    assert key not in str(raised.value) or not key
