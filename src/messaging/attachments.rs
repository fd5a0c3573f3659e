//! Attachments (and the upload pieces avatars share), stored in PostgreSQL (so they
//! replicate) as 256 KiB chunks; sending a stored file is [`super::file_serving`], avatars
//! [`super::avatars`].
//!
//! Uploads are `multipart/form-data` (RFC 7578) with a `file` part and, for messages, an
//! optional `caption`. The size limit is enforced while the body streams in: an upload over
//! it is refused with 413 as soon as it crosses the limit, never read to the end. The type
//! is sniffed from the bytes (the client's `Content-Type` is not trusted) and the SHA-256 is
//! kept. Downloads answer with `Content-Disposition: attachment` (RFC 6266),
//! `X-Content-Type-Options: nosniff`, a sandboxing CSP, and single byte ranges
//! (RFC 9110 §14) read from just the chunks they need.

use crate::platform::db::Traced;
use actix_multipart::Multipart;
use actix_web::{
    http::StatusCode,
    web::{self, Path},
    HttpRequest, HttpResponse,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    append::{append_for, NewMessage},
    budget::{self, Budget},
    caller::Caller,
    consistency::Consistency,
    domain::MessageContent,
    domain::MessageKind,
    file_serving::{range_of, serve_found, STORED_COLUMNS},
    messages::{answer, check_send_rate},
    protocol::MessageEvent,
    publish::publish_message_to,
    visibility::current_scope,
    State,
};
use crate::platform::error::ApiError;

/// Bytes per stored chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Longest caption part, in bytes, before it is refused.
const CAPTION_BYTES: usize = 64 * 1024;
/// Image types accepted as avatars.
pub const AVATAR_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// A fully received upload.
pub struct Upload {
    pub filename: String,
    /// Sniffed from the content.
    pub content_type: String,
    pub size: u64,
    pub sha256: Vec<u8>,
    pub chunks: Vec<Vec<u8>>,
    pub caption: Option<String>,
}

fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    use actix_multipart::MultipartError as E;
    match e {
        E::ContentTypeMissing | E::ContentTypeParse | E::ContentTypeIncompatible => {
            ApiError::UnsupportedMediaType("expected multipart/form-data".into())
        }
        other => ApiError::BadRequest(format!("unreadable multipart body: {other}")),
    }
}

/// A safe download name: the last path segment, no control characters or quotes, at most
/// 255 characters; `file` when nothing is left.
pub fn clean_filename(raw: Option<&str>) -> String {
    let base = raw.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(255)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

/// The media type of `head` (the first bytes of a file) by its magic numbers; valid UTF-8
/// text is `text/plain`; anything else `application/octet-stream`.
pub fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => !head.is_empty(),
        // A multi-byte character cut at the end of the sniffed prefix is still text.
        Err(e) => e.error_len().is_none(),
    };
    if text && !head.contains(&0) {
        "text/plain; charset=utf-8".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// Reads a multipart body: one `file` part (required) of at most `limit` bytes, and a
/// `caption` part when `with_caption`.
///
/// Errors: 413 as soon as the file passes `limit`; 415 for a body that is not multipart;
/// 400 for a malformed one; 422 for a missing file, a repeated or unknown part, or a caption
/// that is not UTF-8 or too long.
pub async fn read_upload(
    mut body: Multipart,
    limit: u64,
    with_caption: bool,
) -> Result<Upload, ApiError> {
    let mut file: Option<Upload> = None;
    let mut caption: Option<String> = None;
    while let Some(field) = body.next().await {
        let mut field = field.map_err(multipart_error)?;
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" if file.is_none() => {
                let filename =
                    clean_filename(field.content_disposition().and_then(|cd| cd.get_filename()));
                let mut hasher = Sha256::new();
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                let mut size: u64 = 0;
                while let Some(bytes) = field.next().await {
                    let bytes = bytes.map_err(multipart_error)?;
                    size += bytes.len() as u64;
                    if size > limit {
                        return Err(ApiError::PayloadTooLarge(format!(
                            "the file is larger than {limit} bytes"
                        )));
                    }
                    hasher.update(&bytes);
                    let mut rest: &[u8] = &bytes;
                    while !rest.is_empty() {
                        if chunks.last().is_none_or(|c| c.len() == CHUNK_BYTES) {
                            chunks.push(Vec::with_capacity(CHUNK_BYTES.min(rest.len())));
                        }
                        if let Some(last) = chunks.last_mut() {
                            let take = (CHUNK_BYTES - last.len()).min(rest.len());
                            last.extend_from_slice(&rest[..take]);
                            rest = &rest[take..];
                        }
                    }
                }
                let head = chunks
                    .first()
                    .map(|c| &c[..c.len().min(8192)])
                    .unwrap_or(&[]);
                file = Some(Upload {
                    filename,
                    content_type: sniff(head),
                    size,
                    sha256: hasher.finalize().to_vec(),
                    chunks,
                    caption: None,
                });
            }
            "caption" if with_caption && caption.is_none() => {
                let mut bytes = Vec::new();
                while let Some(b) = field.next().await {
                    let b = b.map_err(multipart_error)?;
                    if bytes.len() + b.len() > CAPTION_BYTES {
                        return Err(ApiError::invalid_field("caption", "is too long"));
                    }
                    bytes.extend_from_slice(&b);
                }
                let text = String::from_utf8(bytes)
                    .map_err(|_| ApiError::invalid_field("caption", "must be UTF-8 text"))?;
                caption = Some(text);
            }
            other => {
                let expected = if with_caption {
                    "file and caption"
                } else {
                    "file"
                };
                return Err(ApiError::invalid_field(
                    if other.is_empty() { "part" } else { other },
                    format!("unexpected or repeated part; expected {expected}"),
                ));
            }
        }
    }
    let mut upload = file.ok_or_else(|| ApiError::invalid_field("file", "is required"))?;
    upload.caption = caption.filter(|c| !c.trim().is_empty());
    Ok(upload)
}

