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

/// SHA-256 (FIPS 180-4). The agent needs a stable, collision-resistant hash for long names and
/// the workspace has no hashing crate; this is the textbook algorithm, checked against the
/// standard test vectors below.
fn sha256(message: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&((message.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in padded.chunks_exact(64) {
        let mut schedule = [0u32; 64];
        for (word, bytes) in schedule.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for i in 16..64 {
            let s0 = schedule[i - 15].rotate_right(7)
                ^ schedule[i - 15].rotate_right(18)
                ^ (schedule[i - 15] >> 3);
            let s1 = schedule[i - 2].rotate_right(17)
                ^ schedule[i - 2].rotate_right(19)
                ^ (schedule[i - 2] >> 10);
            schedule[i] = schedule[i - 16]
                .wrapping_add(s0)
                .wrapping_add(schedule[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let choice = (e & f) ^ (!e & g);
            let temp1 = h
                .wrapping_add(s1)
                .wrapping_add(choice)
                .wrapping_add(K[i])
                .wrapping_add(schedule[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            let temp2 = s0.wrapping_add(majority);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(temp1);
            d = c;
            c = b;
            b = a;
            a = temp1.wrapping_add(temp2);
        }
        for (word, add) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *word = word.wrapping_add(add);
        }
    }
    let mut digest = [0u8; 32];
    for (bytes, word) in digest.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    digest
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
