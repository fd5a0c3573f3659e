//! The error answers of every operation: the problem+json schema (RFC 9457) and the
//! [`Problems`] modifier that adds, with an example each, 401 where a credential is required,
//! 400/413/415/422 where there is a body or query, 404 where there is a path id, 503
//! everywhere, and each operation's own (403, 409, 413, 416, 429) from [`OWN_ERRORS`].

use utoipa::{
    openapi::{
        path::{Operation, Parameter, ParameterIn},
        Content, OpenApi as Doc, RefOr, Response,
    },
    Modify, ToSchema,
};

/// An error answer (RFC 9457 problem details), as every error of both services has it.
#[derive(serde::Serialize, ToSchema)]
#[schema(example = json!({
    "type": "tag:switchboard,2026:problem/not-found",
    "title": "Not Found",
    "status": 404,
    "detail": "conversation not found",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"
}))]
pub struct Problem {
    /// A tag URI (RFC 4151) naming the problem kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status text.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// On 422: field name → messages.
    pub errors: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// The W3C trace id of the request: quote it when reporting a problem.
    pub trace_id: Option<String>,
}

/// `(method, path, [(status, when)])`: error answers an operation has besides the common ones.
pub type OwnErrors = (&'static str, &'static str, &'static [(u16, &'static str)]);

