#!/usr/bin/env python3
"""What `docker compose up` needs that `docker compose config` cannot see, checked without a
container engine (issue 17):

1. scripts/compose-init.sh, run in a scratch copy: .env with no placeholder and no short
   secret left, and a signing key the auth container (uid 65532, a bind-mounted compose
   secret keeps the host's owner and mode) can read — 0644 inside a 0700 folder — which
   openssl parses as Ed25519; a second run changes nothing.
2. postgres/container-replica.sh against a scratch primary, twice with the same slot: a
   replica whose volume is re-created must clone and stream again (the slot it left on the
   primary is reused). A copy that insists on creating the slot must fail the second time.
3. The primary's bootstrap files: every script postgres/init.sql includes (`\ir`) is mounted
   beside it, where the container's hook runs it.
4. Images: every one pinned to a version, none from an end-of-life line, Jaeger v2 with its
   UI published.
"""
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scratch_pg import Scratch, pg_bin, run  # noqa: E402
from validate_deploy import REPO, fail, ok  # noqa: E402

PORT = int(os.environ.get("REPLAY_COMPOSE_PG_PORT", "31492"))
# Lines whose upstream support ended: (image pattern, why).
END_OF_LIFE = [
    (r"jaegertracing/all-in-one:", "Jaeger v1 (end of life since December 2025; use jaegertracing/jaeger v2)"),
    (r"nginx(inc/nginx-unprivileged)?:1\.(1[0-9]|2[0-8])\b", "an NGINX line no longer maintained"),
    (r"postgres:(9|1[0-3])\b", "a PostgreSQL major version past its end of life"),
]
# A release line at least major.minor (patch releases of it may follow), or a digest.
PINNED = re.compile(r":v?[0-9]+\.[0-9]+(\.[0-9]+)*([-.][A-Za-z0-9.-]+)?(@sha256:[0-9a-f]{64})?$")
# Distroless publishes no version tags: its line is the Debian release in the name.
VERSIONED_BY_NAME = re.compile(r"^gcr\.io/distroless/[a-z]+-debian[0-9]+:nonroot$")


