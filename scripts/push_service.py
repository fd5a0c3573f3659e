#!/usr/bin/env python3
"""A Web Push service for the test stack (RFC 8030), checking what Switchboard sends with
independent implementations: the VAPID JWT (RFC 8292) with py-vapid, the payload decrypted
(RFC 8291, aes128gcm) with http_ece, as the browser would with its own keys.

It plays both the push service and the browser behind it:
  POST /subscriptions            a new browser subscription: {id, endpoint, keys: {p256dh, auth}}
  PUT  /subscriptions/<id>       {"status": 201|404|410|429|500, "delay_ms": N}: how its
                                 pushes are answered, and how long each answer takes (a slow
                                 push service keeps the sender's pass under way for a while)
  GET  /subscriptions/<id>       {"received": [...], "refused": [...]}: every push that came
                                 (decrypted payload, TTL, Urgency, VAPID claims, the answer
                                 given) and every one that failed the checks (why)
  POST /push/<id>                a push, as Switchboard sends it

  push_service.py PORT
"""
import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import py_vapid
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 18320
ORIGIN = f"http://127.0.0.1:{PORT}"
lock = threading.Lock()
subscriptions = {}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_vapid(header):
    """The claims of a valid `vapid t=…, k=…` header (RFC 8292 §3), or raises."""
    if not header.lower().startswith("vapid "):
        raise ValueError(f"not a vapid Authorization: {header[:40]!r}")
    # py-vapid parses `t=…,k=…` without spaces; RFC 8292 allows them after the comma.
    compact = "vapid " + header[6:].replace(", ", ",").strip()
    if not py_vapid.Vapid02.verify(compact):
        raise ValueError("the VAPID signature does not verify")
    params = dict(p.split("=", 1) for p in header[6:].replace(" ", "").split(","))
    claims = json.loads(unb64url(params["t"].split(".")[1]))
    if claims.get("aud") != ORIGIN:
        raise ValueError(f"aud {claims.get('aud')!r} is not this push service ({ORIGIN})")
    if not 0 < claims.get("exp", 0) - time.time() <= 24 * 3600:
        raise ValueError(f"exp {claims.get('exp')} is not within 24 hours (RFC 8292 §2)")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https://")):
        raise ValueError(f"sub {claims.get('sub')!r} is no contact")
    return claims, params["k"]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("push-service: " + (fmt % args) + "\n")

    def answer(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

    def do_POST(self):
        if self.path == "/subscriptions":
            key = ec.generate_private_key(ec.SECP256R1())
            public = key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            sid = b64url(os.urandom(12))
            auth = os.urandom(16)
            with lock:
                subscriptions[sid] = {"key": key, "auth": auth, "status": 201, "delay_ms": 0,
                                      "received": [], "refused": []}
            return self.answer(201, {"id": sid, "endpoint": f"{ORIGIN}/push/{sid}",
                                     "keys": {"p256dh": b64url(public), "auth": b64url(auth)}})
        if self.path.startswith("/push/"):
            sid = self.path[len("/push/"):]
            with lock:
                sub = subscriptions.get(sid)
            if sub is None:
                return self.answer(404, {"error": "no such subscription"})
            raw = self.body()
            try:
                claims, vapid_key = check_vapid(self.headers.get("Authorization", ""))
                if self.headers.get("Content-Encoding") != "aes128gcm":
                    raise ValueError(f"Content-Encoding {self.headers.get('Content-Encoding')!r}")
                if self.headers.get("TTL") is None:
                    raise ValueError("no TTL header (RFC 8030 §5.2)")
                payload = json.loads(http_ece.decrypt(
                    raw, private_key=sub["key"], auth_secret=sub["auth"], version="aes128gcm"))
            except Exception as e:  # every failed check is recorded, and refused like a service would
                with lock:
                    sub["refused"].append(str(e))
                return self.answer(400, {"error": str(e)})
            time.sleep(sub["delay_ms"] / 1000)
            with lock:
                status = sub["status"]
                sub["received"].append({
                    "payload": payload, "ttl": int(self.headers["TTL"]),
                    "urgency": self.headers.get("Urgency"), "claims": claims,
                    "vapid_key": vapid_key, "answered": status, "at": time.time(),
                })
            return self.answer(status, {} if status >= 400 else None)
        return self.answer(404, {"error": "unknown path"})

    def do_PUT(self):
        sid = self.path[len("/subscriptions/"):]
        with lock:
            sub = subscriptions.get(sid) if self.path.startswith("/subscriptions/") else None
            if sub is None:
                return self.answer(404, {"error": "no such subscription"})
            settings = json.loads(self.body() or b"{}")
            sub["status"] = int(settings.get("status", 201))
            sub["delay_ms"] = int(settings.get("delay_ms", 0))
        return self.answer(204)

    def do_GET(self):
        sid = self.path[len("/subscriptions/"):]
        with lock:
            sub = subscriptions.get(sid) if self.path.startswith("/subscriptions/") else None
            if sub is None:
                return self.answer(404, {"error": "no such subscription"})
            return self.answer(200, {"received": sub["received"], "refused": sub["refused"]})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
