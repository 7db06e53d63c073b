//! The agent's checkpoint under `<work_dir>/meta`: its id and, per task, the task and its
//! update stream, so that a restarted agent (even after `kill -9`) loses nothing.
//!
//! Layout: `meta/agent_id`, `meta/framework_tasks/<task dir>/task.json` (written atomically)
//! and `meta/framework_tasks/<task dir>/updates.log` (append-only, one record a line:
//! `update <hex of the prost-encoded TaskStatus>` or `ack <uuid>`, each fsync'd). The task dir
//! is the injective name of the (framework id, task id) pair (see [`crate::naming`]): task ids
//! are unique only within their framework. A torn last line is dropped and truncated away on
//! recovery.
//!
//! Agents before that keyed checkpoints by task id alone, under `meta/tasks/<task dir>`; such
//! directories are moved into the new layout when the agent starts (their `task.json` names
//! the framework), so an upgrade-restart loses no running task.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use agora_proto::v1::{TaskInfo, TaskStatus};
use agora_proto::{AgentId, FrameworkId, TaskId};

use crate::naming::task_name;
use crate::task_key::TaskKey;
use prost::Message;

use crate::error::AgentError;
use crate::update_stream::UpdateRecord;

/// What the agent remembers about one task besides its updates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskCheckpoint {
    /// Framework owning the task.
    pub framework_id: FrameworkId,
    /// The prost-encoded `TaskInfo`, hex.
    pub task_info_hex: String,
    /// Runtime that launched it.
    pub runtime: String,
    /// Container id (Docker) or `pid:<n>` (process), once launched.
    pub container_id: Option<String>,
    /// Process id for the process runtime.
    pub pid: Option<u32>,
}

impl TaskCheckpoint {
    /// A checkpoint for a task not launched yet.
    pub fn new(framework_id: FrameworkId, task: &TaskInfo, runtime: &str) -> Self {
        Self {
            framework_id,
            task_info_hex: hex_encode(&task.encode_to_vec()),
            runtime: runtime.to_owned(),
            container_id: None,
            pid: None,
        }
    }

    /// The checkpointed `TaskInfo`.
    pub fn task_info(&self) -> Option<TaskInfo> {
        let bytes = hex_decode(&self.task_info_hex)?;
        TaskInfo::decode(bytes.as_slice()).ok()
    }
}

/// Directory of the checkpoint layout keyed by (framework id, task id).
const TASKS_DIR: &str = "framework_tasks";
/// Directory of the older layout keyed by task id alone; migrated on start.
const LEGACY_TASKS_DIR: &str = "tasks";

/// A task read back from the checkpoint.
#[derive(Debug, Clone)]
pub struct RecoveredTask {
    /// The task id (from `task.json`).
    pub task_id: TaskId,
    /// Its checkpoint.
    pub checkpoint: TaskCheckpoint,
    /// Its decoded `TaskInfo`.
    pub task: TaskInfo,
    /// Its update records in order.
    pub records: Vec<UpdateRecord>,
}

impl RecoveredTask {
    /// The task's (framework id, task id).
    pub fn key(&self) -> TaskKey {
        TaskKey::new(self.checkpoint.framework_id.clone(), self.task_id.clone())
    }
}

/// The checkpoint directory, or nothing at all when the agent has no work dir.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    meta: Option<PathBuf>,
}

impl CheckpointStore {
    /// A store that writes nothing (agents without a work dir).
    pub fn disabled() -> Self {
        Self { meta: None }
    }

    /// Opens (and creates) `<work_dir>/meta`.
    pub fn open(work_dir: &Path) -> Result<Self, AgentError> {
        let meta = work_dir.join("meta");
        fs::create_dir_all(meta.join(TASKS_DIR)).map_err(|error| AgentError::Checkpoint {
            path: meta.clone(),
            reason: error.to_string(),
        })?;
        Ok(Self { meta: Some(meta) })
    }

