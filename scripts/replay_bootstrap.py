#!/usr/bin/env python3
"""Replays CloudNativePG's bootstrap of the rendered Cluster (every k8s overlay) on a scratch
PostgreSQL, in the operator's order, then migrates as the service roles with the settings the
Deployments give them. A manifest that cannot bootstrap or migrate fails here, not on a fresh
cluster.

The order (CloudNativePG's pkg/management/postgres/initdb.go, ConfigureNewInstance; docs
"Bootstrap" and "Database role management"):
  1. initdb; the instance starts with spec.postgresql.parameters;
  2. the application owner role (`CREATE ROLE <owner> LOGIN`);
  3. postInitSQL in the `postgres` database, as the superuser;
  4. postInitTemplateSQL in `template1`;
  5. the application database (`CREATE DATABASE <db> OWNER <owner>`);
  6. postInitApplicationSQL in the application database, as the superuser, then each of
     postInitApplicationSQLRefs (Secrets first, then ConfigMaps, in their listed order), each
     file run as one script;
  7. only once the primary is ready, `managed.roles` are reconciled: a role is created, or an
     existing one altered to match (LOGIN, password from its basic-auth Secret, whose
     `username` must be the role's).
Then each service's Deployment environment (ConfigMap + env, `$(VAR)` references resolved
from the Secrets: the dev overlay's generated ones, production's from
k8s/secrets.example.yaml) runs `migrate`, the database host replaced by the scratch one.

Finally it checks the result: each schema owned by its service role, the service roles
without superuser, CREATEDB or CREATEROLE, neither able to read the other's tables, and the
audit trail owned by switchboard_audit with the auth role left INSERT and SELECT only.
Proves it can fail: the base Cluster with its postInitSQL removed must not bootstrap.
"""
import base64
import copy
import os
import re
from secrets import token_urlsafe
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scratch_pg import Scratch, run  # noqa: E402
from validate_deploy import REPO, fail, kustomize, ok  # noqa: E402

PORT = int(os.environ.get("REPLAY_PG_PORT", "31490"))


def literal(value):
    return "'" + value.replace("'", "''") + "'"


