//! The admin API's handlers: each typed route performed, through the date's Durable Object (typed
//! requests and replies), the engine, or R2 directly for reading archives.
//!
//! Not routing: [`crate::api::routes`] turns a request into a [`Route`]; this module only performs
//! it and writes the response.

use futures_util::stream;
use worker::{Env, Method, Request, RequestInit, Response};

use crate::api::protocol::{reply_status, DoReply, DoRequest, DoResult};
use crate::api::routes::{self, ArchiveFormat, EventsQuery, Route};
use crate::api::{authorize, ApiError, ErrorKind};
use crate::core::config::Config;
use crate::core::date::Day;
use crate::core::policy;
use crate::core::status::ArchiveObject;
use crate::engine::events::{EventReader, EventsError, MAX_BUFFER_BYTES};
use crate::engine::fleet;
use crate::ports::Host;

use super::adapters::{WorkerHost, D1, R2};
use super::{binding, config, json, now_ms, var_text};

/// The operator console: one self-contained page (see `console.html`).
const CONSOLE: &str = include_str!("console.html");

pub(super) async fn handle(req: Request, env: &Env) -> Result<Response, ApiError> {
    let url = req
        .url()
        .map_err(|_| ApiError::new(ErrorKind::BadParameter, "unparseable URL"))?;
    let path = url.path().to_string();
    if path.starts_with("/admin") && !routes::is_public(&path) {
        let token = env
            .secret("ADMIN_TOKEN")
            .map(|s| s.to_string())
            .ok()
            .or_else(|| var_text(env, "ADMIN_TOKEN"));
        let header = req.headers().get("authorization").ok().flatten();
        authorize(token.as_deref(), header.as_deref())?;
    }
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let method = req.method();
    let parsed = routes::Request {
        method: method.as_ref(),
        path: &path,
        query: &query,
        query_len: url.query().map_or(0, str::len),
    };
    let now = now_ms();
    let today = Day::from_unix_ms(now);
    let cfg = match config(env) {
        Ok(cfg) => cfg,
        Err(e) => return misconfigured(e, routes::route(&parsed, today, now, &Config::default()), now),
    };
    let route = routes::route(&parsed, today, now, &cfg)?;
    dispatch(route, req, env, &cfg, now).await
}

/// A var that does not parse: the console still loads (its calls then show the error) and
/// health answers 503 in its own shape, naming the var; every other route is the error itself.
fn misconfigured(error: ApiError, route: Result<Route, ApiError>, now: i64) -> Result<Response, ApiError> {
    match route {
        Ok(Route::Console) => Response::from_html(CONSOLE).map_err(ApiError::unavailable),
        Ok(Route::Health) => json(503, &policy::misconfigured(&error.message, now)),
        _ => Err(error),
    }
}

/// Answers one parsed route: the fleet's reads here, a date's commands in its Durable Object.
async fn dispatch(route: Route, mut req: Request, env: &Env, cfg: &Config, now: i64) -> Result<Response, ApiError> {
    match route {
        Route::Console => Response::from_html(CONSOLE).map_err(ApiError::unavailable),
        Route::Dates => json(
            200,
            &fleet::listing(&db(env)?, cfg, now)
                .await
                .map_err(ApiError::unavailable)?,
        ),
        Route::Health => {
            let h = match db(env) {
                Ok(db) => fleet::health(&db, cfg, now).await.map_err(ApiError::unavailable)?,
                Err(e) => policy::misconfigured(&e.message, now),
            };
            json(if h.ok { 200 } else { 503 }, &h)
        }
        Route::Archive {
            day,
            generation,
            format,
        } => archive(env, day, generation, format).await,
        Route::Events(q) => events(env, q).await,
        Route::Status(day) => relay(env, DoRequest::Status { date: day.to_string() }).await,
        Route::Naive(day) => json(200, &super::hooks::naive(env, &day.to_string()).await?),
        Route::TestUpload { key, upload_id, op } => json(200, &super::hooks::upload(env, &key, &upload_id, op).await?),
        Route::TestList { prefix } => json(200, &super::hooks::list(env, &prefix).await?),
        Route::TestSql => {
            let sql = req.text().await.map_err(ApiError::unavailable)?;
            json(200, &super::hooks::sql(env, &sql).await?)
        }
        Route::Command(day, command) => {
            relay(
                env,
                DoRequest::Command {
                    date: day.to_string(),
                    command,
                },
            )
            .await
        }
    }
}

fn db(env: &Env) -> Result<D1, ApiError> {
    Ok(D1(env.d1("DB").map_err(binding("DB"))?))
}