/// Stores an upload; returns the attachment id.
///
/// Errors: the inserts fail.
pub async fn store(
    tx: &impl Traced,
    conversation_id: Option<Uuid>,
    uploader: Uuid,
    upload: &Upload,
) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    tx.execute_t(
        "INSERT INTO messaging.attachments
             (id, conversation_id, uploader_id, filename, content_type, size, sha256, chunk_size)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &conversation_id,
            &uploader,
            &upload.filename,
            &upload.content_type,
            &(upload.size as i64),
            &upload.sha256,
            &(CHUNK_BYTES as i32),
        ],
    )
    .await?;
    for (n, chunk) in upload.chunks.iter().enumerate() {
        tx.execute_t(
            "INSERT INTO messaging.attachment_chunks (attachment_id, n, data) VALUES ($1, $2, $3)",
            &[&id, &(n as i32), chunk],
        )
        .await?;
    }
    Ok(id)
}

/// Charges an upload of `size` bytes to the uploader's quotas (issue 14): the bytes they keep
/// stored (`UPLOAD_QUOTA_TOTAL_BYTES`) and the bytes per window (`UPLOAD_QUOTA_WINDOW_BYTES`
/// per `UPLOAD_QUOTA_WINDOW_SECS`, see [`super::budget`]). Called with 0 before a body is
/// read (refusing at once a user already over either), then with the real size in the
/// transaction that stores it.
///
/// Errors: 413 past the stored total; 429 with `Retry-After` past the window's bytes.
pub async fn charge_upload(
    state: &State,
    db: &impl Traced,
    user_id: Uuid,
    size: u64,
) -> Result<(), ApiError> {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let cfg = &state.cfg;
    // First the window's counter: its row stays locked until the transaction ends, so the
    // user's concurrent uploads take turns and each sums what the others stored.
    budget::spend(
        db,
        user_id,
        Budget::UploadBytes,
        size,
        cfg.upload_quota_window_bytes,
        cfg.upload_quota_window,
        || {
            format!(
                "upload quota reached: at most {} bytes per {} s",
                cfg.upload_quota_window_bytes,
                cfg.upload_quota_window.as_secs()
            )
        },
    )
    .await?;
    let stored: i64 = db
        .query_one_t(
            // A file forwarded to others stays while their copies name it, but stops counting
            // for its uploader once they deleted their own messages of it.
            "SELECT coalesce(sum(a.size), 0)::bigint FROM messaging.attachments a
             WHERE a.uploader_id = $1
               AND (EXISTS (SELECT 1 FROM messaging.messages m
                            WHERE m.attachment_id = a.id AND m.sender_id = $1)
                    OR NOT EXISTS (SELECT 1 FROM messaging.messages m
                                   WHERE m.attachment_id = a.id))",
            &[&user_id],
        )
        .await?
        .get(0);
    let total = cfg.upload_quota_total_bytes;
    if stored.saturating_add(size) > total {
        return Err(ApiError::PayloadTooLarge(format!(
            "storage quota reached: at most {total} bytes of files per user ({stored} stored); \
             delete some first"
        )));
    }
    Ok(())
}