    /// True when checkpoints are written.
    pub fn is_enabled(&self) -> bool {
        self.meta.is_some()
    }

    /// The checkpointed agent id, if any.
    pub fn load_agent_id(&self) -> Option<AgentId> {
        let meta = self.meta.as_ref()?;
        let text = fs::read_to_string(meta.join("agent_id")).ok()?;
        let id = text.trim();
        (!id.is_empty()).then(|| AgentId::new(id))
    }

    /// Saves the agent id atomically.
    pub async fn save_agent_id(&self, agent_id: &AgentId) -> Result<(), AgentError> {
        let Some(meta) = self.meta.clone() else {
            return Ok(());
        };
        let bytes = agent_id.as_str().as_bytes().to_vec();
        blocking(move || write_atomically(&meta.join("agent_id"), &bytes)).await
    }

    /// Saves a task's `task.json` atomically.
    pub async fn save_task(
        &self,
        key: &TaskKey,
        checkpoint: &TaskCheckpoint,
    ) -> Result<(), AgentError> {
        debug_assert_eq!(key.framework_id, checkpoint.framework_id);
        let Some(dir) = self.task_dir(key) else {
            return Ok(());
        };
        let document = TaskDocument {
            task_id: key.task_id.clone(),
            checkpoint: checkpoint.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&document).map_err(|error| AgentError::Checkpoint {
                path: dir.clone(),
                reason: error.to_string(),
            })?;
        blocking(move || {
            fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
            write_atomically(&dir.join("task.json"), &bytes)
        })
        .await
    }