/// Sends `request` to its date's Durable Object and returns the typed reply.
pub(super) async fn ask(env: &Env, request: &DoRequest) -> Result<DoReply, ApiError> {
    let ns = env.durable_object("DATE_ARCHIVER").map_err(binding("DATE_ARCHIVER"))?;
    let stub = ns
        .id_from_name(request.date())
        .and_then(|id| id.get_stub())
        .map_err(ApiError::unavailable)?;
    let body = serde_json::to_string(request).map_err(ApiError::unavailable)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let req = Request::new_with_init("https://date-archiver/", &init).map_err(ApiError::unavailable)?;
    let mut resp = stub.fetch_with_request(req).await.map_err(ApiError::unavailable)?;
    let result: DoResult = resp.json().await.map_err(ApiError::unavailable)?;
    result
}

/// A command's or a status's reply as the HTTP answer.
async fn relay(env: &Env, request: DoRequest) -> Result<Response, ApiError> {
    match ask(env, &request).await? {
        DoReply::Command { result, status } => json(
            reply_status(result),
            &serde_json::json!({ "result": result.name(), "status": status }),
        ),
        DoReply::Status { status } => json(200, &serde_json::json!({ "status": status })),
        DoReply::Objects { objects } => json(200, &objects),
    }
}

async fn objects(env: &Env, day: Day) -> Result<Vec<ArchiveObject>, ApiError> {
    let DoReply::Objects { objects } = ask(env, &DoRequest::Objects { date: day.to_string() }).await? else {
        return Err(ApiError::unavailable("the date's object answered something else"));
    };
    Ok(objects)
}

fn no_archive(day: Day, what: String) -> ApiError {
    ApiError::new(
        ErrorKind::NoArchive,
        format!("{what}; GET /admin/archive-status?date={day} lists its generations"),
    )
}

/// Streams one archive object (the newest, or `generation`), or one of its Parquet files.
async fn archive(env: &Env, day: Day, generation: Option<u32>, format: ArchiveFormat) -> Result<Response, ApiError> {
    let objects = objects(env, day).await?;
    let object = match generation {
        Some(n) => objects.iter().find(|o| o.generation == n),
        None => objects.last(),
    }
    .ok_or_else(|| {
        no_archive(
            day,
            format!(
                "{day} has no archive{}",
                generation.map_or(String::new(), |n| format!(" of generation {n}"))
            ),
        )
    })?;
    let (key, content_type) = match format {
        ArchiveFormat::Jsonl => (object.key.as_str(), "application/gzip"),
        ArchiveFormat::Parquet { file } => (parquet_file(day, object, file)?, "application/vnd.apache.parquet"),
    };
    let bucket = env.bucket("ARCHIVE").map_err(binding("ARCHIVE"))?;
    let Some(found) = bucket.get(key).execute().await.map_err(ApiError::unavailable)? else {
        return Err(no_archive(day, format!("object {key} does not exist")));
    };
    let body = found
        .body()
        .ok_or_else(|| ApiError::unavailable("the object has no body"))?;
    // R2's body stream has a known length, so the runtime sends Content-Length, not chunks.
    let mut resp =
        Response::from_body(body.response_body().map_err(ApiError::unavailable)?).map_err(ApiError::unavailable)?;
    let file = key.rsplit('/').next().unwrap_or("archive");
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-type", content_type.to_string()),
        ("content-length", found.size().to_string()),
        ("content-disposition", format!("attachment; filename=\"{day}-{file}\"")),
        // A key is written again when its export starts over: no cache may keep the old bytes.
        ("cache-control", "no-store".to_string()),
        ("x-archive-key", key.to_string()),
    ] {
        h.set(name, &value).map_err(ApiError::unavailable)?;
    }
    Ok(resp)
}

/// The key of Parquet file `file` (1-based) of `object`, or of its only one.
fn parquet_file(day: Day, object: &ArchiveObject, file: Option<u32>) -> Result<&str, ApiError> {
    let files = &object.parquet;
    let n = object.generation;
    match (file, files.len()) {
        (_, 0) => Err(no_archive(
            day,
            format!(
                "generation {n} of {day} has no Parquet files ({})",
                if object.rows == 0 {
                    "it holds no rows"
                } else {
                    "it was exported with PARQUET=false"
                }
            ),
        )),
        (None, 1) => Ok(&files[0].key),
        (None, count) => Err(ApiError::new(
            ErrorKind::BadParameter,
            format!("generation {n} of {day} has {count} Parquet files: pick one with &file=N (1..={count})"),
        )),
        (Some(f), count) => files.get(f as usize - 1).map(|p| p.key.as_str()).ok_or_else(|| {
            no_archive(
                day,
                format!("generation {n} of {day} has {count} Parquet files, not a file {f}"),
            )
        }),
    }
}