/// Error answers an operation has besides the common ones.
pub const OWN_ERRORS: &[OwnErrors] = &[
    (
        "post",
        "/auth/register",
        &[
            (409, "the username or email is taken"),
            (429, "too many sign-ups from this address (NGINX)"),
        ],
    ),
    (
        "post",
        "/auth/login",
        &[
            (
                401,
                "unknown login, wrong password or deleted account (the same answer for each)",
            ),
            (
                429,
                "too many password attempts for this account (or login name), or sign-ins from this address",
            ),
        ],
    ),
    (
        "post",
        "/auth/login/mfa",
        &[
            (
                401,
                "a wrong, stale or replayed code, a used recovery code, or a challenge that is unknown, expired, used or past its wrong codes",
            ),
            (
                429,
                "too many second-factor codes for this account, or sign-ins from this address (NGINX)",
            ),
        ],
    ),
    (
        "post",
        "/auth/login",
        &[(403, "the address is not verified and REQUIRE_VERIFIED_EMAIL is on")],
    ),
    (
        "post",
        "/auth/email/verify",
        &[(409, "another account took the new address meanwhile")],
    ),
    (
        "post",
        "/auth/email/verification",
        &[
            (401, "neither signed in nor an address given"),
            (409, "the address is verified already"),
            (429, "past ACCOUNT_MAIL_PER_HOUR, or too many requests from this address (NGINX)"),
        ],
    ),
    (
        "post",
        "/auth/password/forgot",
        &[(429, "too many requests from this address (NGINX)")],
    ),
    (
        "post",
        "/auth/me/totp",
        &[
            (403, "the password is wrong"),
            (409, "two-factor sign-in is on already"),
            (429, "too many wrong passwords for this account"),
        ],
    ),
    (
        "post",
        "/auth/me/totp/confirm",
        &[(429, "too many second-factor codes for this account")],
    ),
    (
        "delete",
        "/auth/me/totp",
        &[
            (403, "a wrong, stale or replayed code"),
            (404, "two-factor sign-in is not on"),
            (429, "too many second-factor codes for this account"),
        ],
    ),
    (
        "post",
        "/auth/me/passkeys/options",
        &[
            (403, "the password is wrong, or two-factor sign-in is on and the code is missing or wrong"),
            (409, "the account holds 20 passkeys"),
            (429, "too many wrong passwords for this account"),
        ],
    ),
    (
        "post",
        "/auth/me/passkeys",
        &[
            (400, "the ceremony is unknown, expired, used or another user's, or the answer does not verify"),
            (409, "that passkey is registered already"),
        ],
    ),
    ("delete", "/auth/me/passkeys/{id}", &[(404, "not one of the caller's passkeys")]),
    (
        "post",
        "/auth/login/passkey/options",
        &[(429, "too many requests from this address (NGINX)")],
    ),
    (
        "post",
        "/auth/login/passkey",
        &[
            (400, "the ceremony is unknown, expired or used"),
            (401, "the passkey is unknown or removed, its answer does not verify, or the account is deleted"),
            (403, "the address is not verified and REQUIRE_VERIFIED_EMAIL is on"),
            (429, "too many requests from this address (NGINX)"),
        ],
    ),
    (
        "post",
        "/api/push/subscriptions",
        &[
            (404, "Web Push is not configured on this server"),
            (409, "the account holds 10 push subscriptions"),
        ],
    ),
    ("get", "/api/push/key", &[(404, "Web Push is not configured on this server")]),
    (
        "post",
        "/api/notifications/unsubscribe",
        &[(400, "the unsubscribe link does not verify")],
    ),
    (
        "get",
        "/api/notifications/unsubscribe",
        &[(400, "the unsubscribe link does not verify")],
    ),
    (
        "post",
        "/auth/refresh",
        &[(403, "missing `X-CSRF: 1` or an Origin not allowed")],
    ),
    (
        "post",
        "/auth/logout",
        &[(403, "missing `X-CSRF: 1` or an Origin not allowed")],
    ),
    (
        "delete",
        "/auth/me",
        &[
            (403, "wrong password"),
            (429, "too many password attempts for this account"),
        ],
    ),
    (
        "patch",
        "/auth/me",
        &[
            (403, "a new email with the wrong current_password"),
            (429, "too many password attempts for this account"),
        ],
    ),
    (
        "post",
        "/auth/me/password",
        &[
            (403, "wrong current password"),
            (429, "too many password attempts for this account"),
        ],
    ),
    (
        "patch",
        "/api/conversations/{id}",
        &[(403, "not an admin of this group")],
    ),
    (
        "delete",
        "/api/conversations/{id}/participants/{user_id}",
        &[(403, "not an admin of this group")],
    ),
    (
        "patch",
        "/api/conversations/{id}/participants/{user_id}",
        &[(403, "not an admin of this group")],
    ),
    (
        "post",
        "/api/conversations/{id}/messages",
        &[
            (403, "a read-only (blocked) direct conversation"),
            (409, "the client_id is being used by a concurrent send"),
            (429, "past the send rate limit"),
            (
                503,
                "the instance holds as many sends as admission control allows now, or the \
                 sender holds half of that already, or the database is unavailable; retry \
                 after Retry-After seconds",
            ),
        ],
    ),
    (
        "post",
        "/api/conversations/{id}/attachments",
        &[
            (403, "a read-only (blocked) direct conversation"),
            (413, "past the upload size limit or the stored-bytes quota"),
            (429, "past the send rate limit or the upload quota"),
        ],
    ),
    (
        "put",
        "/api/users/me/avatar",
        &[
            (413, "past the avatar size limit or the stored-bytes quota"),
            (429, "past the upload quota"),
        ],
    ),
    (
        "post",
        "/api/ws-ticket",
        &[(429, "past WS_TICKETS_PER_MINUTE")],
    ),
    (
        "patch",
        "/api/messages/{id}",
        &[
            (
                403,
                "not the sender, past the edit window, or a read-only (blocked) conversation",
            ),
            (409, "the message is deleted"),
        ],
    ),
    (
        "delete",
        "/api/messages/{id}",
        &[(403, "neither the sender nor a group admin")],
    ),
    (
        "put",
        "/api/messages/{id}/reactions/{emoji}",
        &[
            (403, "a former participant, or a read-only (blocked) conversation"),
            (409, "the message is deleted, or has 20 other emoji"),
            (422, "not one Unicode emoji"),
        ],
    ),
    (
        "delete",
        "/api/messages/{id}/reactions/{emoji}",
        &[
            (403, "a former participant, or a read-only (blocked) conversation"),
            (409, "the message is deleted"),
            (422, "not one Unicode emoji"),
        ],
    ),
    (
        "put",
        "/api/messages/{id}/pin",
        &[
            (403, "a group member who is not an admin, a former participant, or a read-only (blocked) conversation"),
            (409, "the message is deleted, or the conversation has 50 pins"),
        ],
    ),
    (
        "delete",
        "/api/messages/{id}/pin",
        &[
            (403, "a group member who is not an admin, a former participant, or a read-only (blocked) conversation"),
            (409, "the message is deleted"),
        ],
    ),
    (
        "post",
        "/api/messages/{id}/forward",
        &[
            (403, "a read-only (blocked) target conversation"),
            (409, "the message is deleted, or the client_id is being used by a concurrent forward"),
            (429, "past the send rate limit"),
        ],
    ),
    (
        "post",
        "/api/conversations/{id}/typing",
        &[
            (403, "a read-only (blocked) direct conversation"),
            (429, "past 60 typing announcements a minute"),
        ],
    ),
    (
        "put",
        "/api/conversations/{id}/avatar",
        &[
            (403, "a member who is not an admin"),
            (413, "past the avatar size limit or the stored-bytes quota"),
            (429, "past the upload quota"),
        ],
    ),
    (
        "delete",
        "/api/conversations/{id}/avatar",
        &[
            (403, "a member who is not an admin"),
            (422, "a direct conversation"),
        ],
    ),
    (
        "get",
        "/api/conversations/{id}/pins",
        &[(403, "a former participant")],
    ),
    (
        "put",
        "/api/blocks/{user_id}",
        &[
            (409, "past 1000 blocks"),
            (422, "blocking oneself"),
        ],
    ),
    (
        "delete",
        "/api/blocks/{user_id}",
        &[(422, "unblocking oneself")],
    ),
    (
        "post",
        "/api/conversations",
        &[(403, "a direct conversation with, or a group of, someone who blocks the caller (or whom the caller blocks, for a new direct one)")],
    ),
    (
        "post",
        "/api/conversations/{id}/participants",
        &[(403, "not an admin, or adding someone who blocks the caller")],
    ),
    (
        "get",
        "/api/attachments/{id}",
        &[(416, "the range is not satisfiable")],
    ),
    (
        "get",
        "/api/search",
        &[(404, "a conversation_id the caller never was in")],
    ),
];

