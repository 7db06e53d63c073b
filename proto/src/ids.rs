//! Id newtypes, so an agent id can never be passed where a task id is expected. What a valid
//! id looks like (length, characters) is [`crate::limits::check_id`]'s to say.

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an existing id.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// A fresh random id, prefixed for readability in logs.
            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "-{}"), uuid::Uuid::new_v4()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// True when no id is set (the proto default).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Unwraps the inner string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// Identifies an agent; assigned by the master on first registration.
    AgentId,
    "agent"
);
id_newtype!(
    /// Identifies a framework; assigned by the master on first subscription.
    FrameworkId,
    "fw"
);
id_newtype!(
    /// Identifies one resource offer.
    OfferId,
    "offer"
);
id_newtype!(
    /// Identifies a task; chosen by the framework, unique among its live tasks, at most
    /// [`crate::limits::MAX_ID_LEN`] bytes (see [`crate::limits::check_id`]).
    TaskId,
    "task"
);
id_newtype!(
    /// Identifies one subscription stream of a framework.
    StreamId,
    "stream"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_prefixed() {
        let first = AgentId::generate();
        let second = AgentId::generate();
        assert_ne!(first, second);
        assert!(first.as_str().starts_with("agent-"));
        assert!(TaskId::generate().as_str().starts_with("task-"));
    }
}
