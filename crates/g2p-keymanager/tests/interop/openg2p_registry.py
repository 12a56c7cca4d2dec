#!/usr/bin/env python3
"""OpenG2P's registry encryption, written plainly in Python (standard library only) from the
protocol notes, as the independent other side of the interoperability test: it talks to a
MOSIP Keymanager over REST the way OpenG2P's `g2p_encryption_keymanager` provider does and
treats records the way `g2p_registry_encryption` does.

    openg2p_registry.py encrypt|decrypt BASE_URL AUTH_URL CLIENT_ID CLIENT_SECRET SALT AAD < in > out

`encrypt` seals registrants' personal fields into `encrypted_val` (standard base64 of the raw
ciphertext bytes, as an Odoo export shows a binary field); `decrypt` puts them back and, for
each record, checks that the decrypted bytes are exactly `json.dumps` of the fields in list
order (exit 1 naming the record if not).
"""

import base64
import datetime
import json
import sys
import urllib.parse
import urllib.request

FIELDS = ["name", "family_name", "given_name", "addl_name", "display_name", "address", "birth_place"]
PLACEHOLDER = "encrypted"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Keymanager:
    def __init__(self, base, auth, client_id, secret, salt, aad):
        self.base, self.salt, self.aad = base.rstrip("/"), salt, aad
        form = urllib.parse.urlencode(
            {"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials"}
        ).encode()
        with urllib.request.urlopen(urllib.request.Request(auth, data=form)) as r:
            self.token = json.load(r)["access_token"]

    def call(self, path, data: bytes) -> bytes:
        stamp = now()
        body = {
            "id": "string",
            "version": "string",
            "requesttime": stamp,
            "metadata": {},
            "request": {
                "applicationId": "REGISTRATION",
                "referenceId": "ENCRYPT",
                "timeStamp": stamp,
                "data": b64u(data),
                "salt": self.salt,
                "aad": self.aad,
            },
        }
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Cookie": "Authorization=" + self.token},
        )
        with urllib.request.urlopen(request) as r:
            answer = json.load(r)
        if not answer.get("response"):
            raise ValueError("invalid keymanager response: %s" % answer.get("errors"))
        return unb64u(answer["response"]["data"])


def truthy_flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "t", "1", "yes", "y")
    return bool(value)


def main():
    mode, base, auth, client_id, secret, salt, aad = sys.argv[1:8]
    km = Keymanager(base, auth, client_id, secret, salt, aad)
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if mode == "encrypt":
            if truthy_flag(record.get("is_registrant")) and not truthy_flag(record.get("is_encrypted")):
                fields = {f: record[f] for f in FIELDS if record.get(f)}
                if fields:
                    raw = km.call("/encrypt", json.dumps(fields).encode())
                    record["encrypted_val"] = base64.b64encode(raw).decode()
                    record["is_encrypted"] = True
                    for f in fields:
                        record[f] = PLACEHOLDER
        else:
            if truthy_flag(record.get("is_encrypted")):
                raw = base64.b64decode(record["encrypted_val"])
                plain = km.call("/decrypt", raw)
                fields = json.loads(plain)
                ordered = {f: fields[f] for f in FIELDS if f in fields}
                if plain != json.dumps(ordered).encode() or len(ordered) != len(fields):
                    print("record on line %d: sealed bytes are not json.dumps of its fields" % number, file=sys.stderr)
                    sys.exit(1)
                record.update(fields)
                record["encrypted_val"] = None
                record["is_encrypted"] = False
        print(json.dumps(record))


if __name__ == "__main__":
    main()
