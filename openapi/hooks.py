"""Schemathesis hooks: real authentication for fuzzing Switchboard through NGINX.

Every operation gets a bearer access token of a user registered for this run; the cookie
endpoints (/auth/refresh, /auth/logout) get a refresh_token cookie and X-CSRF of a fresh
session each time, so rotating or ending it never starves the rest of the run. Set-up calls
go straight to the auth service (AUTH_DIRECT_URL): NGINX's per-address sign-up limit is
for people, and its 429s are fuzzed like any other answer.
"""

import os
import uuid

import requests
import schemathesis

AUTH = os.environ.get("AUTH_DIRECT_URL", "http://127.0.0.1:18081")
PASSWORD = "fuzzing password " + uuid.uuid4().hex[:8]
COOKIE_PATHS = {"/auth/refresh", "/auth/logout"}


def _register():
    name = "fz" + uuid.uuid4().hex[:12]
    r = requests.post(
        f"{AUTH}/auth/register",
        json={"username": name, "email": f"{name}@fuzz.test", "password": PASSWORD},
        timeout=10,
    )
    r.raise_for_status()
    return name, r.json()["access_token"]


def _session(login):
    r = requests.post(f"{AUTH}/auth/login", json={"login": login, "password": PASSWORD}, timeout=10)
    r.raise_for_status()
    return r.cookies["refresh_token"]


@schemathesis.auth()
class SwitchboardAuth:
    """A bearer token for one user (renewed every 4 minutes, inside its 5-minute lifetime)."""

    refresh_interval = 240

    def get(self, case, ctx):
        name, token = _register()
        return {"login": name, "token": token}

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers.setdefault("Authorization", f"Bearer {data['token']}")
        if case.path in COOKIE_PATHS:
            case.headers.setdefault("X-CSRF", "1")
            case.cookies = {**(case.cookies or {}), "refresh_token": _session(data["login"])}