/// `POST /api/conversations/{id}/attachments` (multipart: `file`, `caption?`): sends a `file`
/// message carrying the upload. 201 with the message. 404 if the caller is not a
/// participant; 413 past `ATTACHMENT_MAX_BYTES` or the stored-bytes quota; 415/400/422 for a
/// bad body; 429 past the send rate limit or the upload quota ([`charge_upload`]).
#[utoipa::path(post, path = "/api/conversations/{id}/attachments", tag = "attachments", params(("id" = Uuid, Path, description = "conversation id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Sent: a `file` message carrying the upload.", body = crate::messaging::model::Message)))]
pub async fn upload(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Multipart,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    {
        // Check before reading the body, and hold no connection while it streams in.
        let conn = state.db.primary().await?;
        current_scope(&conn, conversation_id, caller.user_id)
            .await?
            .writable()?;
        charge_upload(&state, &conn, caller.user_id, 0).await?;
        check_send_rate(&state, &conn, caller.user_id).await?;
    }
    let upload = read_upload(body, state.cfg.attachment_max_bytes, true).await?;
    if let Some(c) = &upload.caption {
        MessageContent::parse(c.clone(), state.cfg.message_max_chars)
            .map_err(|m| ApiError::invalid("caption", m))?;
    }
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    // Membership may have ended while the file streamed in.
    current_scope(&tx, conversation_id, caller.user_id)
        .await?
        .writable()?;
    charge_upload(&state, &tx, caller.user_id, upload.size).await?;
    let attachment_id = store(&tx, Some(conversation_id), caller.user_id, &upload).await?;
    let (message, recipients) = append_for(
        &tx,
        conversation_id,
        NewMessage {
            kind: MessageKind::File,
            sender_id: Some(caller.user_id),
            content: upload.caption.as_deref(),
            attachment_id: Some(attachment_id),
            ..NewMessage::default()
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(attachment.id = %attachment_id, bytes = upload.size, "attachment stored");
    publish_message_to(&state, MessageEvent::Created, &message, recipients);
    answer(&state, &conn, &message, StatusCode::CREATED).await
}

/// `GET /api/attachments/{id}`: the file, to participants who can see its message. `Range:
/// bytes=…` with one range answers 206 with `Content-Range`; an unsatisfiable range 416.
/// 404 for an unknown attachment, a deleted message, or a caller who cannot see it. Served
/// by the replica (read-your-writes).
#[utoipa::path(get, path = "/api/attachments/{id}", tag = "attachments", params(("id" = Uuid, Path, description = "attachment id"),
        ("Range" = Option<String>, Header, description = "one byte range, RFC 9110 §14.2")),
    responses((status = 200, description = "The file (`Content-Disposition: attachment`), with its sniffed type.", content_type = "*/*", body = Vec<u8>),
        (status = 206, description = "The requested range, with `Content-Range`.", content_type = "*/*", body = Vec<u8>)))]
pub async fn download(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Any message of it the caller can see will do: a forwarded file is shared by reference
    // between the original and its copies.
    serve_found(
        &state.db,
        consistency.0,
        format!(
            "SELECT {STORED_COLUMNS} FROM messaging.attachments a
             WHERE a.id = $1 AND EXISTS (
                 SELECT 1 FROM messaging.messages m
                 JOIN messaging.participants p
                   ON p.conversation_id = m.conversation_id AND p.user_id = $2
                  AND m.seq >= p.visible_from_seq
                  AND (p.visible_to_seq IS NULL OR m.seq <= p.visible_to_seq)
                 WHERE m.attachment_id = a.id)"
        ),
        vec![id.into_inner(), caller.user_id],
        range_of(&req),
        "attachment not found",
    )
    .await
}

/// A multipart upload: the `file` part (its bytes; the type is sniffed from them, the
/// filename kept) and, for a message, an optional `caption`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    caption: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_cleaned() {
        assert_eq!(clean_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            clean_filename(Some("C:\\x\\report \"q\".pdf")),
            "report q.pdf"
        );
        assert_eq!(clean_filename(Some(".hidden")), "hidden");
        assert_eq!(clean_filename(None), "file");
        assert_eq!(clean_filename(Some("a\u{0}b\nc.txt")), "abc.txt");
    }

    #[test]
    fn types_are_sniffed_from_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff("héllo".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(sniff(&"é".as_bytes()[..1]), "text/plain; charset=utf-8");
        assert_eq!(sniff(&[0, 159, 146, 150]), "application/octet-stream");
        assert_eq!(sniff(b""), "application/octet-stream");
    }
}
