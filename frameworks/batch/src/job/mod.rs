//! Job definitions: the JSON model, parsing with unknown fields reported, and validation.

mod parse;
mod spec;

pub use parse::{FieldError, JobSpecError, MAX_PARALLELISM, ParsedJob, parse_job, validate};
pub use spec::{ConcurrencyPolicy, JobId, JobSpec, RunSpec, ScheduleSpec, parse_constraint};