    /// Appends one record to a task's update log and fsyncs it.
    pub async fn append_update(
        &self,
        key: &TaskKey,
        record: &UpdateRecord,
    ) -> Result<(), AgentError> {
        let Some(dir) = self.task_dir(key) else {
            return Ok(());
        };
        let line = encode_record(record);
        blocking(move || {
            fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
            let path = dir.join("updates.log");
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| io_error(&path, error))?;
            file.write_all(line.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|error| io_error(&path, error))
        })
        .await
    }

    /// Forgets a task.
    pub async fn remove_task(&self, key: &TaskKey) -> Result<(), AgentError> {
        let Some(dir) = self.task_dir(key) else {
            return Ok(());
        };
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(&dir, error)),
        })
        .await
    }

    /// Reads every checkpointed task; unreadable ones are logged and skipped. Moves tasks of
    /// the older layout into the current one first. Truncates torn last lines so later appends
    /// start on a clean line. Blocking.
    pub fn load_tasks(&self) -> Vec<RecoveredTask> {
        let Some(meta) = self.meta.as_ref() else {
            return Vec::new();
        };
        self.migrate_legacy_layout(meta);
        let Ok(entries) = fs::read_dir(meta.join(TASKS_DIR)) else {
            return Vec::new();
        };
        let mut tasks = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            match load_task_dir(&dir) {
                Ok(task) => tasks.push(task),
                Err(reason) => {
                    tracing::warn!(dir = %dir.display(), %reason, "skipping unreadable task checkpoint");
                }
            }
        }
        tasks.sort_by_key(RecoveredTask::key);
        tasks
    }

    /// Moves every `meta/tasks/<dir>` of the older, task-id-only layout to its directory in
    /// the current layout (the framework id is read from its `task.json`). A rename is atomic,
    /// so a crash half-way leaves every task in exactly one of the two places, and the next
    /// start finishes the move. Blocking.
    fn migrate_legacy_layout(&self, meta: &Path) {
        let legacy = meta.join(LEGACY_TASKS_DIR);
        let Ok(entries) = fs::read_dir(&legacy) else {
            return;
        };
        for entry in entries.flatten() {
            let old_dir = entry.path();
            let document = fs::read_to_string(old_dir.join("task.json"))
                .map_err(|error| error.to_string())
                .and_then(|text| {
                    serde_json::from_str::<TaskDocument>(&text).map_err(|error| error.to_string())
                });
            let document = match document {
                Ok(document) => document,
                Err(reason) => {
                    tracing::warn!(dir = %old_dir.display(), %reason, "cannot migrate an unreadable task checkpoint; left in place");
                    continue;
                }
            };
            let key = TaskKey::new(document.checkpoint.framework_id, document.task_id);
            let Some(new_dir) = self.task_dir(&key) else {
                return;
            };
            if new_dir.exists() {
                tracing::warn!(task = %key, old = %old_dir.display(), new = %new_dir.display(), "task checkpoint exists in both layouts; keeping the new one");
                continue;
            }
            match fs::rename(&old_dir, &new_dir) {
                Ok(()) => {
                    tracing::info!(task = %key, dir = %new_dir.display(), "task checkpoint moved to the (framework, task) layout");
                }
                Err(error) => {
                    tracing::error!(task = %key, %error, "cannot move task checkpoint to the new layout; left in place");
                }
            }
        }
        if let Ok(meta_dir) = File::open(meta) {
            // Persist the renames; failure only weakens durability (the next start redoes them).
            let _ = meta_dir.sync_all();
        }
        // Remove the old directory once empty; a task left behind keeps it.
        let _ = fs::remove_dir(&legacy);
    }

    fn task_dir(&self, key: &TaskKey) -> Option<PathBuf> {
        self.meta
            .as_ref()
            .map(|meta| meta.join(TASKS_DIR).join(task_name(key)))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TaskDocument {
    task_id: TaskId,
    #[serde(flatten)]
    checkpoint: TaskCheckpoint,
}

fn load_task_dir(dir: &Path) -> Result<RecoveredTask, String> {
    let text = fs::read_to_string(dir.join("task.json")).map_err(|error| error.to_string())?;
    let document: TaskDocument = serde_json::from_str(&text).map_err(|error| error.to_string())?;
    let task = document
        .checkpoint
        .task_info()
        .ok_or_else(|| "task_info_hex is not a valid TaskInfo".to_owned())?;
    let log_path = dir.join("updates.log");
    let records = match fs::read(&log_path) {
        Ok(bytes) => {
            let (records, valid_len) = parse_update_log(&bytes);
            if valid_len < bytes.len() {
                tracing::warn!(path = %log_path.display(), dropped_bytes = bytes.len() - valid_len, "dropping torn checkpoint tail");
                let truncated = OpenOptions::new()
                    .write(true)
                    .open(&log_path)
                    .and_then(|file| {
                        file.set_len(valid_len as u64)
                            .and_then(|()| file.sync_all())
                    });
                if let Err(error) = truncated {
                    return Err(format!(
                        "cannot truncate torn {}: {error}",
                        log_path.display()
                    ));
                }
            }
            records
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error.to_string()),
    };
    Ok(RecoveredTask {
        task_id: document.task_id,
        checkpoint: document.checkpoint,
        task,
        records,
    })
}

/// Parses an update log; returns the records and the length of the valid prefix. Parsing
/// stops at the first line that is incomplete or malformed (a torn write).
pub fn parse_update_log(bytes: &[u8]) -> (Vec<UpdateRecord>, usize) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let Some(newline) = bytes[offset..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &bytes[offset..offset + newline];
        let Some(record) = std::str::from_utf8(line).ok().and_then(decode_record) else {
            break;
        };
        records.push(record);
        offset += newline + 1;
    }
    (records, offset)
}

fn encode_record(record: &UpdateRecord) -> String {
    match record {
        UpdateRecord::Update(status) => format!("update {}\n", hex_encode(&status.encode_to_vec())),
        UpdateRecord::Ack(uuid) => format!("ack {uuid}\n"),
    }
}

