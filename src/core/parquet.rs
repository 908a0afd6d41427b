//! Parquet beside the JSONL (`PARQUET=true`): the rows of one export step as one Parquet file,
//! and the check of a file's footer read back from R2. No I/O.
//!
//! Not the archive of record: cleaning and restore are proven from the JSONL. The columns are
//! decoded from the very JSONL lines the step compressed, so the two can never disagree.
//!
//! **One file per export step, not one per date.** Compared on paper before building (~22 B/row
//! in Parquet, 128 MB Workers), then measured (docs/benchmarks.md):
//! - one file per date: row groups would go up as multipart parts across steps. R2 wants equal
//!   parts, so each step would carry the file's unsent tail (up to 5 MiB) in the Durable Object's
//!   storage beside the JSONL's own carry, plus the footer metadata of every row group so far,
//!   rebuilt into a footer at the end; the file would exist only after the last step.
//! - one file per step: one atomic `put` from memory, nothing carried, written again whole under
//!   the same key if its step runs again (never a second copy). While Parquet is on, a step stops
//!   at [`FILE_ROWS`] rows (or [`FILE_LINE_BYTES`] of lines), so the file in memory stays about
//!   2.2 MB whatever `STEP_ROWS` says: 11 files for the bench's 1M-row day, 53 for 5M. DuckDB, pyarrow and
//!   Spark read a folder of files as one table. Chosen.
//!
//! Types follow the table: TEXT is a UTF-8 string, INTEGER INT64, REAL DOUBLE, and NOT NULL
//! columns are required. SQLite lets a value of another type into any column: a BLOB is kept
//! as binary in the extra map column `_blobs` (column name → bytes), any other (text in a
//! numeric column, a REAL in an INTEGER one) exactly, as its JSONL text, in the extra column
//! `_other_types` (a JSON object by column name). Both are NULL on ordinary rows; the value's
//! own column holds NULL there, or the type's zero where the column is required. Rows come
//! in the export's order (NULL ids first, then by id); every column chunk has min/max
//! statistics, so readers skip row groups by `timestamp` and `id`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::basic::{Compression, Encoding, GzipLevel, Type as PhysicalType};
use parquet::column::page::{CompressedPage, PageWriteSpec, PageWriter};
use parquet::column::writer::{get_column_writer, ColumnCloseResult, ColumnWriter};
use parquet::data_type::ByteArray;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesPtr, WriterVersion};
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{ColumnPath, SchemaDescriptor, TypePtr};
use serde::Deserialize;

use crate::core::sql::{self, COLUMNS};

/// The table's columns in table order, then `_other_types`: the schema of files written before
/// `_blobs` existed ([`check_footer`] accepts them).
macro_rules! columns_schema {
    () => {
        "message traffic_events {
  optional binary id (STRING);
  required binary path (STRING);
  required binary method (STRING);
  required int64 status;
  required double response_time;
  required binary client_ip_hash (STRING);
  optional binary user_agent (STRING);
  optional binary country (STRING);
  required int64 timestamp;
  required binary event_date (STRING);
  required int64 is_error;
  optional int64 created_at;
  optional binary _other_types (STRING);"
    };
}

/// The file's schema: the table's columns, `_other_types`, then `_blobs`, a map from column
/// name to the row's BLOB value in that column, as binary.
pub const SCHEMA: &str = concat!(
    columns_schema!(),
    "
  optional group _blobs (MAP) {
    repeated group key_value {
      required binary key (STRING);
      required binary value;
    }
  }
}"
);

/// The schema before `_blobs` (BLOBs were kept in `_other_types` as `{"$blob":"HEX"}`).
const SCHEMA_WITHOUT_BLOBS: &str = concat!(columns_schema!(), "\n}");

/// The column that keeps values whose SQLite type is not their column's, BLOBs excepted.
pub const OTHER_TYPES: &str = "_other_types";

/// The column that keeps BLOB values, as binary, by column name.
pub const BLOBS: &str = "_blobs";

/// Rows per row group: the unit readers skip by statistics (about 360 KB compressed). Smaller
/// groups would prune finer; larger ones cost memory while the group is open (measured: 65,536
/// rows raised the step's peak by 3 MiB).
pub const ROW_GROUP_ROWS: usize = 16_384;

/// Most rows in one file, so in one export step while Parquet is on (about 2.2 MB of file).
pub const FILE_ROWS: u64 = 100_000;

