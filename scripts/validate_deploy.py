#!/usr/bin/env python3
"""Offline validation of the deployment files: docker-compose.yml, every k8s overlay, the
CloudNativePG Cluster against its CRD schema, NGINX configs, and the environment variable
names given to each binary against the names its code reads. Then proves each validator
catches a deliberate error. Exits non-zero on the first failure.

Tools (installed by scripts/validate-deploy.sh): docker-compose, kubectl (kustomize),
kubernetes-validate, check-jsonschema, openapi-spec-validator, nginx, promtool (Debian's
prometheus package).
"""
import copy
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(os.environ.get("SHARED_DIR", os.path.join(REPO, "..", "shared")),
                      "schemas", "cloudnative-pg-cluster-v1.schema.json")
K8S_VERSION = "1.37.0"
TOOLS = os.environ.get("TOOLS_BIN", "")


def tool(name):
    path = os.path.join(TOOLS, name) if TOOLS else name
    return path if os.path.exists(path) else name


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def fail(msg):
    print(f"validate-deploy: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"validate-deploy: ok: {msg}")


# --- what the code reads ---------------------------------------------------------------

HELP_ENV = re.compile(r"\[env: ([A-Z0-9_]+)[=\]]")
HELP_TEXT = {}


def read_names():
    """Every variable each binary reads, from its own `--help` (clap lists each setting
    with its variable); builds the binaries first when they are missing."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    bin_dir = os.environ.get("SWITCHBOARD_BIN_DIR", os.path.join(target, "debug"))
    binaries = ("auth", "messaging", "migrate")
    if not all(os.path.exists(os.path.join(bin_dir, b)) for b in binaries):
        run(["cargo", "build", "--locked", "--bins"], cwd=REPO)
    names = {}
    for b in binaries:
        out = subprocess.run([os.path.join(bin_dir, b), "--help"], capture_output=True,
                             text=True, env={"PATH": os.environ.get("PATH", "")})
        if out.returncode != 0:
            fail(f"{b} --help failed: {out.stderr.strip()}")
        names[b] = set(HELP_ENV.findall(out.stdout))
        HELP_TEXT[b] = out.stdout
    if len(names["auth"]) < 15 or len(names["messaging"]) < 20 or len(names["migrate"]) < 2:
        fail(f"--help lists too few variables: { {b: len(n) for b, n in names.items()} }")
    return names


def allowed(binary, name, names):
    # The OpenTelemetry SDK reads every standard OTEL_* variable itself. The one-shot
    # migrate job shares the services' configuration (one ConfigMap, one compose anchor),
    # so it may be given what a service reads; a name no binary reads is still an error.
    if binary == "migrate" and any(name in n for n in names.values()):
        return True
    return name in names[binary] or name.startswith("OTEL_")


REQUIRED = {
    "auth": [{"AUTH_DATABASE_URL"}, {"AUTH_SIGNING_KEY_FILES", "AUTH_SIGNING_KEY_PEM"},
             {"REFRESH_TOKEN_SECRET"}],
    "messaging": [{"MESSAGING_DATABASE_URL"}, {"REPLICA_URLS", "MESSAGING_REPLICA_URL"},
                  {"AUTH_JWKS_URL"}, {"CONSISTENCY_TOKEN_SECRET"}],
    "migrate": [{"AUTH_DATABASE_URL"}, {"MESSAGING_DATABASE_URL"}],
}


def check_env(where, binary, env, helpers, names):
    """env: names given to the binary; helpers: names only used to build other values."""
    errors = []
    for n in sorted(env - helpers):
        if not allowed(binary, n, names):
            errors.append(f"{where}: {binary} is given {n}, which it does not read")
    for one_of in REQUIRED[binary]:
        if not one_of & env:
            errors.append(f"{where}: {binary} lacks {' or '.join(sorted(one_of))}")
    return errors


def binary_of(command):
    cmd = command if isinstance(command, list) else str(command).split()
    for b in ("auth", "messaging", "migrate"):
        if any(c.endswith("/" + b) or c == b for c in cmd):
            return b
    return None


def compose_env_errors(doc, names):
    errors = []
    for svc, spec in doc.get("services", {}).items():
        b = binary_of(spec.get("command", []))
        if not b:
            continue
        env = spec.get("environment", {}) or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        errors += check_env(f"docker-compose {svc}", b, set(env), set(), names)
    return errors


def k8s_env_errors(docs, names, production=True):
    errors = []
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            b = binary_of(c.get("command", []))
            if not b:
                continue
            env = {e["name"] for e in c.get("env", [])}
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                env |= set(configmaps.get(ref, {}))
            if production and "ALLOW_INSECURE_DEV_SECRETS" in env:
                errors.append(f"k8s {d['kind']} {d['metadata']['name']}: sets the "
                              "development secrets switch, which production never does")
            values = " ".join(e.get("value", "") for e in c.get("env", []))
            helpers = {n for n in env if f"$({n})" in values}
            errors += check_env(f"k8s {d['kind']} {d['metadata']['name']}", b, env, helpers, names)
    return errors


# --- what a fresh cluster needs beyond schemas (issue 17) -----------------------------------

CORE_API = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
CUSTOM_KINDS = {
    "Cluster": "postgresql.cnpg.io/v1", "ScheduledBackup": "postgresql.cnpg.io/v1",
    "ObjectStore": "barmancloud.cnpg.io/v1", "Gateway": "gateway.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1", "Issuer": "cert-manager.io/v1",
    "PodMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
}
# Connections a pod opens on the primary besides its pool (src/startup.rs): messaging's LISTEN
# connection (realtime/listener.rs), NOTIFY publisher (platform/bus.rs) and health monitor's
# own (platform/db/routing/monitor.rs); auth's readiness check's own (platform/db/mod.rs,
# monitor_pool).
DEDICATED = {"auth": 1, "messaging": 3}
# And on each replica URL besides its pool: messaging's health monitor's own connection.
DEDICATED_PER_REPLICA = {"auth": 0, "messaging": 1}
# Room kept on each instance for CloudNativePG's instance manager and exporter, backups and
# an operator's psql, beyond superuser_reserved_connections (3).
OPERATOR_ROOM = 20
PINNED = re.compile(r":v?[0-9]+\.[0-9]+[^:@]*(@sha256:[0-9a-f]{64})?$")


def is_core(doc):
    return doc["apiVersion"] in CORE_API


def pool_default(names_help):
    m = re.search(r"--db-pool-size <[A-Z_]+>.*?\[default: ([0-9]+)\]", names_help, re.S)
    return int(m.group(1)) if m else 16


def connection_budget(docs, pool_size_default):
    """(needed on the primary, needed on one replica, max_connections): every autoscaler at
    its maximum plus a rollout's surge, each pod with full pools, all replica connections on
    one replica."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    primary = replica = 0
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in DEDICATED:
            continue
        c = by_name[("Deployment", target)]["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for ef in c.get("envFrom", []):
            env.update(configmaps.get(ef.get("configMapRef", {}).get("name"), {}))
        env.update({e["name"]: e.get("value", "") for e in c.get("env", [])})
        pool = int(env.get("DB_POOL_SIZE", pool_size_default))
        replica_pool = int(env.get("DB_REPLICA_POOL_SIZE") or pool)
        # A rollout at the maximum runs maxSurge more pods (Kubernetes' default: 25 %, up).
        dep = by_name[("Deployment", target)]["spec"]
        surge = dep.get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%")
        extra = (-(-hpa["spec"]["maxReplicas"] * int(surge[:-1]) // 100)
                 if isinstance(surge, str) and surge.endswith("%") else int(surge))
        pods = hpa["spec"]["maxReplicas"] + extra
        primary += pods * (pool + DEDICATED[target])
        urls = len([u for u in env.get("REPLICA_URLS", "").split(",") if u])
        replica += pods * (replica_pool + DEDICATED_PER_REPLICA[target]) * urls
    cluster = next(d for d in docs if d["kind"] == "Cluster")
    params = cluster["spec"].get("postgresql", {}).get("parameters", {})
    reserved = int(params.get("superuser_reserved_connections", 3)) + OPERATOR_ROOM
    return primary + reserved, replica + reserved, int(params.get("max_connections", 100))


def manifest_errors(docs, names, production):
    """What schemas cannot see: references between objects, the autoscalers owning replica
    counts, the connection budget, pinned images, and production's TLS, client-address,
    durability and backup settings."""
    errors = []
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for d in docs:
        if not is_core(d) and CUSTOM_KINDS.get(d["kind"]) != d["apiVersion"]:
            errors.append(f"{d['kind']} {d['metadata']['name']}: unknown kind/apiVersion {d['apiVersion']}")
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        dep = objects.get(("Deployment", hpa["spec"]["scaleTargetRef"]["name"]))
        if dep is None:
            errors.append(f"HPA {hpa['metadata']['name']} scales a Deployment that does not exist")
        elif "replicas" in dep["spec"]:
            errors.append(f"Deployment {dep['metadata']['name']} sets replicas, which its HPA owns: "
                          "every apply would reset the autoscaled count")
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            if pod.get("automountServiceAccountToken") is not False:
                errors.append(f"{d['kind']} {d['metadata']['name']} mounts a service-account token")
            for c in pod["containers"]:
                if c["image"] not in ("switchboard", "switchboard-web") and not PINNED.search(c["image"]):
                    errors.append(f"{d['metadata']['name']}: image {c['image']} is not a pinned version")
    # Every database connection verifies the server against the Cluster's CA.
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        secrets = {v["name"]: v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            for e in c.get("env", []):
                if not e["name"].endswith(("DATABASE_URL", "REPLICA_URLS")):
                    continue
                for url in e.get("value", "").split(","):
                    query = urllib.parse.parse_qs(url.split("?", 1)[1] if "?" in url else "")
                    if query.get("sslmode") != ["verify-full"] or len(query.get("sslrootcert", [])) != 1:
                        errors.append(f"{d['metadata']['name']}: {e['name']} does not verify the server (sslmode=verify-full, sslrootcert)")
                        continue
                    folder = os.path.dirname(query["sslrootcert"][0])
                    if secrets.get(mounts.get(folder)) != "switchboard-db-ca":
                        errors.append(f"{d['metadata']['name']}: {root.group(1)} is not from the Secret switchboard-db-ca")
    cluster = objects.get(("Cluster", "switchboard-db"))
    if cluster and not PINNED.search(cluster["spec"].get("imageName", "")):
        errors.append(f"Cluster imageName {cluster['spec'].get('imageName')} is not a pinned version")
    if cluster and not cluster["spec"].get("resources", {}).get("requests"):
        errors.append("the Cluster's pods have no resource requests")
    primary, replica, limit = connection_budget(docs, pool_default(HELP_TEXT.get("messaging", "")))
    for where, need in (("primary", primary), ("a replica", replica)):
        if need > limit:
            errors.append(f"connection budget: {where} needs {need} connections at the "
                          f"autoscalers' maxima, max_connections is {limit}")
    # References between objects.
    for route in (d for d in docs if d["kind"] == "HTTPRoute"):
        for ref in route["spec"]["parentRefs"]:
            gw = objects.get(("Gateway", ref["name"]))
            if gw is None or ref.get("sectionName") not in {l["name"] for l in gw["spec"]["listeners"]}:
                errors.append(f"HTTPRoute {route['metadata']['name']}: no Gateway listener {ref}")
        for rule in route["spec"]["rules"]:
            for b in rule.get("backendRefs", []):
                svc = objects.get(("Service", b["name"]))
                if svc is None or b["port"] not in {p["port"] for p in svc["spec"]["ports"]}:
                    errors.append(f"HTTPRoute {route['metadata']['name']}: no Service port {b}")
    for gw in (d for d in docs if d["kind"] == "Gateway"):
        issuer = gw["metadata"].get("annotations", {}).get("cert-manager.io/issuer")
        if issuer and ("Issuer", issuer) not in objects:
            errors.append(f"Gateway {gw['metadata']['name']}: cert-manager Issuer {issuer} is missing")
    plugins = cluster["spec"].get("plugins", []) if cluster else []
    for p in plugins:
        store = p.get("parameters", {}).get("barmanObjectName")
        if store and ("ObjectStore", store) not in objects:
            errors.append(f"Cluster plugin {p['name']}: ObjectStore {store} is missing")
    for b in (d for d in docs if d["kind"] == "ScheduledBackup"):
        if ("Cluster", b["spec"]["cluster"]["name"]) not in objects:
            errors.append(f"ScheduledBackup {b['metadata']['name']}: no such Cluster")
        wanted = b["spec"].get("pluginConfiguration", {}).get("name")
        if b["spec"].get("method") == "plugin" and wanted not in {p["name"] for p in plugins}:
            errors.append(f"ScheduledBackup {b['metadata']['name']}: the Cluster has no plugin {wanted}")
    pods = [d["spec"]["template"] for d in docs if d["kind"] == "Deployment"]
    for pm in (d for d in docs if d["kind"] == "PodMonitor"):
        sel = pm["spec"]["selector"]["matchLabels"]
        if sel.get("cnpg.io/podRole") == "instance":
            if not any(d["kind"] == "Cluster" for d in docs):
                errors.append(f"PodMonitor {pm['metadata']['name']}: no Cluster")
            continue
        matched = [t for t in pods if sel.items() <= t["metadata"].get("labels", {}).items()]
        ports = {p.get("name") for t in matched for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for ep in pm["spec"]["podMetricsEndpoints"]:
            if not matched or ep["port"] not in ports:
                errors.append(f"PodMonitor {pm['metadata']['name']}: no selected pod has port {ep['port']}")
    if production:
        listeners = [l for d in docs if d["kind"] == "Gateway" for l in d["spec"]["listeners"]]
        if not any(l["protocol"] == "HTTPS" and l.get("tls", {}).get("certificateRefs") for l in listeners):
            errors.append("production: no HTTPS listener with a certificate (the refresh cookie is Secure)")
        hsts = [f for d in docs if d["kind"] == "HTTPRoute" for r in d["spec"]["rules"]
                for f in r.get("filters", []) if "Strict-Transport-Security" in json.dumps(f)]
        if not hsts:
            errors.append("production: no route sets Strict-Transport-Security")
        nginx = objects[("Deployment", "nginx")]["spec"]["template"]["spec"]["containers"][0]
        real_ip = {e["name"]: e.get("value", "") for e in nginx.get("env", [])}.get("NGINX_REAL_IP_FROM", "")
        proxies = re.findall(r"set_real_ip_from ([0-9a-fA-F.:/]+);", real_ip)
        if not proxies or re.sub(r"set_real_ip_from [0-9a-fA-F.:/]+;", "", real_ip).strip():
            errors.append(f"production: NGINX_REAL_IP_FROM is not only set_real_ip_from lines: {real_ip!r}")
        for p in proxies:
            try:
                net = ipaddress.ip_network(p, strict=False)
            except ValueError:
                errors.append(f"production: NGINX_REAL_IP_FROM: {p} is not an address or range")
                continue
            if net.prefixlen < 8 or (net.version == 6 and net.prefixlen < 32):
                errors.append(f"production: NGINX_REAL_IP_FROM trusts {p}: every client could pick its address")
        # Trace-trusted clients must not include those proxies: a request a proxy sends with
        # no X-Forwarded-For counts as the proxy's own, and its traceparent would be believed.
        trace_trusted = {e["name"]: e.get("value", "") for e in nginx.get("env", [])}.get("NGINX_TRACE_TRUSTED", "")
        for t in re.findall(r"([0-9a-fA-F.:/]+)\s+1;", trace_trusted):
            try:
                tnet = ipaddress.ip_network(t, strict=False)
            except ValueError:
                errors.append(f"production: NGINX_TRACE_TRUSTED: {t} is not an address or range")
                continue
            for p in proxies:
                try:
                    if tnet.overlaps(ipaddress.ip_network(p, strict=False)):
                        errors.append(f"production: NGINX_TRACE_TRUSTED {t} overlaps the proxy range {p}")
                except ValueError:
                    pass
        if not cluster["spec"].get("postgresql", {}).get("synchronous"):
            errors.append("production: replication is asynchronous (a failover can lose acknowledged writes)")
        if not any(p.get("isWALArchiver") for p in plugins):
            errors.append("production: no WAL archiver (no point-in-time recovery)")
        if not any(d["kind"] == "ScheduledBackup" for d in docs):
            errors.append("production: no ScheduledBackup")
    return errors


# --- validators ------------------------------------------------------------------------

def compose_config(path):
    r = run([tool("docker-compose"), "--env-file", os.path.join(REPO, ".env.example"),
             "-f", path, "config", "-q"], cwd=REPO)
    return r.returncode == 0, r.stderr


def kube_validate(path):
    r = run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, path])
    bad = r.returncode != 0 or "ERROR" in r.stdout or "ERROR" in r.stderr
    return not bad, r.stdout + r.stderr


def strict(schema):
    """Rejects unknown properties wherever the schema lists them (as kubeconform -strict)."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def cluster_validate(cluster, workdir):
    schema_path = os.path.join(workdir, "cluster.strict.schema.json")
    if not os.path.exists(schema_path):
        schema = strict(json.load(open(SCHEMA)))
        # metadata is validated by the API server, not the CRD schema.
        schema["properties"]["metadata"].pop("additionalProperties", None)
        json.dump(schema, open(schema_path, "w"))
    doc = os.path.join(workdir, "cluster.json")
    json.dump(cluster, open(doc, "w"))
    r = run([tool("check-jsonschema"), "--schemafile", schema_path, doc])
    return r.returncode == 0, r.stdout + r.stderr


def nginx_test(template_text, workdir, name):
    conf_dir = os.path.join(workdir, name)
    os.makedirs(os.path.join(conf_dir, "tmp"), exist_ok=True)
    values = {
        "NGINX_PORT": "18999",
        "AUTH_SERVERS": "server 127.0.0.1:8081;",
        "MESSAGING_SERVERS": "server 127.0.0.1:8082; server 127.0.0.1:8083;",
        "NGINX_RUNTIME": conf_dir,
        "NGINX_ACCESS_LOG": "/dev/stdout",
        "NGINX_USER": "",
        "WEB_ROOT": os.path.join(conf_dir, "web"),
        "NGINX_WORKERS": "1",
        "NGINX_WORKER_CONNECTIONS": "1024",
        "NGINX_TLS": "",
        "NGINX_HSTS": "max-age=63072000; includeSubDomains",
        "NGINX_REAL_IP_FROM": "set_real_ip_from 10.0.0.0/8; set_real_ip_from 192.0.2.1;",
        "NGINX_EDGE_SCRIPT": os.path.join(REPO, "nginx", "edge_trace.js"),
        "NGINX_EDGE_SPANS": "on",
        "NGINX_EDGE_SPAN_LOG": os.path.join(conf_dir, "edge-spans.jsonl"),
        "NGINX_TRACE_TRUSTED": "172.16.0.0/12 1; 192.0.2.7 1;",
        "NGINX_TRACE_RATIO": "0.1",
    }
    def render(text):
        return re.sub(r"\$\{([A-Z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)
    open(os.path.join(conf_dir, "switchboard.conf"), "w").write(render(template_text))
    main = open(os.path.join(REPO, "nginx", "nginx.local.conf.template")).read()
    open(os.path.join(conf_dir, "nginx.conf"), "w").write(render(main))
    r = run([tool("nginx"), "-t", "-q", "-p", conf_dir, "-c", os.path.join(conf_dir, "nginx.conf")])
    return r.returncode == 0, r.stderr


def promtool_check(path):
    r = run([tool("promtool"), "check", "rules", path])
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def dashboard_queries(dashboard):
    """Every PromQL query of a Grafana dashboard (panels, rows' panels, query variables),
    with Grafana's variables replaced by what they stand for, so promtool can parse them."""
    exprs = []
    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))
    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query" and isinstance(q, dict):
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q["query"])
            exprs.append(m.group(1) if m else q["query"])
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*"}
    out = []
    for e in exprs:
        for k, v in subst.items():
            e = e.replace(k, v)
        out.append(e)
    return out


def monitoring_errors(work):
    """The alert rules (promtool check and unit tests), the dashboards' queries (parsed by
    promtool as recording rules), and the Kubernetes copies of both."""
    errors = []
    rules = os.path.join(REPO, "ops", "prometheus", "alerts.yaml")
    good, out = promtool_check(rules)
    if not good:
        errors.append(f"promtool check rules: {out}")
    r = run([tool("promtool"), "test", "rules", "alerts.test.yaml"],
            cwd=os.path.join(REPO, "ops", "prometheus"))
    if r.returncode != 0:
        errors.append(f"promtool test rules: {(r.stdout + r.stderr).strip()}")
    copy_doc = yaml.safe_load(open(os.path.join(REPO, "k8s", "components", "observability",
                                                "prometheus-rules.yaml")))
    if copy_doc["spec"]["groups"] != yaml.safe_load(open(rules))["groups"]:
        errors.append("k8s/components/observability/prometheus-rules.yaml: groups differ "
                      "from ops/prometheus/alerts.yaml")
    for name in sorted(os.listdir(os.path.join(REPO, "ops", "grafana"))):
        path = os.path.join(REPO, "ops", "grafana", name)
        dashboard = json.load(open(path))
        queries = dashboard_queries(dashboard)
        if not queries:
            errors.append(f"ops/grafana/{name}: no queries")
            continue
        as_rules = os.path.join(work, f"dashboard-{name}.rules.yaml")
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query:{i}", "expr": q} for i, q in enumerate(queries)]}]},
            open(as_rules, "w"))
        good, out = promtool_check(as_rules)
        if not good:
            errors.append(f"ops/grafana/{name}: a query does not parse: {out}")
        copy_path = os.path.join(REPO, "k8s", "components", "observability", "dashboards", name)
        if not os.path.exists(copy_path) or open(copy_path).read() != open(path).read():
            errors.append(f"k8s/components/observability/dashboards/{name} differs from ops/grafana/{name}")
    return errors


