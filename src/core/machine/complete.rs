//! The completion step, without I/O: complete the multipart upload (or confirm the single put),
//! check the object's size, and write the sidecar index next to it.
//!
//! Safe to repeat: completing an upload that an earlier run of this step completed answers "no
//! such upload", and the object's size then tells whether it is ours.

use crate::core::error::{FailureKind, StepError};
use crate::core::io::{Io, IoResult};
use crate::core::state::{Finished, Written};

use super::Poll;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Complete,
    /// The upload was gone: is the object there, with our size?
    HeadAfterGone,
    Head,
    Sidecar,
    Done,
}

/// One completion step in progress.
pub struct CompleteJob {
    written: Written,
    sidecar_key: String,
    sidecar: String,
    stage: Stage,
}

impl CompleteJob {
    pub fn new(written: &Written, sidecar_key: String, sidecar: String) -> CompleteJob {
        let stage = match written.upload {
            Finished::SinglePut => Stage::Head,
            Finished::Multipart { .. } => Stage::Complete,
        };
        CompleteJob {
            written: written.clone(),
            sidecar_key,
            sidecar,
            stage,
        }
    }

    pub fn poll(&mut self) -> Poll<'_> {
        let key = &self.written.key;
        match (self.stage, &self.written.upload) {
            (Stage::Complete, Finished::Multipart { upload_id, parts }) => {
                Poll::Io(Io::CompleteUpload { key, upload_id, parts })
            }
            (Stage::HeadAfterGone | Stage::Head, _) => Poll::Io(Io::Head { key }),
            (Stage::Sidecar, _) => Poll::Io(Io::Put {
                key: &self.sidecar_key,
                body: vec![self.sidecar.as_bytes()],
                content_type: "application/json",
            }),
            (Stage::Complete, Finished::SinglePut) | (Stage::Done, _) => Poll::Done,
        }
    }

    pub fn handle(&mut self, reply: IoResult) -> Result<(), StepError> {
        let size = self.written.stream.out_len;
        let mismatch = |detail: String| StepError::ObjectMismatch {
            key: self.written.key.clone(),
            detail,
        };
        self.stage = match (self.stage, reply) {
            (Stage::Complete, Err(e)) if e.kind == FailureKind::NoSuchUpload => Stage::HeadAfterGone,
            (Stage::Complete, r) => r.map(|_| Stage::Head)?,
            (Stage::HeadAfterGone, r) => match r?.size()? {
                Some(s) if s == size => Stage::Sidecar,
                _ => {
                    let upload_id = match &self.written.upload {
                        Finished::Multipart { upload_id, .. } => upload_id.clone(),
                        Finished::SinglePut => String::new(),
                    };
                    return Err(StepError::UploadGone {
                        key: self.written.key.clone(),
                        upload_id,
                    });
                }
            },
            (Stage::Head, r) => match r?.size()? {
                Some(s) if s == size => Stage::Sidecar,
                other => return Err(mismatch(format!("size {other:?}, expected {size}"))),
            },
            (Stage::Sidecar, r) => r.map(|_| Stage::Done)?,
            (Stage::Done, _) => Stage::Done,
        };
        Ok(())
    }
}
