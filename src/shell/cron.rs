//! The daily cron and the hand-over between dates: which Durable Objects to poke.
//!
//! Not policy: [`crate::core::policy`] decides (dates with work of their own hold the slots;
//! due dates start only into free ones); this module reads D1 through the engine and pokes.

use worker::Env;

use crate::api::protocol::{DoReply, DoRequest};
use crate::api::ApiError;
use crate::core::machine::Command;
use crate::core::policy::PokeReason;
use crate::engine::fleet;

use super::adapters::D1;
use super::handlers::ask;
use super::{binding, config, now_ms};

async fn poke(env: &Env, dates: Vec<(String, PokeReason)>) -> Vec<String> {
    let mut poked = Vec::new();
    for (date, reason) in dates {
        let command = match reason {
            PokeReason::Rearm => Command::Rearm,
            PokeReason::Start | PokeReason::Resume => Command::Trigger,
        };
        let request = DoRequest::Command {
            date: date.clone(),
            command,
        };
        let reason: &str = reason.into();
        match ask(env, &request).await {
            Ok(DoReply::Command { result, .. }) => poked.push(format!("{date} ({reason}: {})", result.name())),
            Ok(_) => {}
            Err(e) => poked.push(format!("{date} ({reason}: {})", e.error.name())),
        }
    }
    poked
}

/// A date gave up its running slot: start or resume dates into it, as the daily cron would
/// (dates tried again only once a day each, so dates whose rows cannot be cleaned cannot hand
/// the slot to each other without end).
pub(super) async fn hand_over(env: &Env, finished: &str) -> Result<Vec<String>, ApiError> {
    let cfg = config(env)?;
    let db = D1(env.d1("DB").map_err(binding("DB"))?);
    let plan = fleet::cron_plan(&db, &cfg, now_ms(), Some(finished))
        .await
        .map_err(ApiError::unavailable)?;
    let starts = plan.into_iter().filter(|(_, r)| *r != PokeReason::Rearm).collect();
    Ok(poke(env, starts).await)
}

/// The daily cron: start due dates into free slots, re-arm running ones, resume failed ones,
/// and leave a heartbeat for /admin/health.
pub(super) async fn run(env: &Env) -> Result<Vec<String>, ApiError> {
    let cfg = config(env)?;
    let db = D1(env.d1("DB").map_err(binding("DB"))?);
    let now = now_ms();
    let plan = fleet::cron_plan(&db, &cfg, now, None)
        .await
        .map_err(ApiError::unavailable)?;
    let poked = poke(env, plan).await;
    fleet::beat(&db, now).await.map_err(ApiError::unavailable)?;
    Ok(poked)
}
