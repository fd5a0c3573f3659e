#!/usr/bin/env python3
"""Ships the local stack's edge spans to an OTLP/HTTP endpoint.

NGINX (nginx/edge_trace.js) writes each sampled request's edge span to a file in the
OpenTelemetry file exporter's format: one OTLP/JSON ExportTraceServiceRequest per line. This
follows that file (from its end when it starts, like `tail -f`, starting over when the file
is replaced or truncated) and posts what arrives to the traces endpoint as OTLP/HTTP JSON
(`Content-Type: application/json`, which every OTLP/HTTP receiver accepts), at most 512
spans a request, twice a second. The local stack runs it beside NGINX; the compose
file and the Kubernetes manifests run it as a sidecar sharing the span file's volume. An
endpoint that does not answer is retried every 2 s at most (logged when the error changes
and once a minute); at most 10 000 spans wait, the oldest dropped first (counted in its log).

The file stays small: once everything in it is read and it has grown past 8 MiB, it is
truncated. NGINX appends with O_APPEND, so its next line lands at the new end; a line NGINX
writes between the last read and the truncation is lost (a rare lost span, never a broken
line).

    edge_spans.py FILE TRACES_URL      # e.g. http://127.0.0.1:4318/v1/traces
"""
import json
import os
import signal
import sys
import time
import urllib.request

BATCH = 512
BACKLOG = 10_000
TRUNCATE_AT = 8 * 1024 * 1024


def post(url, resource_spans):
    body = {"resourceSpans": resource_spans}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as res:
        res.read()


def main():
    path, url = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pending, partial, dropped, backoff = [], "", 0, 0.5
    last_error, last_logged = None, 0.0
    f, inode = None, None
    # What the file holds when this starts was for an earlier run; a file made later is read
    # from its start.
    skip_existing = os.path.exists(path)
    while True:
        try:
            st = os.stat(path)
            if f is None or st.st_ino != inode or st.st_size < f.tell():
                first = f is None
                if f:
                    f.close()
                f, inode, partial = open(path, encoding="utf-8"), st.st_ino, ""
                if first and skip_existing:
                    f.seek(0, os.SEEK_END)
            chunk = f.read()
        except FileNotFoundError:
            chunk = ""
        except (OSError, UnicodeDecodeError) as e:
            # Unreadable for now (permissions, a torn write): log, start the file over.
            print(f"edge spans: reading {path}: {e}", flush=True)
            f, chunk, partial = None, "", ""
        if chunk:
            *lines, partial = (partial + chunk).split("\n")
            for line in filter(str.strip, lines):
                try:
                    pending.extend(json.loads(line)["resourceSpans"])
                except (ValueError, KeyError, TypeError):
                    print(f"edge spans: a line is not OTLP/JSON: {line[:200]!r}", flush=True)
            if len(pending) > BACKLOG:
                dropped += len(pending) - BACKLOG
                pending = pending[-BACKLOG:]
                print(f"edge spans: {dropped} dropped so far (endpoint behind)", flush=True)
        while pending:
            batch = pending[:BATCH]
            try:
                post(url, batch)
            except Exception as e:  # noqa: BLE001 — any failure of one post is retried
                if str(e) != last_error or time.monotonic() - last_logged > 60:
                    print(f"edge spans: {url}: {e}; retrying", flush=True)
                    last_error, last_logged = str(e), time.monotonic()
                time.sleep(backoff)
                backoff = min(backoff * 2, 2)
                break
            del pending[:len(batch)]
            backoff, last_error = 0.5, None
        if f is not None and not partial and f.tell() > TRUNCATE_AT:
            try:
                if os.stat(path).st_size == f.tell():
                    os.truncate(path, 0)
                    f.seek(0)
            except OSError as e:
                print(f"edge spans: truncating {path}: {e}", flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