fn decode_record(line: &str) -> Option<UpdateRecord> {
    let (kind, value) = line.split_once(' ')?;
    match kind {
        "update" => {
            let bytes = hex_decode(value)?;
            TaskStatus::decode(bytes.as_slice())
                .ok()
                .map(UpdateRecord::Update)
        }
        "ack" if !value.is_empty() => Some(UpdateRecord::Ack(value.to_owned())),
        _ => None,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(|error| io_error(&temporary, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(&temporary, error))?;
    fs::rename(&temporary, path).map_err(|error| io_error(path, error))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(parent)
    {
        // Persist the rename itself; failure here only weakens durability, so it is ignored.
        let _ = dir.sync_all();
    }
    Ok(())
}

async fn blocking(
    work: impl FnOnce() -> Result<(), AgentError> + Send + 'static,
) -> Result<(), AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AgentError::Checkpoint {
            path: PathBuf::new(),
            reason: format!("checkpoint writer panicked or was cancelled: {error}"),
        })?
}

fn io_error(path: &Path, error: std::io::Error) -> AgentError {
    AgentError::Checkpoint {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[(byte >> 4) as usize] as char);
        text.push(DIGITS[(byte & 0x0f) as usize] as char);
    }
    text
}

/// Bytes of a hex string; `None` when it is not valid hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::TaskState;

    fn status(uuid: &str, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: "web.1".into(),
            state: state as i32,
            uuid: uuid.into(),
            exit_code: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(
            hex_decode(&hex_encode(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
    }

    fn key(framework: &str, task: &str) -> TaskKey {
        TaskKey::new(FrameworkId::new(framework), TaskId::new(task))
    }

    #[tokio::test]
    async fn the_same_task_id_in_two_frameworks_gets_two_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let task = TaskInfo {
            task_id: "web.1".into(),
            ..Default::default()
        };
        for framework in ["fw-a", "fw-b"] {
            let key = key(framework, "web.1");
            store
                .save_task(
                    &key,
                    &TaskCheckpoint::new(key.framework_id.clone(), &task, "sim"),
                )
                .await
                .unwrap();
            store
                .append_update(
                    &key,
                    &UpdateRecord::Update(status(framework, TaskState::TaskRunning)),
                )
                .await
                .unwrap();
        }
        let tasks = store.load_tasks();
        let keys: Vec<TaskKey> = tasks.iter().map(RecoveredTask::key).collect();
        assert_eq!(keys, vec![key("fw-a", "web.1"), key("fw-b", "web.1")]);
        assert_eq!(
            tasks[1].records,
            vec![UpdateRecord::Update(status("fw-b", TaskState::TaskRunning))]
        );
        store.remove_task(&key("fw-a", "web.1")).await.unwrap();
        let left: Vec<TaskKey> = store.load_tasks().iter().map(RecoveredTask::key).collect();
        assert_eq!(left, vec![key("fw-b", "web.1")]);
    }

    #[tokio::test]
    async fn checkpoints_of_the_task_id_only_layout_are_moved_and_recovered() {
        let dir = tempfile::tempdir().unwrap();
        // What an older agent wrote: meta/tasks/<task dir>/{task.json,updates.log}.
        let legacy = dir.path().join("meta/tasks/x612f62");
        fs::create_dir_all(&legacy).unwrap();
        let task = TaskInfo {
            task_id: "a/b".into(),
            ..Default::default()
        };
        let mut checkpoint = TaskCheckpoint::new(FrameworkId::new("fw"), &task, "docker");
        checkpoint.container_id = Some("c0ffee".into());
        let document = TaskDocument {
            task_id: TaskId::new("a/b"),
            checkpoint: checkpoint.clone(),
        };
        fs::write(
            legacy.join("task.json"),
            serde_json::to_vec_pretty(&document).unwrap(),
        )
        .unwrap();
        fs::write(
            legacy.join("updates.log"),
            encode_record(&UpdateRecord::Update(status("u1", TaskState::TaskRunning))),
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("meta/tasks/garbage")).unwrap();

        let store = CheckpointStore::open(dir.path()).unwrap();
        let tasks = store.load_tasks();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].key(), key("fw", "a/b"));
        assert_eq!(tasks[0].checkpoint, checkpoint);
        assert_eq!(
            tasks[0].records,
            vec![UpdateRecord::Update(status("u1", TaskState::TaskRunning))]
        );
        assert!(!legacy.exists(), "moved out of the old layout");
        assert!(
            dir.path().join("meta/tasks/garbage").exists(),
            "an unreadable directory is left for the operator"
        );
        // Later writes go to the new place and a second start finds the task once.
        store
            .append_update(&key("fw", "a/b"), &UpdateRecord::Ack("u1".into()))
            .await
            .unwrap();
        let again = CheckpointStore::open(dir.path()).unwrap().load_tasks();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].records.len(), 2);
    }

    #[tokio::test]
    async fn tasks_and_updates_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.save_agent_id(&AgentId::new("agent-1")).await.unwrap();
        let task = TaskInfo {
            task_id: "web.1".into(),
            name: "web".into(),
            ..Default::default()
        };
        let task_id = key("fw", "web.1");
        let mut checkpoint = TaskCheckpoint::new(FrameworkId::new("fw"), &task, "process");
        store.save_task(&task_id, &checkpoint).await.unwrap();
        checkpoint.pid = Some(42);
        store.save_task(&task_id, &checkpoint).await.unwrap();
        store
            .append_update(
                &task_id,
                &UpdateRecord::Update(status("u1", TaskState::TaskRunning)),
            )
            .await
            .unwrap();
        store
            .append_update(&task_id, &UpdateRecord::Ack("u1".into()))
            .await
            .unwrap();

        let reopened = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load_agent_id().unwrap().as_str(), "agent-1");
        let tasks = reopened.load_tasks();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task, task);
        assert_eq!(tasks[0].checkpoint.pid, Some(42));
        assert_eq!(
            tasks[0].records,
            vec![
                UpdateRecord::Update(status("u1", TaskState::TaskRunning)),
                UpdateRecord::Ack("u1".into())
            ]
        );

        reopened.remove_task(&task_id).await.unwrap();
        assert!(reopened.load_tasks().is_empty());
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let task = TaskInfo {
            task_id: "t".into(),
            ..Default::default()
        };
        let task_id = key("fw", "t");
        store
            .save_task(
                &task_id,
                &TaskCheckpoint::new(FrameworkId::new("fw"), &task, "sim"),
            )
            .await
            .unwrap();
        store
            .append_update(
                &task_id,
                &UpdateRecord::Update(status("u1", TaskState::TaskRunning)),
            )
            .await
            .unwrap();
        let log = dir
            .path()
            .join("meta/framework_tasks")
            .join(task_name(&task_id))
            .join("updates.log");
        let full = encode_record(&UpdateRecord::Update(status("u2", TaskState::TaskFailed)));
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
        drop(file);

        let tasks = store.load_tasks();
        assert_eq!(tasks[0].records.len(), 1, "torn update dropped");
        // Appending after recovery starts on a clean line.
        store
            .append_update(&task_id, &UpdateRecord::Ack("u1".into()))
            .await
            .unwrap();
        let tasks = store.load_tasks();
        assert_eq!(tasks[0].records.len(), 2);
        assert_eq!(tasks[0].records[1], UpdateRecord::Ack("u1".into()));
    }

    #[test]
    fn garbage_in_the_middle_stops_parsing() {
        let mut bytes = encode_record(&UpdateRecord::Ack("a".into())).into_bytes();
        bytes.extend_from_slice(b"update zz\n");
        bytes.extend_from_slice(encode_record(&UpdateRecord::Ack("b".into())).as_bytes());
        let (records, valid) = parse_update_log(&bytes);
        assert_eq!(records, vec![UpdateRecord::Ack("a".into())]);
        assert_eq!(valid, 6);
    }

    #[tokio::test]
    async fn a_disabled_store_writes_nothing() {
        let store = CheckpointStore::disabled();
        store.save_agent_id(&AgentId::new("a")).await.unwrap();
        assert!(store.load_agent_id().is_none());
        assert!(store.load_tasks().is_empty());
    }
}
