//! The WebSocket protocol as an AsyncAPI 3.0 document, its schemas generated from the types
//! the server sends and reads (`crate::messaging::protocol`).

use utoipa::OpenApi;

use crate::messaging;

/// The WebSocket protocol's schemas, gathered by utoipa for the AsyncAPI document.
#[derive(OpenApi)]
#[openapi(components(schemas(
    messaging::protocol::ServerFrame,
    messaging::protocol::Event,
    messaging::protocol::ClientFrame,
    messaging::model::Message,
)))]
struct WebSocketSchemas;

/// The WebSocket protocol as an AsyncAPI 3.0 document (the frames' schemas come from the
/// same types the server uses).
pub fn asyncapi() -> serde_json::Value {
    let schemas = WebSocketSchemas::openapi()
        .components
        .map(|c| serde_json::to_value(c.schemas).unwrap_or_default())
        .unwrap_or_default();
    serde_json::json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchboard WebSocket",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One socket per client carries the events of all the user's conversations. Get a single-use ticket with POST /api/ws-ticket (30 s), then open GET /ws?ticket=…; the first frame is `hello`. After a reconnect send `resume` with the last seq held per conversation: every stored change after it is replayed, then `resumed`, then live delivery goes on with no gap and no duplicate. Send `auth` with each refreshed access token: the socket lives only until the token behind it expires. Close codes: 1001 going away or heartbeat timeout (reconnect and resume), 1002 protocol error, 1008 slow consumer or too many frames, 1009 frame too large, 1011 hub stopped, 4001 session ended (sign out), 4003 access token expired (refresh, reconnect, resume)."
        },
        "servers": {
            "nginx": {"host": "localhost:8080", "protocol": "ws", "description": "the local stack (wss behind TLS in production)"}
        },
        "channels": {
            "socket": {
                "address": "/ws?ticket={ticket}",
                "parameters": {"ticket": {"description": "from POST /api/ws-ticket; single use, 30 s"}},
                "messages": {
                    "serverFrame": {"name": "ServerFrame", "contentType": "application/json", "payload": {"$ref": "#/components/schemas/ServerFrame"}},
                    "clientFrame": {"name": "ClientFrame", "contentType": "application/json", "payload": {"$ref": "#/components/schemas/ClientFrame"}}
                }
            }
        },
        "operations": {
            "receiveEvents": {"action": "receive", "channel": {"$ref": "#/channels/socket"}, "summary": "Server frames: hello, message.*, read, typing, presence, participant.*, conversation.updated, session.revoked, resumed, resume.reload, notification, pong, auth.ok, error", "messages": [{"$ref": "#/channels/socket/messages/serverFrame"}]},
            "sendFrames": {"action": "send", "channel": {"$ref": "#/channels/socket"}, "summary": "Client frames: ping, typing, read, resume, auth", "messages": [{"$ref": "#/channels/socket/messages/clientFrame"}]}
        },
        "components": {"schemas": schemas}
    })
}