def edge_span_errors(where, nginx_env, nginx_mounts, shipper_command, shipper_mounts):
    """The edge-span shipper reads the file NGINX writes: its first argument is NGINX's
    NGINX_EDGE_SPAN_LOG, in a folder both containers mount from the same volume, and it
    posts to the collector's OTLP/HTTP traces endpoint."""
    errors = []
    if nginx_env.get("NGINX_EDGE_SPANS") != "on":
        return errors
    path = nginx_env.get("NGINX_EDGE_SPAN_LOG", "")
    cmd = list(shipper_command or [])
    if len(cmd) < 4 or not cmd[1].endswith("edge_spans.py"):
        return [f"{where}: edge spans are on but no container runs edge_spans.py FILE URL"]
    if cmd[2] != path:
        errors.append(f"{where}: the shipper reads {cmd[2]}, NGINX writes {path}")
    folder = os.path.dirname(path)
    if nginx_mounts.get(folder) is None or nginx_mounts.get(folder) != shipper_mounts.get(folder):
        errors.append(f"{where}: NGINX and the shipper do not share a volume at {folder}")
    if not re.fullmatch(r"http://otel-collector:4318/v1/traces", cmd[3]):
        errors.append(f"{where}: the shipper posts to {cmd[3]}, not the collector's /v1/traces")
    return errors