/// Most bytes of JSONL lines in one file (so in one step): bounds the file held in memory when
/// rows are large.
pub const FILE_LINE_BYTES: u64 = 32 * 1024 * 1024;

/// Rows decoded before they are handed to the column encoders.
const BATCH_ROWS: usize = 1_024;

/// The file is kept in chunks of this size: it grows without a doubling `Vec`'s copies.
const FILE_CHUNK: usize = 256 * 1024;

/// Gzip level of the pages (zlib-rs, like the JSONL): level 6 measured within 2% of 9 here.
const GZIP_LEVEL: u32 = 6;

/// Names the files of the JSONL object `key` (`…/0001.jsonl.gz` → `…/0001-0003.parquet`).
pub fn file_key(object_key: &str, number: u32) -> String {
    let stem = object_key.strip_suffix(".jsonl.gz").unwrap_or(object_key);
    format!("{stem}-{number:04}.parquet")
}

/// A Parquet encoding or footer problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParquetError(pub String);

impl From<parquet::errors::ParquetError> for ParquetError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        ParquetError(e.to_string())
    }
}

fn schema() -> TypePtr {
    Arc::new(parse_message_type(SCHEMA).expect("SCHEMA parses"))
}

fn schema_without_blobs() -> TypePtr {
    Arc::new(parse_message_type(SCHEMA_WITHOUT_BLOBS).expect("SCHEMA_WITHOUT_BLOBS parses"))
}

/// The writer settings, measured (docs/benchmarks.md): dictionaries for the repetitive text
/// columns, DELTA_BYTE_ARRAY for the sorted ids, DELTA_BINARY_PACKED for the timestamps, gzip,
/// 128 KiB pages, chunk statistics only (no page index).
fn props() -> WriterPropertiesPtr {
    let plain = ["id", "client_ip_hash", "response_time", "timestamp", OTHER_TYPES];
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::GZIP(GzipLevel::try_new(GZIP_LEVEL).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_statistics_truncate_length(Some(64))
        .set_data_page_size_limit(64 * 1024)
        .set_dictionary_page_size_limit(256 * 1024)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("d1-archiver {}", env!("CARGO_PKG_VERSION")));
    for c in plain {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    b = b
        .set_column_encoding(ColumnPath::from("id"), Encoding::DELTA_BYTE_ARRAY)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED);
    Arc::new(b.build())
}

// -------------------------------------------------------------------------------------------------
// Decoding a line into typed values

/// A JSON value of a line, classified by the SQLite type it came from.
enum Value {
    Null,
    Text(ByteArray),
    Integer(i64),
    Real(f64),
    /// A BLOB (`{"$blob":"HEX"}`): only `_blobs` can hold it.
    Blob(ByteArray),
}

/// A BLOB as the JSONL writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobObject<'a> {
    #[serde(rename = "$blob")]
    hex: &'a str,
}

fn classify(text: &str) -> Result<Value, ParquetError> {
    let bad = || ParquetError(format!("line value {text:.60} is not a value the archive writes"));
    Ok(match text.as_bytes().first() {
        _ if text == "null" => Value::Null,
        Some(b'"') => {
            // Without an escape (or a character JSON must escape), the text between the quotes
            // is the value's own UTF-8.
            let plain = text[1..]
                .strip_suffix('"')
                .filter(|inner| !inner.bytes().any(|b| b == b'\\' || b == b'"' || b < 0x20));
            let bytes = match plain {
                Some(inner) => inner.as_bytes().to_vec(),
                None => serde_json::from_str::<String>(text).map_err(|_| bad())?.into_bytes(),
            };
            Value::Text(ByteArray::from(bytes))
        }
        Some(b'{') => {
            let blob: BlobObject<'_> = serde_json::from_str(text).map_err(|_| bad())?;
            Value::Blob(ByteArray::from(hex::decode(blob.hex).map_err(|_| bad())?))
        }
        Some(_) if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) => {
            // Correctly rounded: the JSONL wrote the shortest decimal of this very double
            // (and `9.0e+999` for infinity, which parses as infinity).
            Value::Real(text.parse().map_err(|_| bad())?)
        }
        Some(_) => Value::Integer(text.parse().map_err(|_| bad())?),
        None => return Err(bad()),
    })
}

/// One column's values for the rows of a batch.
enum Values {
    Text(Vec<ByteArray>),
    Integer(Vec<i64>),
    Real(Vec<f64>),
}