/// Adds the problem+json error answers to every operation (see the module docs).
pub(super) struct Problems;

fn problem(status: u16, description: &str) -> RefOr<Response> {
    let (slug, title) = match status {
        400 => ("bad-request", "Bad Request"),
        401 => ("unauthorized", "Unauthorized"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not Found"),
        409 => ("conflict", "Conflict"),
        413 => ("payload-too-large", "Payload Too Large"),
        415 => ("unsupported-media-type", "Unsupported Media Type"),
        416 => ("range-not-satisfiable", "Range Not Satisfiable"),
        422 => ("validation", "Unprocessable Entity"),
        429 => ("rate-limited", "Too Many Requests"),
        _ => ("unavailable", "Service Unavailable"),
    };
    let mut example = serde_json::json!({
        "type": format!("tag:switchboard,2026:problem/{slug}"),
        "title": title,
        "status": status,
        "detail": description,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    });
    if status == 422 {
        example["errors"] = serde_json::json!({"username": ["must be 3 to 32 characters"]});
    }
    let content = Content::builder()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "Problem",
        ))))
        .example(Some(example))
        .build();
    let mut response = Response::builder()
        .description(description)
        .content(crate::platform::error::PROBLEM_JSON, content);
    if status == 429 || status == 503 {
        response = response.header(
            "Retry-After",
            utoipa::openapi::header::Header::new(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer),
            ),
        );
    }
    RefOr::T(response.build())
}

fn has(op: &Operation, place: ParameterIn) -> bool {
    op.parameters
        .iter()
        .flatten()
        .any(|p: &Parameter| p.parameter_in == place)
}

impl Modify for Problems {
    fn modify(&self, doc: &mut Doc) {
        let global_security = doc.security.clone().unwrap_or_default();
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op.as_mut() else { continue };
                let secured = match &op.security {
                    Some(s) => !s.is_empty() && s.iter().all(|r| !requirement_is_empty(r)),
                    None => !global_security.is_empty(),
                };
                let body = op.request_body.is_some();
                let multipart = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("multipart/form-data"));
                let query = has(op, ParameterIn::Query);
                let path_id = has(op, ParameterIn::Path);
                let mut extra: Vec<(u16, String)> = Vec::new();
                if secured {
                    extra.push((401, "no valid credential: a missing, malformed or expired access token (or refresh cookie)".into()));
                }
                if body {
                    extra.push((400, "malformed body".into()));
                    extra.push((413, "the body is larger than allowed".into()));
                    extra.push((
                        415,
                        if multipart {
                            "expected multipart/form-data"
                        } else {
                            "expected Content-Type: application/json"
                        }
                        .into(),
                    ));
                    extra.push((422, "invalid fields: `errors` names each".into()));
                }
                if query {
                    extra.push((400, "an invalid query parameter".into()));
                }
                if path_id {
                    extra.push((404, "no such object, or not one the caller may see".into()));
                }
                for (m, p, own) in OWN_ERRORS {
                    if *m == method && *p == path.as_str() {
                        extra.extend(own.iter().map(|(s, d)| (*s, (*d).to_owned())));
                    }
                }
                if !path.ends_with("/readyz") {
                    extra.push((
                        503,
                        "the database is unavailable; retry after Retry-After seconds".into(),
                    ));
                }
                for (status, description) in extra {
                    op_response(op, status, &description);
                }
            }
        }
    }
}

/// `{}` in a `security` list: the operation may be called without credentials.
fn requirement_is_empty(r: &utoipa::openapi::security::SecurityRequirement) -> bool {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.is_empty()))
        .unwrap_or(false)
}

fn op_response(op: &mut Operation, status: u16, description: &str) {
    let key = status.to_string();
    op.responses
        .responses
        .entry(key)
        .or_insert_with(|| problem(status, description));
}
