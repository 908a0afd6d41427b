//! The effects the core asks for, as values, and the answers that come back.
//!
//! Not I/O: the engine turns each [`Io`] into one port call and hands the [`Answer`] back to
//! the job that asked. Every call named here must be safe to make again with the same
//! arguments: alarms are at-least-once and a crash can land between a call and the save after it.

use crate::core::error::{PortError, StepError};
use crate::core::sql::{BadResult, Meta, ResultSet, Statement};
use crate::core::state::PartRef;

/// One platform call.
#[derive(Debug, PartialEq)]
pub enum Io<'a> {
    /// One D1 statement; answers [`Answer::Rows`].
    Query(Statement),
    /// Several D1 statements in one transaction; answers [`Answer::Batch`].
    Batch(Vec<Statement>),
    /// One export page as wire text (see [`crate::core::sql::page_rows`]); answers [`Answer::Page`].
    Page(Statement),
    CreateUpload {
        key: &'a str,
    },
    UploadPart {
        key: &'a str,
        upload_id: &'a str,
        number: u16,
        bytes: &'a [u8],
    },
    CompleteUpload {
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [PartRef],
    },
    /// Aborting an upload that is gone is not an error.
    AbortUpload {
        key: &'a str,
        upload_id: &'a str,
    },
    /// Writes a whole object: `body`'s slices, in order.
    Put {
        key: &'a str,
        body: Vec<&'a [u8]>,
        content_type: &'static str,
    },
    /// Answers [`Answer::Size`].
    Head {
        key: &'a str,
    },
    /// `len` bytes at `offset`; answers [`Answer::Bytes`] (`None` if the object is missing).
    Get {
        key: &'a str,
        offset: u64,
        len: u64,
    },
    Delete {
        key: &'a str,
    },
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Rows(ResultSet),
    Batch(Vec<ResultSet>),
    Page(String, Meta),
    UploadId(String),
    Etag(String),
    Done,
    Size(Option<u64>),
    Bytes(Option<Vec<u8>>),
}

/// A call's answer, or how it failed.
pub type IoResult = Result<Answer, PortError>;

fn unexpected(what: &'static str, got: &Answer) -> StepError {
    StepError::BadResult(BadResult {
        statement: what,
        detail: format!("the engine answered {got:?}"),
    })
}

impl Answer {
    /// The answer `pick` takes, or an error naming `what` was asked and what came instead.
    fn take<T>(self, what: &'static str, pick: impl FnOnce(Answer) -> Result<T, Answer>) -> Result<T, StepError> {
        pick(self).map_err(|other| unexpected(what, &other))
    }
    pub fn rows(self) -> Result<ResultSet, StepError> {
        self.take("query", |a| if let Answer::Rows(rs) = a { Ok(rs) } else { Err(a) })
    }
    pub fn batch(self) -> Result<Vec<ResultSet>, StepError> {
        self.take("batch", |a| if let Answer::Batch(b) = a { Ok(b) } else { Err(a) })
    }
    pub fn page(self) -> Result<(String, Meta), StepError> {
        self.take("page", |a| if let Answer::Page(w, m) = a { Ok((w, m)) } else { Err(a) })
    }
    pub fn text(self) -> Result<String, StepError> {
        self.take("r2 id", |a| {
            if let Answer::UploadId(s) | Answer::Etag(s) = a {
                Ok(s)
            } else {
                Err(a)
            }
        })
    }
    pub fn size(self) -> Result<Option<u64>, StepError> {
        self.take("r2.head", |a| if let Answer::Size(s) = a { Ok(s) } else { Err(a) })
    }
    pub fn bytes(self) -> Result<Option<Vec<u8>>, StepError> {
        self.take("r2.get", |a| if let Answer::Bytes(b) = a { Ok(b) } else { Err(a) })
    }
}

/// A side effect of a command or a transition, owned (it outlives the record it came from).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    AbortUpload {
        key: String,
        upload_id: String,
    },
    Delete {
        key: String,
    },
    /// Writes the date's metadata rows (a D1 batch).
    Metadata(Vec<Statement>),
}

impl From<&crate::core::state::Garbage> for Effect {
    fn from(g: &crate::core::state::Garbage) -> Effect {
        match g {
            crate::core::state::Garbage::Delete { key } | crate::core::state::Garbage::Recheck { key } => {
                Effect::Delete { key: key.clone() }
            }
            crate::core::state::Garbage::Abort { key, upload_id } => Effect::AbortUpload {
                key: key.clone(),
                upload_id: upload_id.clone(),
            },
        }
    }
}

impl Effect {
    pub fn io(&self) -> Io<'_> {
        match self {
            Effect::AbortUpload { key, upload_id } => Io::AbortUpload { key, upload_id },
            Effect::Delete { key } => Io::Delete { key },
            Effect::Metadata(stmts) => Io::Batch(stmts.clone()),
        }
    }
}

/// D1 and R2 accounting of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rows_read: u64,
    pub rows_written: u64,
    pub queries: u64,
    pub bytes_read: u64,
    pub max_buffer: u64,
    /// D1's own time running the step's statements, in microseconds.
    pub sql_us: u64,
}

impl IoStats {
    pub fn note(&mut self, meta: Meta) {
        self.rows_read += meta.rows_read;
        self.rows_written += meta.rows_written;
        self.sql_us += meta.sql_us;
        self.queries += 1;
    }

    pub fn note_all(&mut self, sets: &[ResultSet]) {
        for rs in sets {
            self.note(rs.meta);
        }
    }

    pub fn note_buffer(&mut self, bytes: usize) {
        self.max_buffer = self.max_buffer.max(bytes as u64);
    }
}
