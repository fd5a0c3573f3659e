"""Schemathesis hooks: real authentication and real objects for fuzzing Switchboard.

- Every operation gets the bearer access token of a user registered for this run (renewed
  by signing in again well inside its 5-minute lifetime).
- The cookie endpoints (/auth/refresh, /auth/logout) get `X-CSRF: 1` and the refresh
  cookie of a fresh session each time, so rotating or ending it never starves the run.
- Path ids are, half the time, ones that exist and belong to that user (a group with a
  peer, a message, a file, the peer's profile, a session), so the fuzzer reaches the logic
  behind the 404s; the other half stay random.

Set-up calls go straight to the services (AUTH_DIRECT_URL for sign-up, SWITCHBOARD_URL for
the rest): NGINX's per-address sign-up limit is for people.
"""

import itertools
import os
import threading
import uuid

import requests
import schemathesis

AUTH = os.environ.get("AUTH_DIRECT_URL", "http://127.0.0.1:18081")
BASE = os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:18080")
PASSWORD = "fuzzing password " + uuid.uuid4().hex[:8]
COOKIE_PATHS = {"/auth/refresh", "/auth/logout"}

# Endpoints that check the caller's password: fuzzed ones are wrong and lock the account.
PASSWORD_CHECKS = {
    ("POST", "/auth/me/password"),
    ("DELETE", "/auth/me"),
    ("POST", "/auth/me/passkeys/options"),
    ("POST", "/auth/me/totp"),
    ("PATCH", "/auth/me"),
}

_lock = threading.Lock()
_world = {}
_target = {}


def _password_target():
    """The access token of a user who exists only to receive fuzzed password checks."""
    with _lock:
        if "token" not in _target:
            _, _, token = _register()
            _target["token"] = token
        return _target["token"]


def _register():
    name = "fz" + uuid.uuid4().hex[:12]
    r = requests.post(
        f"{AUTH}/auth/register",
        json={"username": name, "email": f"{name}@fuzz.test", "password": PASSWORD},
        timeout=10,
    )
    r.raise_for_status()
    body = r.json()
    return name, body["user"]["id"], body["access_token"]


# The refresh cookie's name: `__Secure-refresh_token` when the stack sets Secure cookies (as
# the test stack does), `refresh_token` on a plain-HTTP development stack.
REFRESH_COOKIES = ("__Secure-refresh_token", "refresh_token")


def _login(name):
    """Signs in; the access token and the refresh cookie as (name, value)."""
    r = requests.post(f"{AUTH}/auth/login", json={"login": name, "password": PASSWORD}, timeout=10)
    r.raise_for_status()
    cookie = next(n for n in REFRESH_COOKIES if n in r.cookies)
    return r.json()["access_token"], (cookie, r.cookies[cookie])


def world():
    """The fuzzing user and objects it owns, made once."""
    with _lock:
        if _world:
            return _world
        name, me, token = _register()
        _, peer, _ = _register()
        auth = {"Authorization": f"Bearer {token}"}
        group = requests.post(
            f"{BASE}/api/conversations",
            json={"participant_ids": [peer], "name": "fuzzing", "is_group": True},
            headers=auth,
            timeout=10,
        ).json()["id"]
        message = requests.post(
            f"{BASE}/api/conversations/{group}/messages", json={"content": "hello"}, headers=auth, timeout=10
        ).json()["id"]
        upload = requests.post(
            f"{BASE}/api/conversations/{group}/attachments",
            files={"file": ("note.txt", b"a small file\n", "text/plain")},
            headers=auth,
            timeout=10,
        ).json()
        sessions = requests.get(f"{AUTH}/auth/sessions", headers=auth, timeout=10).json()["sessions"]
        _world.update(
            name=name,
            me=me,
            peer=peer,
            group=group,
            message=message,
            attachment=upload["attachment"]["id"],
            session=sessions[0]["id"],
        )
        return _world


def _real_id(path, param):
    w = world()
    if param == "user_id" or path.startswith("/auth/users/") or path.startswith("/api/users/"):
        return w["peer"]
    if path.startswith("/api/conversations/"):
        return w["group"]
    if path.startswith("/api/messages/"):
        return w["message"]
    if path.startswith("/api/attachments/"):
        return w["attachment"]
    if path.startswith("/auth/sessions/"):
        return w["session"]
    return None


_turn = itertools.count()
# Leaving the group would turn every later request about it into a 404: those keep random ids.
KEEP_RANDOM = ("/api/conversations/{id}/leave",)


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    path = ctx.operation.path
    if path in KEEP_RANDOM:
        return path_parameters
    for param in list(path_parameters or {}):
        if next(_turn) % 2 == 0:
            real = _real_id(path, param)
            if real is not None:
                path_parameters[param] = real
    return path_parameters


@schemathesis.auth()
class SwitchboardAuth:
    """The fuzzing user's access token (renewed every 4 minutes, inside its 5-minute life)."""

    refresh_interval = 240

    def get(self, case, ctx):
        token, _ = _login(world()["name"])
        return {"token": token}

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data['token']}"
        if (case.method.upper(), case.path) in PASSWORD_CHECKS:
            # Wrong passwords here count against the account and lock its sign-in (as they
            # must); they go to a user of their own so the fuzzing user can still sign in.
            case.headers["Authorization"] = f"Bearer {_password_target()}"
        if case.path in COOKIE_PATHS:
            case.headers["X-CSRF"] = "1"
            _, (cookie, value) = _login(world()["name"])
            case.cookies = {**(case.cookies or {}), cookie: value}
