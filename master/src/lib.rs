//! The Agora master: turns agents' resources into offers for frameworks and tracks their tasks.

pub mod core;