/// Streams the lines of a window as NDJSON, reading only the pieces that can match.
async fn events(env: &Env, q: EventsQuery) -> Result<Response, ApiError> {
    let (chosen, legacy) = readable(q.day, q.generation, objects(env, q.day).await?)?;
    let date = q.day.to_string();
    let mut reader = EventReader::new(&chosen, q.window);
    if reader.buffer_bytes() > MAX_BUFFER_BYTES {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("{date} has {} generations whose pieces would take {} MiB at once to merge, over the {} MiB a read may hold; read them one at a time with &generation=N", chosen.len(), reader.buffer_bytes() >> 20, MAX_BUFFER_BYTES >> 20),
        ));
    }
    let (pieces, bytes) = reader.planned();
    let total = (reader.pieces_total, reader.object_bytes);
    let r2 = R2(env.bucket("ARCHIVE").map_err(binding("ARCHIVE"))?);
    // The first chunk is read before answering, so a window whose first piece is damaged (or
    // whose read fails) gets an error status with its message, not a 200 cut short.
    let first = reader.next(&r2).await.map_err(|e| match e {
        EventsError::Port(p) => ApiError::unavailable(p),
        EventsError::Damaged { key, piece, detail } => ApiError::new(
            ErrorKind::CorruptState,
            format!("piece {piece} of {key} could not be read back as indexed ({detail}); no line was sent. If the date was reset or archived again meanwhile, read it again; else the archive is damaged: GET /admin/archive-status?date={date} lists the date's archives"),
        ),
        // As `/admin/archive` answers for an object that is not there.
        EventsError::Missing { key } => no_archive(q.day, format!("{key} is not in R2 (no line was sent); if the date was reset or archived again meanwhile, read it again")),
    })?;
    let body = lines_body(first, reader, r2, date);
    let read: Vec<String> = chosen.iter().map(|o| o.generation.to_string()).collect();
    let generations = read.join(",")
        + &legacy
            .map(|n| format!(" ({n} of state version 1 not read)"))
            .unwrap_or_default();
    let mut resp = Response::from_stream(body).map_err(ApiError::unavailable)?;
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-type", "application/x-ndjson".to_string()),
        ("cache-control", "no-store".to_string()),
        ("x-archive-pieces", format!("{pieces} of {}", total.0)),
        ("x-archive-bytes", format!("{bytes} of {}", total.1)),
        ("x-archive-generations", generations),
    ] {
        h.set(name, &value).map_err(ApiError::unavailable)?;
    }
    Ok(resp)
}

/// The response body of an events read: `first`, then the reader's chunks. A failure after the
/// status went out cuts the body short (the client sees an incomplete read; the lines sent are
/// whole and checked), and the log says why.
fn lines_body(
    first: Option<Vec<u8>>,
    reader: EventReader,
    r2: R2,
    date: String,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, worker::Error>> {
    stream::unfold((first, Some(reader), r2), move |(first, reader, r2)| {
        let date = date.clone();
        async move {
            if let Some(chunk) = first {
                return Some((Ok::<Vec<u8>, worker::Error>(chunk), (None, reader, r2)));
            }
            let mut reader = reader?;
            match reader.next(&r2).await {
                Ok(Some(chunk)) => Some((Ok(chunk), (None, Some(reader), r2))),
                Ok(None) => None,
                Err(e) => {
                    WorkerHost.log(
                        &serde_json::json!({ "archiver": "d1-archiver", "date": date, "action": "events", "error": e.to_string() })
                            .to_string(),
                    );
                    Some((Err(worker::Error::RustError(e.to_string())), (None, None, r2)))
                }
            }
        }
    })
}

/// The generations an events read merges: `generation` alone, or every one it can read piece
/// by piece, with how many it cannot (state version 1: no per-piece checksums), if any.
fn readable(
    day: Day,
    generation: Option<u32>,
    all: Vec<ArchiveObject>,
) -> Result<(Vec<ArchiveObject>, Option<usize>), ApiError> {
    let legacy = |what: String| {
        ApiError::new(
            ErrorKind::Conflict,
            format!("{what} written by state version 1, without per-piece checksums; download it whole with GET /admin/archive?date={day}&generation=N"),
        )
    };
    if let Some(n) = generation {
        let o = all
            .into_iter()
            .find(|o| o.generation == n)
            .ok_or_else(|| no_archive(day, format!("{day} has no generation {n}")))?;
        return match o.legacy {
            true => Err(legacy(format!("generation {n} was"))),
            false => Ok((vec![o], None)),
        };
    }
    let (old, readable): (Vec<ArchiveObject>, Vec<ArchiveObject>) = all.into_iter().partition(|o| o.legacy);
    match (readable.is_empty(), old.len()) {
        (true, 0) => Err(no_archive(day, format!("{day} has no archive to read"))),
        (true, _) => Err(legacy(format!("{day} has only generations"))),
        (false, n) => Ok((readable, (n > 0).then_some(n))),
    }
}