impl Values {
    /// Whether `value` is of the column's type (NULL is where the column is optional: where
    /// the schema requires a value, an app's table that allows NULL there cannot have it
    /// written as the type's zero, which readers could not tell from a real one).
    fn takes(&self, value: &Value, nullable: bool) -> bool {
        match value {
            Value::Null => nullable,
            Value::Text(_) | Value::Integer(_) | Value::Real(_) | Value::Blob(_) => matches!(
                (self, value),
                (Values::Text(_), Value::Text(_))
                    | (Values::Integer(_), Value::Integer(_))
                    | (Values::Real(_), Value::Real(_))
            ),
        }
    }
}

/// The rows of a batch, column by column (`defs` only for optional columns), and their BLOBs.
struct Batch {
    columns: Vec<(Values, Option<Vec<i16>>)>,
    blobs: Blobs,
    rows: usize,
}

/// The two leaf columns of `_blobs` for the rows of a batch: per entry its column's name and
/// its bytes; levels per entry, or one per row without a BLOB (`_blobs` NULL).
#[derive(Default)]
struct Blobs {
    keys: Vec<ByteArray>,
    values: Vec<ByteArray>,
    defs: Vec<i16>,
    reps: Vec<i16>,
}

impl Blobs {
    /// Definition level of an entry: `_blobs` present (1) and a `key_value` in it (2).
    const ENTRY: i16 = 2;

    /// The row's BLOBs, by column name.
    fn push_row(&mut self, blobs: Vec<(&str, ByteArray)>) {
        if blobs.is_empty() {
            self.defs.push(0);
            self.reps.push(0);
        }
        for (n, (name, bytes)) in blobs.into_iter().enumerate() {
            self.defs.push(Self::ENTRY);
            self.reps.push(i16::from(n > 0));
            self.keys.push(ByteArray::from(name.as_bytes().to_vec()));
            self.values.push(bytes);
        }
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.defs.clear();
        self.reps.clear();
    }
}

impl Batch {
    /// Buffers for the table's columns and `_other_types`, typed and nullable as `descr` says.
    fn new(descr: &SchemaDescriptor) -> Batch {
        let columns = descr.columns()[..=COLUMNS.len()]
            .iter()
            .map(|c| {
                let values = match c.physical_type() {
                    PhysicalType::INT64 => Values::Integer(Vec::with_capacity(BATCH_ROWS)),
                    PhysicalType::DOUBLE => Values::Real(Vec::with_capacity(BATCH_ROWS)),
                    // `SCHEMA` has INT64, DOUBLE and BYTE_ARRAY columns only.
                    PhysicalType::BYTE_ARRAY
                    | PhysicalType::BOOLEAN
                    | PhysicalType::INT32
                    | PhysicalType::INT96
                    | PhysicalType::FLOAT
                    | PhysicalType::FIXED_LEN_BYTE_ARRAY => Values::Text(Vec::with_capacity(BATCH_ROWS)),
                };
                (values, (c.max_def_level() > 0).then(|| Vec::with_capacity(BATCH_ROWS)))
            })
            .collect();
        Batch {
            columns,
            blobs: Blobs::default(),
            rows: 0,
        }
    }

    /// Appends one JSONL line (without its newline).
    fn push(&mut self, line: &[u8]) -> Result<(), ParquetError> {
        let values = std::str::from_utf8(line).ok().and_then(sql::cut).ok_or_else(|| {
            ParquetError(format!(
                "a JSONL line does not have the table's columns in order: {:.60}",
                String::from_utf8_lossy(line)
            ))
        })?;
        let mut other: Vec<(&str, &str)> = Vec::new();
        let mut blobs: Vec<(&str, ByteArray)> = Vec::new();
        for (i, raw) in values.into_iter().enumerate() {
            let value = match classify(raw)? {
                Value::Blob(bytes) => {
                    // In `_blobs`; its own column holds NULL, or zero where it cannot.
                    blobs.push((COLUMNS[i], bytes));
                    self.put(i, Value::Null)?;
                    continue;
                }
                value @ (Value::Null | Value::Text(_) | Value::Integer(_) | Value::Real(_)) => value,
            };
            let (values, defs) = &self.columns[i];
            let value = if values.takes(&value, defs.is_some()) {
                value
            } else {
                other.push((COLUMNS[i], raw));
                Value::Null
            };
            self.put(i, value)?;
        }
        let other = (!other.is_empty()).then(|| {
            let mut json = String::from("{");
            for (n, (name, raw)) in other.iter().enumerate() {
                if n > 0 {
                    json.push(',');
                }
                json.push('"');
                json.push_str(name);
                json.push_str("\":");
                json.push_str(raw);
            }
            json.push('}');
            Value::Text(ByteArray::from(json.into_bytes()))
        });
        self.put(COLUMNS.len(), other.unwrap_or(Value::Null))?;
        self.blobs.push_row(blobs);
        self.rows += 1;
        Ok(())
    }