def compose_edge_errors(doc):
    services = doc["services"]
    mounts = lambda svc: {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])
                          if isinstance(v, str) and v.count(":") >= 1}
    nginx = services["nginx"]
    shipper = next((s for s in services.values()
                    if any("edge_spans.py" in str(c) for c in s.get("command", []) or [])), {})
    return edge_span_errors("compose", {k: str(v) for k, v in nginx.get("environment", {}).items()},
                            mounts(nginx), shipper.get("command"), mounts(shipper))


def k8s_edge_errors(docs, overlay):
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "nginx")
    containers = dep["spec"]["template"]["spec"]["containers"]
    mounts = lambda c: {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    nginx = next(c for c in containers if c["name"] == "nginx")
    shipper = next((c for c in containers if any("edge_spans.py" in a for a in c.get("command", []))), {})
    return edge_span_errors(f"k8s {overlay}", {e["name"]: e.get("value", "") for e in nginx.get("env", [])},
                            mounts(nginx), shipper.get("command"), mounts(shipper))


def openapi_validate(path):
    r = run([tool("openapi-spec-validator"), path])
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def kustomize(overlay):
    r = run([tool("kubectl"), "kustomize", os.path.join(REPO, "k8s", "overlays", overlay)])
    if r.returncode != 0:
        fail(f"kubectl kustomize {overlay}: {r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def main():
    if not os.path.exists(SCHEMA):
        fail(f"the CloudNativePG Cluster schema is missing: {SCHEMA} (shared/ beside the repository, or SHARED_DIR)")
    names = read_names()
    work = tempfile.mkdtemp(prefix="validate-deploy-")

    # docker-compose
    compose = os.path.join(REPO, "docker-compose.yml")
    good, out = compose_config(compose)
    if not good:
        fail(f"docker-compose config: {out}")
    doc = yaml.safe_load(run([tool("docker-compose"), "--env-file", os.path.join(REPO, ".env.example"),
                              "-f", compose, "config"], cwd=REPO).stdout)
    errors = compose_env_errors(doc, names)
    ok("docker-compose.yml renders")

    # kubernetes
    for overlay in ("dev", "production"):
        docs = kustomize(overlay)
        path = os.path.join(work, f"{overlay}.yaml")
        yaml.safe_dump_all([d for d in docs if is_core(d)], open(path, "w"))
        good, out = kube_validate(path)
        if not good:
            fail(f"{overlay}: kubernetes-validate: {out}")
        clusters = [d for d in docs if d["kind"] == "Cluster"]
        if len(clusters) != 1:
            fail(f"{overlay}: expected one CloudNativePG Cluster")
        good, out = cluster_validate(clusters[0], work)
        if not good:
            fail(f"{overlay}: Cluster against the CRD schema: {out}")
        errors += k8s_env_errors(docs, names, production=overlay == "production")
        errors += [f"{overlay}: {e}" for e in manifest_errors(docs, names, production=overlay == "production")]
        need_primary, need_replica, limit = connection_budget(docs, pool_default(HELP_TEXT.get("messaging", "")))
        ok(f"k8s overlay {overlay}: {len(docs)} objects valid (Kubernetes {K8S_VERSION}, strict; "
           f"{sum(not is_core(d) for d in docs)} custom resources by reference); connections at the "
           f"autoscalers' maxima: primary {need_primary}, one replica {need_replica}, of max_connections {limit}")
    good, out = kube_validate(os.path.join(REPO, "k8s", "secrets.example.yaml"))
    if not good:
        fail(f"k8s/secrets.example.yaml: {out}")

    # nginx: one template for the local stack, compose and Kubernetes
    template = open(os.path.join(REPO, "nginx", "switchboard.conf.template")).read()
    if open(os.path.join(REPO, "k8s", "base", "nginx", "switchboard.conf.template")).read() != template:
        fail("k8s/base/nginx/switchboard.conf.template differs from nginx/switchboard.conf.template")
    # The audit schema: one script for the local stack, compose and CloudNativePG's bootstrap.
    if open(os.path.join(REPO, "k8s", "base", "audit.sql")).read() \
            != open(os.path.join(REPO, "postgres", "audit.sql")).read():
        fail("k8s/base/audit.sql differs from postgres/audit.sql")
    good, out = nginx_test(template, work, "nginx-good")
    if not good:
        fail(f"nginx -t: {out}")
    ok("nginx config passes nginx -t")
    # Every ${VAR} of the template must be set where the image renders it (compose, k8s):
    # the official image's envsubst leaves an unset one in place and nginx then fails.
    wanted = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    given = {"compose": set(doc["services"]["nginx"].get("environment", {}))}
    for overlay in ("dev", "production"):
        dep = next(d for d in kustomize(overlay) if d["kind"] == "Deployment" and d["metadata"]["name"] == "nginx")
        given[f"k8s {overlay}"] = {e["name"] for c in dep["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    for where, names_given in given.items():
        if wanted - names_given:
            errors.append(f"{where}: nginx template needs {sorted(wanted - names_given)}")

    # The edge-span shipper reads what NGINX writes (compose and each overlay).
    edge = compose_edge_errors(doc)
    for overlay in ("dev", "production"):
        edge += k8s_edge_errors(kustomize(overlay), overlay)
    if edge:
        fail("edge spans: " + "; ".join(edge))
    ok("edge spans: NGINX's span file is read by the shipper on a shared volume and posted to the collector")

    # Alert rules and dashboards (ops/), and their Kubernetes copies.
    monitoring = monitoring_errors(work)
    if monitoring:
        fail("monitoring: " + "; ".join(monitoring))
    ok("alert rules pass promtool check and their unit tests; dashboard queries parse; "
       "the Kubernetes copies match")

    # The API documents the services serve (committed copies, equal to the code's by a unit
    # test), checked by an independent validator: code generators need them valid.
    for name in ("auth", "messaging"):
        good, out = openapi_validate(os.path.join(REPO, "openapi", f"{name}.json"))
        if not good:
            fail(f"openapi/{name}.json: {out}")
    ok("openapi/auth.json and openapi/messaging.json pass openapi-spec-validator")

    if errors:
        fail("environment names:\n  " + "\n  ".join(errors))
    ok("every env name given to auth, messaging and migrate is one its code reads")

    # Each validator must catch a deliberate error.
    broken = copy.deepcopy(docs)
    dep = next(d for d in broken if d["kind"] == "Deployment")
    dep["spec"]["replicaz"] = 2
    path = os.path.join(work, "broken.yaml")
    yaml.safe_dump_all([d for d in broken if is_core(d)], open(path, "w"))
    if kube_validate(path)[0]:
        fail("kubernetes-validate accepted a Deployment with an unknown field")
    bad_cluster = copy.deepcopy(clusters[0])
    bad_cluster["spec"]["instancez"] = 3
    if cluster_validate(bad_cluster, work)[0]:
        fail("the Cluster schema check accepted an unknown field")
    bad_cluster = copy.deepcopy(clusters[0])
    bad_cluster["spec"]["instances"] = "three"
    if cluster_validate(bad_cluster, work)[0]:
        fail("the Cluster schema check accepted a string for instances")
    bad_compose = os.path.join(work, "compose.broken.yml")
    bc = yaml.safe_load(open(compose))
    bc["services"]["auth"]["depends_on"]["migrate"]["condition"] = "whenever"
    yaml.safe_dump(bc, open(bad_compose, "w"))
    if compose_config(bad_compose)[0]:
        fail("docker-compose config accepted an invalid depends_on condition")
    if nginx_test(template.replace("proxy_pass", "proxy_passs", 1), work, "nginx-bad")[0]:
        fail("nginx -t accepted an unknown directive")
    bc = yaml.safe_load(open(compose))
    bc["services"]["auth"]["environment"]["AUTH_DATABSE_URL"] = "x"
    if not compose_env_errors(bc, names):
        fail("the env-name check accepted a misspelled variable")
    dev_switch = copy.deepcopy(docs)
    dep = next(d for d in dev_switch if d["kind"] == "Deployment" and d["metadata"]["name"] == "messaging")
    dep["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
        {"name": "ALLOW_INSECURE_DEV_SECRETS", "value": "true"})
    if not k8s_env_errors(dev_switch, names):
        fail("the env check accepted the development secrets switch in a manifest")
    api = json.load(open(os.path.join(REPO, "openapi", "messaging.json")))
    ops = [op for item in api["paths"].values() for op in item.values()
           if isinstance(op, dict) and "operationId" in op]
    ops[1]["operationId"] = ops[0]["operationId"]
    dup = os.path.join(work, "openapi.duplicate-id.json")
    json.dump(api, open(dup, "w"))
    if openapi_validate(dup)[0]:
        fail("openapi-spec-validator accepted a duplicate operationId")
    if open(os.path.join(REPO, "k8s", "components", "observability", "collector.yaml")).read() \
            != open(os.path.join(REPO, "otel", "collector.yaml")).read():
        fail("k8s/components/observability/collector.yaml differs from otel/collector.yaml")
    for what, mutate in (
        ("a Deployment with replicas under an HPA",
         lambda ds: next(d for d in ds if d["kind"] == "Deployment")["spec"].update(replicas=2)),
        ("the messaging autoscaler past the connection budget",
         lambda ds: next(d for d in ds if d["kind"] == "HorizontalPodAutoscaler"
                         and d["metadata"]["name"] == "messaging")["spec"].update(maxReplicas=40)),
        ("messaging's replica pools past one replica's connection budget",
         lambda ds: next(d for d in ds if d["kind"] == "Deployment" and d["metadata"]["name"] == "messaging")
         ["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
             {"name": "DB_REPLICA_POOL_SIZE", "value": "40"})),
        ("a route to a Service port that does not exist",
         lambda ds: next(d for d in ds if d["metadata"]["name"] == "switchboard-https")["spec"]["rules"][0]["backendRefs"][0].update(port=8080)),
        ("a floating database image",
         lambda ds: next(d for d in ds if d["kind"] == "Cluster")["spec"].update(imageName="ghcr.io/cloudnative-pg/postgresql:15")),
        ("a plaintext database URL",
         lambda ds: [e.update(value=e["value"].split("?")[0]) for d in ds if d["kind"] == "Deployment"
                     for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
                     if e["name"] == "MESSAGING_DATABASE_URL"]),
        ("a database URL that turns verification off again",
         lambda ds: [e.update(value=e["value"] + "&sslmode=disable") for d in ds if d["kind"] == "Deployment"
                     for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
                     if e["name"] == "AUTH_DATABASE_URL"]),
        ("asynchronous replication in production",
         lambda ds: next(d for d in ds if d["kind"] == "Cluster")["spec"]["postgresql"].pop("synchronous")),
        ("a trace-trusted range overlapping the proxies'",
         lambda ds: [e.update(value="10.1.0.0/16 1;") for d in ds
                     if d["kind"] == "Deployment" and d["metadata"]["name"] == "nginx"
                     for e in d["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "NGINX_TRACE_TRUSTED"]),
        ("NGINX believing every client's X-Forwarded-For",
         lambda ds: [e.update(value="set_real_ip_from 0.0.0.0/0;") for d in ds
                     if d["kind"] == "Deployment" and d["metadata"]["name"] == "nginx"
                     for e in d["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "NGINX_REAL_IP_FROM"]),
    ):
        broken = copy.deepcopy(docs)
        mutate(broken)
        if not manifest_errors(broken, names, production=True):
            fail(f"the manifest checks accepted {what}")
    bc = yaml.safe_load(open(compose))
    bc["services"]["nginx"]["environment"]["NGINX_EDGE_SPAN_LOG"] = "/var/log/other/edge.jsonl"
    if not compose_edge_errors(bc):
        fail("the edge-span check accepted a shipper reading another file")
    bad_rules = os.path.join(work, "alerts.broken.yaml")
    open(bad_rules, "w").write(open(os.path.join(REPO, "ops", "prometheus", "alerts.yaml")).read()
                               .replace("> 2", "> > 2", 1))
    if promtool_check(bad_rules)[0]:
        fail("promtool check rules accepted a rule that does not parse")
    ok("every validator rejects a deliberately broken input")
    print("validate-deploy: 0 errors")


if __name__ == "__main__":
    main()
