"""A throwaway PostgreSQL for the deployment replays (scripts/replay_bootstrap.py,
scripts/replay_compose.py): the server binaries of the machine (PostgreSQL 15 from Debian),
run as the postgres OS user when we are root, as postgres/setup.sh does."""
import os
import shutil
import subprocess
import sys
import tempfile

SUPERUSER = "postgres"


def fail(msg):
    print(f"validate-deploy: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def pg_bin(name):
    """The command running PostgreSQL's `name` (as the postgres OS user under root, which
    PostgreSQL refuses to run as, like postgres/setup.sh)."""
    path = shutil.which(name)
    if not path:
        for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True):
            candidate = os.path.join("/usr/lib/postgresql", d, "bin", name)
            if os.path.exists(candidate):
                path = candidate
                break
    if not path:
        fail(f"{name} not found (PostgreSQL server binaries)")
    return ["runuser", "-u", "postgres", "--", path] if os.getuid() == 0 else [path]


class Scratch:
    """A throwaway PostgreSQL: initdb, started on 127.0.0.1:`port` with `parameters`
    (`-c name=value`), password (SCRAM) authentication over TCP for databases and
    replication, trust on its own socket folder; `stop` ends it and removes its files."""

    def __init__(self, port, parameters=None):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="scratch-pg-")
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        r = run(pg_bin("initdb") + ["-D", self.data, "-U", SUPERUSER, "--auth-local=trust",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"])
        if r.returncode != 0:
            fail(f"initdb: {r.stderr}")
        hba = ("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
               "host replication all 127.0.0.1/32 scram-sha-256\n")
        run(pg_bin("sh") + ["-c", f"printf '%s' '{hba}' > {self.data}/pg_hba.conf"])
        opts = ["-c listen_addresses=127.0.0.1", f"-c port={port}",
                f"-c unix_socket_directories={self.dir}"]
        opts += [f"-c {k}={v}" for k, v in (parameters or {}).items()]
        r = run(pg_bin("pg_ctl") + ["-D", self.data, "-l", os.path.join(self.dir, "log"),
                 "-w", "-t", "60", "-o", " ".join(opts), "start"])
        if r.returncode != 0:
            log = open(os.path.join(self.dir, "log")).read()[-2000:]
            self.stop()
            fail(f"PostgreSQL did not start with parameters {parameters}: {r.stderr}\n{log}")

    def sql(self, db, statement, user=SUPERUSER):
        return run(pg_bin("psql") + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.dir,
                    "-p", str(self.port), "-U", user, "-d", db, "-c", statement])

    def stop(self):
        run(pg_bin("pg_ctl") + ["-D", self.data, "-m", "immediate", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
