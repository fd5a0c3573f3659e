// The edge span: NGINX's part of each request's trace (W3C Trace Context, OpenTelemetry).
//
// Loaded by switchboard.conf.template (js_import); written for njs 0.7 (Debian 12's) and
// later. Per request, once:
//   * The trace context. A `traceparent` (W3C Trace Context §3.2) from a trusted client
//     ($edge_trace_trusted = 1, from NGINX_TRACE_TRUSTED) is continued: same trace id, its
//     span as parent, its sampled flag. From anyone else it is not believed: the edge starts
//     a new trace and keeps the client's context only as a span link, so a client can neither
//     join our traces nor force sampling. A new trace is sampled with probability
//     $edge_trace_ratio (0–1).
//   * The upstream gets `traceparent: 00-<trace id>-<edge span id>-<flags>` ($edge_traceparent),
//     so the service's server span is the edge span's child.
//   * When spans are exported ($edge_spans = on) and the trace is sampled, $edge_span is the
//     span as one line of the OpenTelemetry file exporter's format (an OTLP/JSON
//     ExportTraceServiceRequest per line: specification/protocol/file-exporter.md), written
//     by an access_log. Attributes follow the stable HTTP server semantic conventions; the
//     request id and NGINX location are under `switchboard.`.
//   * With export off the edge adds no span of its own: it passes a trusted client's context
//     on unchanged and drops an untrusted one (the service then starts the trace), so no
//     trace names a parent that was never exported.

function hex(bytes) {
    const b = new Uint8Array(bytes);
    crypto.getRandomValues(b);
    let s = '';
    for (let i = 0; i < bytes; i++) {
        s += (b[i] < 16 ? '0' : '') + b[i].toString(16);
    }
    return s;
}

// A valid traceparent's parts, or null (version ff, bad lengths, all-zero ids).
function parse(value) {
    const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/.exec(
        (value || '').trim().toLowerCase());
    if (!m || m[1] === 'ff' || (m[1] === '00' && m[5])) {
        return null;
    }
    if (/^0+$/.test(m[2]) || /^0+$/.test(m[3])) {
        return null;
    }
    // Passed on in the normalized form (lower case, no padding), which every parser takes.
    return {
        trace: m[2],
        parent: m[3],
        sampled: (parseInt(m[4], 16) & 1) === 1,
        header: m[1] + '-' + m[2] + '-' + m[3] + '-' + m[4],
    };
}

// Decides the context once per request and keeps it in js_var variables.
function context(r) {
    const v = r.variables;
    if (v.edge_decided === '1') {
        return;
    }
    v.edge_decided = '1';
    const incoming = parse(r.headersIn.traceparent);
    const trusted = v.edge_trace_trusted === '1';
    const exporting = v.edge_spans === 'on';
    if (!exporting) {
        const kept = incoming && trusted;
        v.edge_trace_id = kept ? incoming.trace : '';
        v.edge_upstream = kept ? incoming.header : '';
        v.edge_flag = '0';
        return;
    }
    let sampled;
    if (incoming && trusted) {
        v.edge_trace_id = incoming.trace;
        v.edge_parent_id = incoming.parent;
        sampled = incoming.sampled;
    } else {
        v.edge_trace_id = hex(16);
        v.edge_parent_id = '';
        if (incoming) {
            v.edge_link = incoming.trace + '-' + incoming.parent;
        }
        const ratio = parseFloat(v.edge_trace_ratio);
        sampled = Math.random() < (isNaN(ratio) ? 1 : ratio);
    }
    v.edge_span_id = hex(8);
    v.edge_flag = sampled ? '1' : '0';
    v.edge_upstream = '00-' + v.edge_trace_id + '-' + v.edge_span_id + (sampled ? '-01' : '-00');
}

// $edge_traceparent: what the upstream gets as `traceparent` (empty: none).
function traceparent(r) {
    context(r);
    return r.variables.edge_upstream;
}

// $edge_trace: the request's trace id for the access log (empty where the service starts
// the trace: spans off and no trusted context came in).
function traceId(r) {
    context(r);
    return r.variables.edge_trace_id;
}

// $edge_sampled: "1" when this request's edge span is written.
function sampled(r) {
    context(r);
    return r.variables.edge_flag;
}

function attr(key, value) {
    return typeof value === 'number'
        ? { key: key, value: { intValue: String(value) } }
        : { key: key, value: { stringValue: String(value) } };
}

// Milliseconds since the epoch as OTLP's decimal nanoseconds.
function nanos(ms) {
    return String(ms) + '000000';
}

// $edge_span: the span as one line (see above); read at log time, when status and
// durations are known.
function span(r) {
    context(r);
    const v = r.variables;
    const end = Math.round(parseFloat(v.msec) * 1000);
    const start = end - Math.round(parseFloat(v.request_time) * 1000);
    const status = parseInt(v.status, 10) || 0;
    const route = v.edge_route || '';
    const attributes = [
        attr('http.request.method', r.method),
        // The path as the client sent it, never the query (a WebSocket ticket travels there).
        attr('url.path', (v.request_uri || '').split('?')[0]),
        attr('url.scheme', v.scheme),
        attr('http.response.status_code', status),
        attr('network.protocol.name', 'http'),
        attr('network.protocol.version', r.httpVersion),
        attr('server.address', v.host),
        attr('server.port', parseInt(v.server_port, 10) || 0),
        attr('client.address', v.remote_addr),
        attr('switchboard.request_id', v.request_id),
    ];
    if (route) {
        attributes.push(attr('switchboard.nginx.location', route));
    }
    if (v.http_user_agent) {
        attributes.push(attr('user_agent.original', v.http_user_agent));
    }
    if (v.upstream_addr) {
        attributes.push(attr('switchboard.nginx.upstream_address', v.upstream_addr));
    }
    const s = {
        traceId: v.edge_trace_id,
        spanId: v.edge_span_id,
        name: r.method + (route ? ' ' + route : ''),
        kind: 2,
        startTimeUnixNano: nanos(start),
        endTimeUnixNano: nanos(end),
        attributes: attributes,
        // Server spans are errors for 5xx only (HTTP semantic conventions, status).
        status: status >= 500 ? { code: 2 } : {},
    };
    if (v.edge_parent_id) {
        s.parentSpanId = v.edge_parent_id;
    }
    if (v.edge_link) {
        const l = v.edge_link.split('-');
        s.links = [{ traceId: l[0], spanId: l[1] }];
    }
    return JSON.stringify({
        resourceSpans: [{
            resource: {
                attributes: [
                    attr('service.name', 'switchboard-nginx'),
                    attr('service.instance.id', v.hostname),
                ],
            },
            scopeSpans: [{ scope: { name: 'switchboard.edge' }, spans: [s] }],
        }],
    });
}

export default { traceparent, traceId, sampled, span };