    fn put(&mut self, column: usize, value: Value) -> Result<(), ParquetError> {
        let (values, defs) = &mut self.columns[column];
        let nullable = defs.is_some();
        let present = !matches!(value, Value::Null);
        if let Some(d) = defs {
            d.push(i16::from(present));
        }
        match (values, value) {
            (Values::Text(v), Value::Text(s)) => v.push(s),
            (Values::Integer(v), Value::Integer(n)) => v.push(n),
            (Values::Real(v), Value::Real(x)) => v.push(x),
            // Absent: optional columns record it in `defs`; required ones hold the type's zero.
            (Values::Text(v), Value::Null) if !nullable => v.push(ByteArray::from(Vec::new())),
            (Values::Integer(v), Value::Null) if !nullable => v.push(0),
            (Values::Real(v), Value::Null) if !nullable => v.push(0.0),
            (_, Value::Null) => {}
            _ => return Err(ParquetError(format!("column {column} got a value of another type"))),
        }
        Ok(())
    }

    fn clear(&mut self) {
        for (values, defs) in &mut self.columns {
            match values {
                Values::Text(v) => v.clear(),
                Values::Integer(v) => v.clear(),
                Values::Real(v) => v.clear(),
            }
            if let Some(d) = defs {
                d.clear();
            }
        }
        self.blobs.clear();
        self.rows = 0;
    }
}

// -------------------------------------------------------------------------------------------------
// Encoding

/// The encoded pages of one column chunk, shared between its column writer (which owns the page
/// writer) and the file that splices the chunk in when the row group ends.
type Chunk = Arc<Mutex<TrackedWrite<Vec<u8>>>>;

/// A page writer that owns (a share of) its sink, so the column writers need no borrow.
struct ChunkPages(Chunk);

impl PageWriter for ChunkPages {
    fn write_page(&mut self, page: CompressedPage) -> parquet::errors::Result<PageWriteSpec> {
        let mut sink = self.0.lock().expect("single-threaded");
        SerializedPageWriter::new(&mut sink).write_page(page)
    }

    fn close(&mut self) -> parquet::errors::Result<()> {
        Ok(())
    }
}

/// The file's bytes, in chunks.
#[derive(Default)]
pub struct FileBytes {
    pub chunks: Vec<Vec<u8>>,
    pub len: usize,
}

impl std::io::Write for FileBytes {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            match self.chunks.last_mut() {
                Some(c) if c.len() < c.capacity() => {
                    let k = (c.capacity() - c.len()).min(buf.len());
                    c.extend_from_slice(&buf[..k]);
                    buf = &buf[k..];
                }
                _ => self.chunks.push(Vec::with_capacity(FILE_CHUNK)),
            }
        }
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A finished file: its bytes and what the record keeps about it.
pub struct Encoded {
    pub bytes: FileBytes,
    pub rows: u64,
    pub row_groups: u32,
    pub crc32: u32,
    /// CRC-32 of its footer (the metadata and its 8-byte tail), which the read-back compares.
    pub footer_crc32: u32,
}