def check_init():
    work = tempfile.mkdtemp(prefix="compose-init-")
    try:
        os.makedirs(os.path.join(work, "scripts"))
        shutil.copy(os.path.join(REPO, ".env.example"), work)
        shutil.copy(os.path.join(REPO, "scripts", "compose-init.sh"), os.path.join(work, "scripts"))
        for attempt in (1, 2):
            r = run(["bash", os.path.join(work, "scripts", "compose-init.sh")])
            if r.returncode != 0:
                fail(f"compose-init.sh (run {attempt}): {r.stderr}")
            if attempt == 1:
                first = open(os.path.join(work, ".env")).read(), open(os.path.join(work, "secrets", "signing-key.pem")).read()
        if (open(os.path.join(work, ".env")).read(), open(os.path.join(work, "secrets", "signing-key.pem")).read()) != first:
            fail("compose-init.sh replaced an existing .env or key on its second run")
        env = dict(l.split("=", 1) for l in first[0].splitlines() if "=" in l and not l.startswith("#"))
        for k, v in env.items():
            if "change-me" in v:
                fail(f"compose-init.sh left the placeholder {k}")
            if (k.endswith("_SECRET") or k.endswith("PASSWORD")) and len(v) < 32:
                fail(f"compose-init.sh made a short {k}")
        compose = yaml.safe_load(open(os.path.join(REPO, "docker-compose.yml")))
        # (secret name, file, what openssl must say it is, a service that mounts it)
        for name, file, kind, service in (("signing_key", "signing-key.pem", "ED25519", "auth"),
                                          ("vapid_key", "vapid.pem", "PRIME256V1", "messaging-1")):
            key = os.path.join(work, "secrets", file)
            mode, folder = stat.S_IMODE(os.stat(key).st_mode), stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode)
            if not mode & stat.S_IROTH:
                fail(f"secrets/{file} is {oct(mode)}: uid 65532 in the {service} container cannot read it")
            if folder & 0o077:
                fail(f"secrets/ is {oct(folder)}: other host users can reach the keys")
            if kind not in run(["openssl", "pkey", "-in", key, "-noout", "-text"]).stdout.upper():
                fail(f"secrets/{file} is not a {kind} private key")
            if compose["secrets"][name]["file"] != f"./secrets/{file}":
                fail(f"docker-compose.yml's {name} is not the file compose-init.sh writes")
            if name not in compose["services"][service].get("secrets", []):
                fail(f"docker-compose.yml's {service} does not mount {name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok("compose-init.sh: random secrets, keys (signing, VAPID) uid 65532 can read in a folder only its owner can, idempotent")


def start_replica(script, primary, data):
    """Runs the replica entrypoint as the postgres OS user; returns the process once the
    standby answers, or None if the script exited first."""
    env = {
        "PATH": os.path.dirname(pg_bin("postgres")[-1]) + ":" + os.environ.get("PATH", ""),
        "PGDATA": data, "PRIMARY_HOST": "127.0.0.1", "PRIMARY_PORT": str(primary.port),
        "REPLICATION_PASSWORD": "replay-replication", "SLOT": "replica_1",
        "PGPORT": str(PORT + 1), "PGHOST": primary.dir,
    }
    prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    proc = subprocess.Popen(prefix + ["env"] + [f"{k}={v}" for k, v in env.items()] + ["sh", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            return None, proc.stdout.read()
        r = primary.sql("postgres", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        if r.stdout.strip() == "1":
            return proc, ""
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    return None, "the standby did not stream within 60 s"


def stop_replica(proc):
    """Fast shutdown; a standby still busy after 30 s (its restartpoint on a loaded machine)
    is shut down immediately (SIGQUIT: what is checked here is the next clone, not this
    shutdown), and killed as a last resort."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def rejoins(script, primary):
    """Clone, stream, stop, lose the volume, clone again. Returns the failure or None."""
    data = os.path.join(primary.dir, "replica")
    for attempt in (1, 2):
        proc, out = start_replica(script, primary, data)
        if proc is None:
            return f"clone {attempt}: {out[-1500:]}"
        stop_replica(proc)
        run(pg_bin("rm") + ["-rf", data])
    return None


def check_replica():
    primary = Scratch(PORT, {"wal_level": "replica", "max_wal_senders": "5",
                             "max_replication_slots": "5"})
    try:
        primary.sql("postgres", "CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'replay-replication'")
        script = os.path.join(REPO, "postgres", "container-replica.sh")
        failure = rejoins(script, primary)
        if failure:
            fail(f"postgres/container-replica.sh: a replica with a re-created volume: {failure}")
        insisting = os.path.join(primary.dir, "replica-create-slot.sh")
        text = open(script).read().replace("--create-slot --if-not-exists", "--create-slot")
        open(insisting, "w").write(text)
        os.chmod(insisting, 0o755)
        primary.sql("postgres", "SELECT pg_drop_replication_slot('replica_1')")
        if rejoins(insisting, primary) is None:
            fail("the replica replay accepted a script that creates the slot unconditionally")
    finally:
        primary.stop()
    ok("postgres/container-replica.sh: a replica whose volume is re-created clones and streams again")


def images():
    found = []
    compose = yaml.safe_load(open(os.path.join(REPO, "docker-compose.yml")))
    built = {s["image"] for s in compose["services"].values() if "build" in s}
    found += [(f"docker-compose {n}", s["image"]) for n, s in compose["services"].items()
              if s.get("image") not in built]
    for line in open(os.path.join(REPO, "Dockerfile")):
        m = re.match(r"FROM (\S+)( AS (\S+))?", line)
        # The build stage ships nothing (Cargo.lock pins what it builds), so it may follow
        # the current stable Rust.
        if m and m.group(3) != "build":
            found.append(("Dockerfile", m.group(1)))
    return found, compose


def check_images():
    found, compose = images()
    errors = []
    for where, image in found:
        for pattern, why in END_OF_LIFE:
            if re.search(pattern, image):
                errors.append(f"{where}: {image} is {why}")
        if not PINNED.search(image) and not VERSIONED_BY_NAME.match(image):
            errors.append(f"{where}: {image} is not pinned to a version")
    jaeger = compose["services"].get("jaeger", {})
    if not jaeger.get("image", "").startswith("jaegertracing/jaeger:2"):
        errors.append("docker-compose: Jaeger is not v2 (jaegertracing/jaeger:2.x)")
    if not any(str(p).endswith(":16686") for p in jaeger.get("ports", [])):
        errors.append("docker-compose: Jaeger's UI (16686) is not published")
    if errors:
        fail("images:\n  " + "\n  ".join(errors))
    ok(f"images: {len(found)} pinned, none end-of-life; Jaeger v2 with its UI on 16686")


def check_bootstrap_mounts():
    compose = yaml.safe_load(open(os.path.join(REPO, "docker-compose.yml")))
    mounts = compose["services"]["postgres-primary"].get("volumes", [])
    init = open(os.path.join(REPO, "postgres", "init.sql")).read()
    included = re.findall(r"^\\ir\s+(\S+)", init, re.M)
    missing = [f for f in included
               if f"./postgres/{f}:/etc/switchboard/{f}:ro" not in mounts]
    if "./postgres/init.sql:/etc/switchboard/init.sql:ro" not in mounts or not included:
        fail("docker-compose: postgres-primary does not mount postgres/init.sql, or it includes nothing")
    if missing:
        fail(f"docker-compose: postgres-primary does not mount what init.sql includes: {missing}")
    ok(f"compose primary: init.sql and what it includes ({', '.join(included)}) are mounted")


if __name__ == "__main__":
    check_init()
    check_bootstrap_mounts()
    check_replica()
    check_images()
