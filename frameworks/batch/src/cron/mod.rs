//! Cron schedules: expressions with an optional seconds field, evaluated in a time zone with
//! Vixie-cron semantics across daylight-saving changes.

mod expression;
mod schedule;

pub use expression::{CronError, CronExpression};
pub use schedule::CronSchedule;