/// One step's Parquet file being written, row group by row group.
pub struct FileWriter {
    file: SerializedFileWriter<FileBytes>,
    props: WriterPropertiesPtr,
    descr: Arc<SchemaDescriptor>,
    columns: Vec<(ColumnWriter<'static>, Chunk)>,
    /// Each column's buffer, emptied, for its chunk in the next row group: a step's column
    /// buffers grow once, not again in every row group (growing buffers leave holes in wasm
    /// memory, which only grows).
    spare: Vec<Vec<u8>>,
    batch: Batch,
    group_rows: usize,
    rows: u64,
    row_groups: u32,
}

impl FileWriter {
    pub fn new() -> Result<FileWriter, ParquetError> {
        let props = props();
        let schema = schema();
        let descr = Arc::new(SchemaDescriptor::new(schema.clone()));
        let file = SerializedFileWriter::new(FileBytes::default(), schema, props.clone())?;
        let batch = Batch::new(&descr);
        Ok(FileWriter {
            file,
            props,
            descr,
            columns: Vec::new(),
            spare: Vec::new(),
            batch,
            group_rows: 0,
            rows: 0,
            row_groups: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows + self.batch.rows as u64
    }

    /// Bytes of the file so far (the open row group not included).
    pub fn file_len(&self) -> usize {
        self.file.bytes_written()
    }

    /// Appends one JSONL line (its newline optional).
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), ParquetError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        self.batch.push(line)?;
        if self.batch.rows >= BATCH_ROWS || self.group_rows + self.batch.rows >= ROW_GROUP_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), ParquetError> {
        if self.batch.rows == 0 {
            return Ok(());
        }
        if self.columns.is_empty() {
            let mut spare = std::mem::take(&mut self.spare).into_iter();
            self.columns = self
                .descr
                .columns()
                .iter()
                .map(|c| {
                    let chunk: Chunk = Arc::new(Mutex::new(TrackedWrite::new(spare.next().unwrap_or_default())));
                    let pages = Box::new(ChunkPages(chunk.clone()));
                    (get_column_writer(c.clone(), self.props.clone(), pages), chunk)
                })
                .collect();
        }
        let mismatch = || ParquetError("a column writer does not match its column's type".into());
        let (flat, blobs) = self.columns.split_at_mut(self.batch.columns.len());
        for ((writer, _), (values, defs)) in flat.iter_mut().zip(&self.batch.columns) {
            let defs = defs.as_deref();
            match (writer, values) {
                (ColumnWriter::ByteArrayColumnWriter(w), Values::Text(v)) => w.write_batch(v, defs, None)?,
                (ColumnWriter::Int64ColumnWriter(w), Values::Integer(v)) => w.write_batch(v, defs, None)?,
                (ColumnWriter::DoubleColumnWriter(w), Values::Real(v)) => w.write_batch(v, defs, None)?,
                _ => return Err(mismatch()),
            };
        }
        let b = &self.batch.blobs;
        for ((writer, _), leaf) in blobs.iter_mut().zip([&b.keys, &b.values]) {
            let ColumnWriter::ByteArrayColumnWriter(w) = writer else {
                return Err(mismatch());
            };
            w.write_batch(leaf, Some(&b.defs), Some(&b.reps))?;
        }
        self.group_rows += self.batch.rows;
        self.rows += self.batch.rows as u64;
        self.batch.clear();
        if self.group_rows >= ROW_GROUP_ROWS {
            self.close_group()?;
        }
        Ok(())
    }

    /// Closes the column chunks of the open row group and splices them into the file.
    fn close_group(&mut self) -> Result<(), ParquetError> {
        if self.columns.is_empty() {
            return Ok(());
        }
        let columns = std::mem::take(&mut self.columns);
        let mut group = self.file.next_row_group()?;
        for (writer, chunk) in columns {
            let close: ColumnCloseResult = writer.close()?;
            let bytes = {
                let mut sink = chunk.lock().expect("single-threaded");
                std::mem::replace(&mut *sink, TrackedWrite::new(Vec::new()))
            };
            let bytes = Bytes::from(bytes.into_inner()?);
            group.append_column(&bytes, close)?;
            // Ours alone once appended (the file copied it): its buffer serves the next group.
            let mut buffer: Vec<u8> = bytes.try_into_mut().map(Vec::from).unwrap_or_default();
            buffer.clear();
            self.spare.push(buffer);
        }
        group.close()?;
        self.group_rows = 0;
        self.row_groups += 1;
        Ok(())
    }

    /// Ends the file (its footer written) and hands its bytes over.
    pub fn finish(mut self) -> Result<Encoded, ParquetError> {
        self.flush_batch()?;
        self.close_group()?;
        let data = self.file.bytes_written();
        let bytes = self.file.into_inner()?;
        let (mut crc, mut footer) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
        let mut at = 0;
        for c in &bytes.chunks {
            crc.update(c);
            footer.update(&c[data.saturating_sub(at).min(c.len())..]);
            at += c.len();
        }
        Ok(Encoded {
            rows: self.rows,
            row_groups: self.row_groups,
            crc32: crc.finalize(),
            footer_crc32: footer.finalize(),
            bytes,
        })
    }
}

// -------------------------------------------------------------------------------------------------
// Reading a footer back

/// Bytes to read from a file's end to find its footer in one request, almost always.
pub const TAIL_GUESS: u64 = 64 * 1024;

/// What the footer at the end of a file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub rows: u64,
    pub row_groups: u32,
}

