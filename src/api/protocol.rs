//! The typed protocol between the Worker (routes, cron) and a date's Durable Object: requests
//! and replies as Rust types, carried as JSON. No strings to compare, no JSON to pick apart.

use serde::{Deserialize, Serialize};

use crate::core::machine::{Command, Reply};
use crate::core::state::Record;
use crate::core::status::{status, ArchiveObject, Status};

use super::ApiError;

/// What the Worker asks of a date's Durable Object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum DoRequest {
    Command {
        date: String,
        command: Command,
    },
    Status {
        date: String,
    },
    /// The archive objects with their seek indexes, for `/admin/archive` and `/admin/events`.
    Objects {
        date: String,
    },
}

impl DoRequest {
    pub fn date(&self) -> &str {
        match self {
            DoRequest::Command { date, .. } | DoRequest::Status { date } | DoRequest::Objects { date } => date,
        }
    }
}

/// What a date's Durable Object answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum DoReply {
    Command { result: Reply, status: Box<Status> },
    Status { status: Box<Status> },
    Objects { objects: Vec<ArchiveObject> },
}

/// The answer on the wire: the reply, or the error the route relays.
pub type DoResult = Result<DoReply, ApiError>;

/// The reply to a status request.
pub fn status_reply(rec: &Record) -> DoReply {
    DoReply::Status {
        status: Box::new(status(rec)),
    }
}

/// The HTTP status a command's reply gets: 202 when work starts or goes on, else 200.
pub fn reply_status(reply: Reply) -> u16 {
    match reply {
        Reply::Started | Reply::Resumed | Reply::AlreadyRunning | Reply::RestoreStarted | Reply::ReleaseStarted => 202,
        Reply::AwaitingCleanup
        | Reply::AlreadyCleaned
        | Reply::AlreadyRestored
        | Reply::WasReset
        | Reply::NothingToReset
        | Reply::CleaningStopped => 200,
    }
}