def secrets_of(docs, overlay):
    """name -> {key: value} for the overlay's Secrets, production's from the example file,
    whose REPLACE-ME placeholders get random values as the operator's would (the services
    refuse the placeholders themselves)."""
    found = {}
    sources = [d for d in docs if d["kind"] == "Secret"]
    if overlay == "production":
        with open(os.path.join(REPO, "k8s", "secrets.example.yaml")) as f:
            sources += [d for d in yaml.safe_load_all(f) if d]
    for d in sources:
        values = {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
        values.update(d.get("stringData") or {})
        values = {k: token_urlsafe(32) if "REPLACE-ME" in v else v for k, v in values.items()}
        found[d["metadata"]["name"]] = values
    return found


def sql_refs(initdb, docs, secrets):
    """The scripts of postInitApplicationSQLRefs, from the rendered ConfigMaps and the
    Secrets: [(what, text)]."""
    refs = initdb.get("postInitApplicationSQLRefs", {})
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    found = []
    for kind, source in (("secretRefs", secrets), ("configMapRefs", configmaps)):
        for ref in refs.get(kind, []):
            text = source.get(ref["name"], {}).get(ref["key"])
            found.append((f"postInitApplicationSQLRefs {ref['name']}/{ref['key']}", text))
    return found


def bootstrap(pg, cluster, secrets, docs):
    """CloudNativePG's initdb bootstrap and role reconciliation, in its order. Returns the
    first failure as text, or None."""
    spec = cluster["spec"]
    initdb = spec.get("bootstrap", {}).get("initdb", {})
    database, owner = initdb.get("database", "app"), initdb.get("owner", "app")
    steps = [("postgres", f'CREATE ROLE "{owner}" LOGIN', "the owner role")]
    steps += [("postgres", q, "postInitSQL") for q in initdb.get("postInitSQL", [])]
    steps += [("template1", q, "postInitTemplateSQL") for q in initdb.get("postInitTemplateSQL", [])]
    steps += [("postgres", f'CREATE DATABASE "{database}" OWNER "{owner}"', "the database")]
    steps += [(database, q, "postInitApplicationSQL") for q in initdb.get("postInitApplicationSQL", [])]
    for what, text in sql_refs(initdb, docs, secrets):
        if text is None:
            return f"{what}: no such ConfigMap or Secret key in the rendered overlay"
        steps.append((database, text, what))
    for db, statement, what in steps:
        r = pg.sql(db, statement)
        if r.returncode != 0:
            return f"{what}: {statement}: {r.stderr.strip()}"
    for role in spec.get("managed", {}).get("roles", []):
        if role.get("ensure", "present") != "present":
            continue
        name = role["name"]
        attrs = ["LOGIN" if role.get("login") else "NOLOGIN"]
        for flag in ("superuser", "createdb", "createrole", "replication", "bypassrls"):
            attrs.append(flag.upper() if role.get(flag) else "NO" + flag.upper())
        ref = role.get("passwordSecret", {}).get("name")
        if ref:
            secret = secrets.get(ref)
            if secret is None or "password" not in secret:
                return f"managed role {name}: Secret {ref} with a password key is missing"
            if secret.get("username", name) != name:
                return f"managed role {name}: Secret {ref} names user {secret.get('username')}"
            attrs.append("PASSWORD " + literal(secret["password"]))
        exists = pg.sql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = {literal(name)}")
        verb = "ALTER" if exists.stdout.strip() == "1" else "CREATE"
        r = pg.sql("postgres", f'{verb} ROLE "{name}" {" ".join(attrs)}')
        if r.returncode != 0:
            return f"managed role {name}: {r.stderr.strip()}"
    return None


REF = re.compile(r"\$\(([A-Za-z0-9_]+)\)")


def container_env(docs, deployment, secrets, configmaps):
    """The environment Kubernetes gives the Deployment's first container."""
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for ef in c.get("envFrom", []):
        env.update(configmaps.get(ef.get("configMapRef", {}).get("name"), {}))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = REF.sub(lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets.get(ref["name"], {}).get(ref["key"], "")
    return env


def migrate(docs, secrets):
    """Runs `migrate` with each service's database URL as its Deployment has it, pointed
    at the scratch instance. Returns the failure text or None."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env = {"PATH": os.environ.get("PATH", "")}
    for service, var in (("auth", "AUTH_DATABASE_URL"), ("messaging", "MESSAGING_DATABASE_URL")):
        given = container_env(docs, service, secrets, configmaps)
        if var not in given:
            return f"the {service} Deployment has no {var}"
        env.update({k: v for k, v in given.items() if k in ("ALLOW_INSECURE_DEV_SECRETS",)})
        # The scratch server has no certificate for switchboard-db-rw: TLS to the database is
        # tested by the local stack (tests/api/database.rs), so the replay connects plainly.
        plain = given[var].split("?", 1)[0]
        env[var] = re.sub(r"@[^/]+/", f"@127.0.0.1:{PORT}/", plain, count=1)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.path.join(os.environ.get("SWITCHBOARD_BIN_DIR", os.path.join(target, "debug")), "migrate")
    r = run([binary], env=env)
    if r.returncode != 0:
        return f"migrate: {r.stdout[-1500:]}{r.stderr[-1500:]}"
    return None


def check_roles(pg, database):
    owners = pg.sql(database, "SELECT nspname || '=' || nspowner::regrole FROM pg_namespace "
                              "WHERE nspname IN ('auth', 'messaging') ORDER BY 1").stdout.split()
    if owners != ["auth=switchboard_auth", "messaging=switchboard_messaging"]:
        return f"schema owners are {owners}"
    powers = pg.sql("postgres", "SELECT rolname FROM pg_roles WHERE rolname LIKE 'switchboard\\_%' "
                                "AND rolname <> 'switchboard_owner' "
                                "AND (rolsuper OR rolcreatedb OR rolcreaterole)").stdout.strip()
    if powers:
        return f"service roles with more power than they need: {powers}"
    tables = pg.sql(database, "SELECT count(*) FROM pg_tables WHERE schemaname IN ('auth', 'messaging')")
    if int(tables.stdout.strip() or 0) < 5:
        return "the migrations created no tables"
    for role, table in (("switchboard_auth", "messaging.messages"),
                        ("switchboard_messaging", "auth.sessions"),
                        ("switchboard_messaging", "auth.users")):
        r = pg.sql(database, f"SELECT has_table_privilege('{role}', '{table}', 'SELECT')")
        if r.stdout.strip() != "f":
            return f"{role} may read {table}"
    rights = ", ".join(f"has_table_privilege('switchboard_auth', 'audit.events', '{p}')"
                       for p in ("INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE"))
    audit = pg.sql(database, f"SELECT nspowner::regrole, {rights} FROM pg_namespace "
                             "WHERE nspname = 'audit'").stdout.strip()
    if audit != "switchboard_audit|t|t|f|f|f":
        return f"the audit schema's owner and the auth role's rights on audit.events (INSERT SELECT UPDATE DELETE TRUNCATE) are {audit!r}"
    return None


def replay(overlay, docs, cluster, with_migrations=True):
    secrets = secrets_of(docs, overlay)
    pg = Scratch(PORT, cluster["spec"].get("postgresql", {}).get("parameters", {}))
    try:
        failure = bootstrap(pg, cluster, secrets, docs)
        if failure is None and with_migrations:
            failure = migrate(docs, secrets)
            if failure is None:
                failure = check_roles(pg, cluster["spec"]["bootstrap"]["initdb"]["database"])
        return failure
    finally:
        pg.stop()


def main():
    for overlay in ("dev", "production"):
        docs = kustomize(overlay)
        cluster = next(d for d in docs if d["kind"] == "Cluster")
        failure = replay(overlay, docs, cluster)
        if failure:
            fail(f"{overlay}: CloudNativePG bootstrap replay: {failure}")
        ok(f"k8s overlay {overlay}: bootstraps in CloudNativePG's order and migrates as the service roles")
    # The replay must be able to fail: without the roles made before the schemas (the
    # manifests before this check existed), initdb's SQL stops.
    broken = copy.deepcopy(cluster)
    broken["spec"]["bootstrap"]["initdb"].pop("postInitSQL", None)
    if replay("production", docs, broken, with_migrations=False) is None:
        fail("the replay bootstrapped a Cluster whose schemas name roles that do not exist yet")
    ok("the replay rejects schemas created before their roles")


if __name__ == "__main__":
    main()