/// The length of the footer metadata, from a file's last 8 bytes (`len` + `PAR1`).
pub fn footer_len(last8: &[u8]) -> Result<u64, ParquetError> {
    let tail: [u8; 8] = last8
        .try_into()
        .map_err(|_| ParquetError(format!("{} bytes where the 8-byte footer tail should be", last8.len())))?;
    let tail = FooterTail::try_new(&tail)?;
    Ok(tail.metadata_length() as u64)
}

/// Checks a file of `size` bytes from its `tail` (its last bytes, footer included): the
/// footer's CRC-32 against the one written (`footer_crc32`; `None` for a file an earlier
/// release wrote), so every statistic and offset is as written; the magic, the schema
/// (exactly ours, or ours before `_blobs`), the row count, every row group's statistics for
/// `id` and `timestamp`, and that the row groups and the footer account for every byte of
/// the file.
pub fn check_footer(tail: &[u8], size: u64, rows: u64, footer_crc32: Option<u32>) -> Result<Footer, ParquetError> {
    let n = tail.len();
    if n < 8 {
        return Err(ParquetError(format!("the file has {n} bytes, not even a footer")));
    }
    let meta_len = footer_len(&tail[n - 8..])? as usize;
    if meta_len + 8 > n {
        return Err(ParquetError(format!(
            "footer of {meta_len} bytes is longer than the {n} bytes read"
        )));
    }
    let footer = &tail[n - 8 - meta_len..];
    if let Some(written) = footer_crc32 {
        let read = crc32fast::hash(footer);
        if read != written {
            return Err(ParquetError(format!(
                "its footer's CRC-32 is {read:08x}, {written:08x} was written"
            )));
        }
    }
    let md: ParquetMetaData = ParquetMetaDataReader::decode_metadata(&footer[..meta_len])?;
    let file = md.file_metadata();
    let ours = file.schema_descr().root_schema();
    if ours != schema().as_ref() && ours != schema_without_blobs().as_ref() {
        return Err(ParquetError("the schema is not the archiver's".into()));
    }
    if file.num_rows() as u64 != rows {
        return Err(ParquetError(format!("{} rows, expected {rows}", file.num_rows())));
    }
    let mut data = 4u64; // "PAR1" at the start
    let mut counted = 0u64;
    for (g, group) in md.row_groups().iter().enumerate() {
        counted += group.num_rows() as u64;
        data += group.compressed_size() as u64;
        for name in ["id", "timestamp"] {
            let has = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .and_then(|c| c.statistics())
                .is_some_and(|s| s.null_count_opt().is_some());
            if !has {
                return Err(ParquetError(format!("row group {g} has no statistics for {name}")));
            }
        }
    }
    if counted != rows {
        return Err(ParquetError(format!(
            "row groups hold {counted} rows, the footer says {rows}"
        )));
    }
    let expected = data + meta_len as u64 + 8;
    if expected != size {
        return Err(ParquetError(format!(
            "{size} bytes, but its row groups and footer account for {expected}"
        )));
    }
    Ok(Footer {
        rows,
        row_groups: md.num_row_groups() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn line(id: &str, extra: &str) -> String {
        format!(
            "{{\"id\":{id},\"path\":\"/a\",\"method\":\"GET\",\"status\":200,\"response_time\":1.5,\"client_ip_hash\":\"h\",\"user_agent\":null,\"country\":\"DE\",\"timestamp\":1700000000000,\"event_date\":\"2026-11-20\",\"is_error\":0,\"created_at\":{extra}}}\n"
        )
    }

    fn encode(lines: &[String]) -> Vec<u8> {
        let mut w = FileWriter::new().unwrap();
        for l in lines {
            w.push_line(l.as_bytes()).unwrap();
        }
        w.finish().unwrap().bytes.chunks.concat()
    }

    #[test]
    fn rows_round_trip_with_their_types() {
        let bytes = encode(&[
            line("\"a\"", "17"),
            line("null", "null"),
            line("{\"$blob\":\"00ff\"}", "\"late\""),
        ]);
        let reader = SerializedFileReader::new(Bytes::from(bytes.clone())).unwrap();
        let rows: Vec<_> = reader.get_row_iter(None).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        let get = |r: usize, c: &str| rows[r].get_column_iter().find(|(n, _)| *n == c).unwrap().1.clone();
        assert_eq!(get(0, "id"), Field::Str("a".into()));
        assert_eq!(get(0, "created_at"), Field::Long(17));
        assert_eq!(get(0, "response_time"), Field::Double(1.5));
        assert_eq!(get(0, OTHER_TYPES), Field::Null);
        assert_eq!(get(1, "id"), Field::Null);
        assert_eq!(get(0, BLOBS), Field::Null);
        assert_eq!(get(2, "id"), Field::Null);
        assert_eq!(get(2, "created_at"), Field::Null);
        assert_eq!(get(2, OTHER_TYPES), Field::Str("{\"created_at\":\"late\"}".into()));
        let Field::MapInternal(blobs) = get(2, BLOBS) else {
            panic!("{:?}", get(2, BLOBS))
        };
        assert_eq!(
            blobs.entries(),
            [(Field::Str("id".into()), Field::Bytes(ByteArray::from(vec![0x00, 0xff])))]
        );
        assert_eq!(check_footer(&bytes, bytes.len() as u64, 3, None).unwrap().rows, 3);
    }

    #[test]
    fn texts_come_out_as_their_strings_escaped_or_not() {
        let texts = [
            (r#""plain /搜索 🚀""#, "plain /搜索 🚀"),
            (r#""q\"uote\\ \/ \u00e9\u0001\t""#, "q\"uote\\ / é\u{1}\t"),
            (r#""\u00e9\t\\""#, "é\t\\"),
            (r#""""#, ""),
        ];
        let lines: Vec<String> = texts.iter().map(|(json, _)| line(json, "1")).collect();
        let reader = SerializedFileReader::new(Bytes::from(encode(&lines))).unwrap();
        let ids: Vec<Field> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().get_column_iter().next().unwrap().1.clone())
            .collect();
        let want: Vec<Field> = texts.iter().map(|(_, s)| Field::Str(s.to_string())).collect();
        assert_eq!(ids, want);
        let mut w = FileWriter::new().unwrap();
        for bad in ["\"a\u{1}\"", "\"a\"b\"", "\"a", "nil", "1x"] {
            assert!(w.push_line(line(bad, "1").as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn blobs_of_several_columns_are_one_map_as_binary() {
        let l = line("{\"$blob\":\"\"}", "{\"$blob\":\"0A\"}")
            .replace("\"user_agent\":null", "\"user_agent\":{\"$blob\":\"FF00\"}");
        let bytes = encode(&[line("\"a\"", "1"), l, line("\"b\"", "2")]);
        let reader = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
        let rows: Vec<_> = reader.get_row_iter(None).unwrap().map(|r| r.unwrap()).collect();
        let get = |r: usize, c: &str| rows[r].get_column_iter().find(|(n, _)| *n == c).unwrap().1.clone();
        let Field::MapInternal(blobs) = get(1, BLOBS) else {
            panic!("{:?}", get(1, BLOBS))
        };
        let bytes = |b: &[u8]| Field::Bytes(ByteArray::from(b.to_vec()));
        assert_eq!(
            blobs.entries(),
            [
                (Field::Str("id".into()), bytes(&[])),
                (Field::Str("user_agent".into()), bytes(&[0xff, 0x00])),
                (Field::Str("created_at".into()), bytes(&[0x0a])),
            ]
        );
        assert_eq!((get(1, OTHER_TYPES), get(1, "user_agent")), (Field::Null, Field::Null));
        assert_eq!((get(0, BLOBS), get(2, BLOBS)), (Field::Null, Field::Null));
        let mut w = FileWriter::new().unwrap();
        let bad = line("{\"$blob\":\"0G\"}", "1");
        assert!(w.push_line(bad.as_bytes()).is_err(), "not hex");
        let bad = line("{\"$blob\":\"00\",\"x\":1}", "1");
        assert!(w.push_line(bad.as_bytes()).is_err(), "not a BLOB object");
    }

    #[test]
    fn footers_of_files_written_before_blobs_pass_and_a_foreign_schema_fails() {
        let empty = |schema: TypePtr| {
            let mut out = Vec::new();
            SerializedFileWriter::new(&mut out, schema, props())
                .unwrap()
                .close()
                .unwrap();
            out
        };
        for ok in [schema(), schema_without_blobs()] {
            let bytes = empty(ok);
            assert_eq!(check_footer(&bytes, bytes.len() as u64, 0, None).unwrap().rows, 0);
        }
        let foreign = Arc::new(parse_message_type("message t { required int64 x; }").unwrap());
        let bytes = empty(foreign);
        assert!(check_footer(&bytes, bytes.len() as u64, 0, None).is_err());
    }

    #[test]
    fn a_required_column_of_another_type_holds_zero_and_keeps_the_value_aside() {
        let l = line("\"a\"", "1").replace("\"status\":200", "\"status\":\"teapot\"");
        let bytes = encode(&[l]);
        let reader = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
        let row = reader.get_row_iter(None).unwrap().next().unwrap().unwrap();
        let fields: Vec<_> = row.get_column_iter().map(|(n, f)| (n.clone(), f.clone())).collect();
        assert!(fields.contains(&("status".into(), Field::Long(0))));
        assert!(fields.contains(&(OTHER_TYPES.into(), Field::Str("{\"status\":\"teapot\"}".into()))));
    }

    #[test]
    fn row_groups_split_and_the_footer_accounts_for_every_byte() {
        let lines: Vec<String> = (0..ROW_GROUP_ROWS + 10)
            .map(|i| line(&format!("\"{i:08}\""), "1"))
            .collect();
        let bytes = encode(&lines);
        let f = check_footer(&bytes, bytes.len() as u64, lines.len() as u64, None).unwrap();
        assert_eq!(f.row_groups, 2);
        assert!(check_footer(&bytes, bytes.len() as u64 + 1, lines.len() as u64, None).is_err());
        assert!(check_footer(&bytes, bytes.len() as u64, 5, None).is_err());
        let mut broken = bytes.clone();
        let n = broken.len();
        broken[n - 1] ^= 1;
        assert!(check_footer(&broken, n as u64, lines.len() as u64, None).is_err());
    }

    #[test]
    fn the_footer_is_checked_byte_for_byte_against_its_crc() {
        let lines: Vec<String> = (0..ROW_GROUP_ROWS + 10)
            .map(|i| line(&format!("\"{i:08}\""), "1"))
            .collect();
        let mut w = FileWriter::new().unwrap();
        for l in &lines {
            w.push_line(l.as_bytes()).unwrap();
        }
        let encoded = w.finish().unwrap();
        let bytes = encoded.bytes.chunks.concat();
        let (n, rows) = (bytes.len(), lines.len() as u64);
        let meta = footer_len(&bytes[n - 8..]).unwrap() as usize;
        assert_eq!(encoded.footer_crc32, crc32fast::hash(&bytes[n - 8 - meta..]));
        let crc = Some(encoded.footer_crc32);
        assert!(check_footer(&bytes, n as u64, rows, crc).is_ok());
        // Every byte of the metadata, changed: caught, whether or not it still decodes.
        for i in n - 8 - meta..n - 8 {
            let mut broken = bytes.clone();
            broken[i] ^= 0x10;
            let e = check_footer(&broken, n as u64, rows, crc).unwrap_err();
            assert!(e.0.contains("CRC-32"), "byte {i}: {e:?}");
        }
    }

    #[test]
    fn column_buffers_serve_the_next_row_group() {
        let mut w = FileWriter::new().unwrap();
        for i in 0..ROW_GROUP_ROWS {
            w.push_line(line(&format!("\"{i:08}\""), "1").as_bytes()).unwrap();
        }
        assert_eq!((w.row_groups, w.spare.len()), (1, w.descr.num_columns()));
        let kept: Vec<(*const u8, usize)> = w.spare.iter().map(|b| (b.as_ptr(), b.capacity())).collect();
        assert!(kept.iter().all(|(_, capacity)| *capacity > 0), "{kept:?}");
        w.push_line(line("\"x\"", "1").as_bytes()).unwrap();
        w.flush_batch().unwrap();
        let reused: Vec<*const u8> = w
            .columns
            .iter()
            .map(|(_, c)| c.lock().unwrap().inner().as_ptr())
            .collect();
        assert_eq!(reused, kept.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    }

    #[test]
    fn a_line_without_the_columns_is_an_error() {
        let mut w = FileWriter::new().unwrap();
        assert!(w.push_line(b"{\"id\":\"a\"}").is_err());
    }

    #[test]
    fn file_keys_sit_beside_the_object() {
        assert_eq!(
            file_key("traffic_events/event_date=2026-11-20/0002.jsonl.gz", 3),
            "traffic_events/event_date=2026-11-20/0002-0003.parquet"
        );
    }
}
