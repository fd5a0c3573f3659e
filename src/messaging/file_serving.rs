//! Sending a stored file (an attachment or an avatar): `Content-Disposition: attachment`
//! (RFC 6266), `X-Content-Type-Options: nosniff`, a sandboxing CSP, an `ETag`, and single
//! byte ranges (RFC 9110 §14) read from just the chunks they cover.

use crate::platform::db::{Conn, Traced};
use actix_web::{
    http::{
        header::{self, ContentDisposition, DispositionParam, DispositionType, ExtendedValue},
        StatusCode,
    },
    HttpRequest, HttpResponse,
};
use uuid::Uuid;

use crate::platform::error::ApiError;

/// What a download needs to know about a stored file.
pub(super) struct Stored {
    id: Uuid,
    filename: String,
    content_type: String,
    size: u64,
    sha256: String,
    chunk_size: u64,
}

impl Stored {
    pub(super) fn from_row(r: &tokio_postgres::Row) -> Self {
        Self {
            id: r.get("id"),
            filename: r.get("filename"),
            content_type: r.get("content_type"),
            size: r.get::<_, i64>("size").max(0) as u64,
            sha256: r.get("sha256"),
            chunk_size: r.get::<_, i32>("chunk_size").max(1) as u64,
        }
    }
}

pub(super) const STORED_COLUMNS: &str = "a.id, a.filename, a.content_type, a.size, \
     encode(a.sha256, 'hex') AS sha256, a.chunk_size";

pub(super) fn range_of(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Finds a stored file with `sql` (selecting [`STORED_COLUMNS`] from `a`, with `keys` as
/// `$1`, `$2`, …) on a replica (read-your-writes for `token`) and serves it, honouring
/// `range`.
///
/// Errors: 404 with `not_found` when `sql` finds nothing; as [`serve`].
pub(super) async fn serve_found(
    db: &crate::platform::db::Routing,
    token: Option<crate::platform::db::Lsn>,
    sql: String,
    keys: Vec<Uuid>,
    range: Option<String>,
    not_found: &'static str,
) -> Result<HttpResponse, ApiError> {
    db.reading::<_, ApiError, _>(token, move |conn| {
        let (sql, keys, range) = (sql.clone(), keys.clone(), range.clone());
        Box::pin(async move {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = keys
                .iter()
                .map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let row = conn
                .query_opt_t(&sql, &params)
                .await?
                .ok_or_else(|| ApiError::NotFound(not_found.into()))?;
            serve(conn, &Stored::from_row(&row), range.as_deref()).await
        })
    })
    .await
}

pub(super) async fn serve(
    conn: &Conn,
    file: &Stored,
    range: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let mut status = StatusCode::OK;
    let (mut start, mut end) = (0u64, file.size.saturating_sub(1));
    if let Some(r) = range {
        let parsed = http_range_header::parse_range_header(r).and_then(|p| p.validate(file.size));
        match parsed {
            Ok(ranges) if ranges.len() == 1 && file.size > 0 => {
                status = StatusCode::PARTIAL_CONTENT;
                (start, end) = (*ranges[0].start(), *ranges[0].end());
            }
            // Several ranges: RFC 9110 §14.2 lets a server answer with the whole file.
            Ok(ranges) if ranges.len() > 1 => {}
            _ => {
                return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                    .insert_header((header::CONTENT_RANGE, format!("bytes */{}", file.size)))
                    .content_type(crate::platform::error::PROBLEM_JSON)
                    .json(serde_json::json!({
                        "type": "tag:switchboard,2026:problem/range-not-satisfiable",
                        "title": "Range Not Satisfiable",
                        "status": 416,
                        "detail": format!("the file has {} bytes", file.size),
                        "trace_id": crate::platform::context::current_trace_id(),
                    })));
            }
        }
    }
    let body: Vec<u8> = if file.size == 0 {
        Vec::new()
    } else {
        let (first, last) = (start / file.chunk_size, end / file.chunk_size);
        let rows = conn
            .query_t(
                "SELECT data FROM messaging.attachment_chunks
                 WHERE attachment_id = $1 AND n BETWEEN $2 AND $3 ORDER BY n",
                &[&file.id, &(first as i32), &(last as i32)],
            )
            .await?;
        let mut joined = Vec::with_capacity((end - start + 1) as usize);
        for r in &rows {
            joined.extend_from_slice(r.get::<_, &[u8]>(0));
        }
        let offset = (start - first * file.chunk_size) as usize;
        let len = (end - start + 1) as usize;
        // The chunks come from one statement (one snapshot) and a delete removes them all in
        // one transaction, so they are either all there or the file was deleted after its
        // metadata was read: then it is gone, a 404 like any deleted file.
        joined
            .get(offset..offset + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ApiError::NotFound("attachment not found".into()))?
    };
    let disposition = ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(file.filename.replace(|c: char| !c.is_ascii(), "_")),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: header::Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: file.filename.clone().into_bytes(),
            }),
        ],
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, file.content_type.clone()))
        .insert_header(disposition)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, format!("\"{}\"", file.sha256)))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"));
    if status == StatusCode::PARTIAL_CONTENT {
        res.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{}", file.size),
        ));
    }
    Ok(res.body(body))
}
