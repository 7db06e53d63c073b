//! Names derived from a task's (framework id, task id): the Docker container name, the process
//! runtime's sandbox directory and the checkpoint directory.
//!
//! The name must be injective: two different tasks never share a name, or a launch of one
//! would replace the container (or checkpoint) of the other. Each id is escaped with a
//! bijection onto `[A-Za-z0-9.-]` plus `_xx` escapes (`_` followed by two lowercase hex digits,
//! one per UTF-8 byte), and the two parts are joined by `__`, which no escaped part contains
//! (an `_` in a part is always followed by a hex digit): `agora-<framework>__<task>`. Names
//! longer than [`MAX_NAME_LEN`] become `agorah-<readable prefix>-<hash>` with 128 bits of the
//! SHA-256 of the full pair; the different prefix keeps the two forms apart.
//!
//! The result is a valid Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`) and a single
//! safe path component (no `/`, never `.` or `..`).

use crate::task_key::TaskKey;

/// Longest name produced; longer ones are shortened with a hash. Well under the 255 bytes of
/// a file name and short enough to read in `docker ps`.
pub const MAX_NAME_LEN: usize = 128;

const PREFIX: &str = "agora-";
const SEPARATOR: &str = "__";
/// Hashed names start with this instead of [`PREFIX`], so they never equal an unhashed one.
const HASHED_PREFIX: &str = "agorah-";
/// 128 bits of the hash, in hex.
const HASH_HEX_LEN: usize = 32;

/// The container name (and sandbox and checkpoint directory name) of a task.
pub fn task_name(key: &TaskKey) -> String {
    let full = format!(
        "{PREFIX}{}{SEPARATOR}{}",
        escape(key.framework_id.as_str()),
        escape(key.task_id.as_str())
    );
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    // The hash covers both ids with a length prefix, so that the pair and not only the
    // concatenation is hashed.
    let mut hashed_input = Vec::new();
    for part in [key.framework_id.as_str(), key.task_id.as_str()] {
        hashed_input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        hashed_input.extend_from_slice(part.as_bytes());
    }
    let digest = sha256(&hashed_input);
    let hash: String = digest[..HASH_HEX_LEN / 2]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let readable = &full[PREFIX.len()..];
    let keep = MAX_NAME_LEN - HASHED_PREFIX.len() - 1 - HASH_HEX_LEN;
    // `full` is ASCII, so any index is a character boundary; a cut inside an `_xx` escape
    // is trimmed so the prefix stays readable. The hash alone carries the identity.
    let prefix = trim_partial_escape(&readable[..keep]);
    format!("{HASHED_PREFIX}{prefix}-{hash}")
}

/// Drops a trailing `_` or `_x` that a cut left of an escape or of the separator.
fn trim_partial_escape(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('_');
    let bytes = trimmed.as_bytes();
    let len = bytes.len();
    if len >= 2 && bytes[len - 2] == b'_' {
        return trimmed[..len - 2].trim_end_matches('_');
    }
    trimmed
}

/// Escapes one id: `[A-Za-z0-9.-]` stay, every other byte becomes `_xx`. An empty id becomes
/// `_`, which no non-empty id produces.
pub fn escape(id: &str) -> String {
    if id.is_empty() {
        return "_".to_owned();
    }
    let mut escaped = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("_{byte:02x}"));
        }
    }
    escaped
}

/// The inverse of [`escape`]; `None` for text `escape` never produces.
pub fn unescape(escaped: &str) -> Option<String> {
    if escaped == "_" {
        return Some(String::new());
    }
    let bytes = escaped.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'_' {
            let hex = escaped.get(index + 1..index + 3)?;
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return None;
            }
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            decoded.push(byte);
            index += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(decoded).ok()
}

fn sha256(message: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(message).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::{FrameworkId, TaskId};
    use proptest::prelude::*;

    fn key(framework: &str, task: &str) -> TaskKey {
        TaskKey::new(FrameworkId::new(framework), TaskId::new(task))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn is_docker_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn names_are_readable_and_include_the_framework() {
        assert_eq!(task_name(&key("fw-1", "web.1")), "agora-fw-1__web.1");
        assert_eq!(task_name(&key("fw", "a/b")), "agora-fw__a_2fb");
        assert_eq!(task_name(&key("fw", "a_b")), "agora-fw__a_5fb");
        assert_eq!(task_name(&key("fw", "..")), "agora-fw__..");
    }

    #[test]
    fn the_separator_cannot_be_forged_by_either_part() {
        assert_ne!(task_name(&key("a__b", "c")), task_name(&key("a", "b__c")));
        assert_ne!(task_name(&key("a", "")), task_name(&key("", "a")));
        assert_ne!(task_name(&key("a_", "b")), task_name(&key("a", "_b")));
    }

    #[test]
    fn long_names_keep_a_prefix_and_a_hash() {
        let long_task = "t".repeat(500);
        let name = task_name(&key("fw", &long_task));
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.starts_with("agorah-fw__ttt"), "{name}");
        assert!(is_docker_name(&name));
        let other = task_name(&key("fw", &format!("{long_task}x")));
        assert_ne!(name, other);
        let escaped_long = "/".repeat(300);
        let escaped_name = task_name(&key("fw", &escaped_long));
        assert!(escaped_name.len() <= MAX_NAME_LEN);
        assert!(is_docker_name(&escaped_name), "{escaped_name}");
    }

    proptest! {
        #[test]
        fn escaping_round_trips(id in ".{0,40}") {
            prop_assert_eq!(unescape(&escape(&id)), Some(id.clone()));
            let escaped = escape(&id);
            prop_assert!(!escaped.contains(SEPARATOR));
        }

        #[test]
        fn different_pairs_get_different_valid_names(
            framework_a in "[a-z_/.-]{0,6}", task_a in "[a-z_/.-]{0,6}",
            framework_b in "[a-z_/.-]{0,6}", task_b in "[a-z_/.-]{0,6}",
        ) {
            let name_a = task_name(&key(&framework_a, &task_a));
            let name_b = task_name(&key(&framework_b, &task_b));
            prop_assert!(is_docker_name(&name_a), "{}", name_a);
            prop_assert!(name_a != "." && name_a != ".." && !name_a.contains('/'));
            prop_assert_eq!(name_a == name_b, (framework_a, task_a) == (framework_b, task_b));
        }

        #[test]
        fn long_and_short_names_never_collide_and_stay_valid(
            framework in "[a-z/_]{1,8}", task_a in "[a-z/_]{100,140}", task_b in "[a-z/_]{1,140}",
        ) {
            let name_a = task_name(&key(&framework, &task_a));
            let name_b = task_name(&key(&framework, &task_b));
            prop_assert!(name_a.len() <= MAX_NAME_LEN);
            prop_assert!(is_docker_name(&name_a), "{}", name_a);
            prop_assert_eq!(name_a == name_b, task_a == task_b);
        }
    }
}
