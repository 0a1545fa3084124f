#!/usr/bin/env python3
"""Submit one petition signature to petitiond through its Redis stream.

Standard library only: it speaks the Redis protocol (RESP) over a socket, so
it runs on any Python 3.8+ without installing a client. In a real frontend
use your Redis client of choice; the whole contract is one command:

    XADD petitiond:signatures * json '<signature JSON>'

The signature format is docs/signature.md (schema: docs/signature.schema.json).
petitiond validates every entry; one it rejects is moved, with the reason,
to the stream petitiond:signatures:rejected.

    REDIS_URL=redis://127.0.0.1:6379/0 python3 submit_signature.py \
        --id sig-000123 --campaign kz-baltabay \
        --name "Maria Santos" --email maria@example.org --country PH --locale tl

Prints the stream entry id.
"""

import argparse
import datetime
import json
import os
import socket
import ssl
import sys
from urllib.parse import unquote, urlparse

STREAM = "petitiond:signatures"


class RedisError(Exception):
    pass


class Redis:
    """The least of a Redis client: send a command, read one reply."""

    def __init__(self, url, timeout=10.0):
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError("REDIS_URL must start with redis:// or rediss://, got %r" % url)
        sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=timeout)
        if u.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname)
        self.sock = sock
        self.reader = sock.makefile("rb")
        if u.password is not None:
            if u.username:
                self.command("AUTH", unquote(u.username), unquote(u.password))
            else:
                self.command("AUTH", unquote(u.password))
        db = (u.path or "/").lstrip("/")
        if db and db != "0":
            self.command("SELECT", db)

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed by the server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError("unexpected reply %r" % line)

    def close(self):
        self.reader.close()
        self.sock.close()


def build_signature(args):
    signer = {"name": args.name, "email": args.email}
    # Optional fields are left out when empty: petitiond rejects null.
    if args.country:
        signer["country"] = args.country
    if args.locale:
        signer["locale"] = args.locale
    sig = {
        "version": 1,
        "id": args.id,
        "campaign": args.campaign,
        "signer": signer,
        "signed_at": args.signed_at
        or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
    if args.comment:
        sig["comment"] = args.comment
    return sig


def main(argv=None):
    p = argparse.ArgumentParser(description="Submit one signature to petitiond.")
    p.add_argument("--id", required=True, help="your stable id for this signature (the idempotency key)")
    p.add_argument("--campaign", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--country", default="", help="ISO 3166-1 alpha-2, e.g. PH")
    p.add_argument("--locale", default="", help="language tag, e.g. tl or pt-BR")
    p.add_argument("--comment", default="")
    p.add_argument("--signed-at", default="", help="RFC 3339; default now")
    args = p.parse_args(argv)

    # ensure_ascii=False keeps names readable in the stream; the bytes are
    # UTF-8 either way.
    payload = json.dumps(build_signature(args), ensure_ascii=False, separators=(",", ":"))
    r = Redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        entry_id = r.command("XADD", STREAM, "*", "json", payload)
    finally:
        r.close()
    print(entry_id.decode())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, RedisError, ValueError) as e:
        print("submit_signature: %s" % e, file=sys.stderr)
        sys.exit(1)
