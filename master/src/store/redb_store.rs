//! [`RedbStore`]: the registry in an embedded redb file under the master's work dir.

use std::path::{Path, PathBuf};

use agora_proto::FrameworkId;
use agora_proto::v1;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{RegistryStore, StoreError};
use crate::core::{Registry, RegistryUpdate};

/// Agent id -> prost-encoded `AgentInfo`.
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Framework id -> prost-encoded `FrameworkInfo`.
const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
/// Ids of frameworks that may never subscribe again.
const REMOVED_FRAMEWORKS: TableDefinition<&str, ()> = TableDefinition::new("removed_frameworks");

/// File name of the store inside the work dir.
pub const STORE_FILE_NAME: &str = "master.redb";

/// The registry in a redb file. Every [`RegistryStore::apply`] is one durable transaction.
pub struct RedbStore {
    database: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |error| StoreError::Backend {
        operation,
        reason: error.to_string(),
    }
}

impl RedbStore {
    /// Opens (or creates) `<work_dir>/master.redb`, creating `work_dir` when missing.
    pub fn open_in(work_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(work_dir).map_err(|error| StoreError::Open {
            path: work_dir.display().to_string(),
            reason: format!("cannot create work dir: {error}"),
        })?;
        Self::open_file(&work_dir.join(STORE_FILE_NAME))
    }

    /// Opens (or creates) the store file at `path` and makes sure its tables exist.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let database = Database::create(path).map_err(|error| open_error(error.to_string()))?;
        let store = Self {
            database,
            path: path.to_owned(),
        };
        store
            .create_tables()
            .map_err(|error| open_error(error.to_string()))?;
        Ok(store)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<(), redb::Error> {
        let transaction = self.database.begin_write()?;
        transaction.open_table(AGENTS)?;
        transaction.open_table(FRAMEWORKS)?;
        transaction.open_table(REMOVED_FRAMEWORKS)?;
        transaction.commit()?;
        Ok(())
    }

    fn load_inner(&self) -> Result<Registry, StoreError> {
        let fail = backend("load");
        let transaction = self
            .database
            .begin_read()
            .map_err(|error| fail(error.into()))?;
        let mut registry = Registry::default();

        let agents = transaction
            .open_table(AGENTS)
            .map_err(|error| fail(error.into()))?;
        for entry in agents.iter().map_err(|error| fail(error.into()))? {
            let (key, value) = entry.map_err(|error| fail(error.into()))?;
            let agent = decode::<v1::AgentInfo>("agents", key.value(), value.value())?;
            registry.agents.push(agent);
        }

        let frameworks = transaction
            .open_table(FRAMEWORKS)
            .map_err(|error| fail(error.into()))?;
        for entry in frameworks.iter().map_err(|error| fail(error.into()))? {
            let (key, value) = entry.map_err(|error| fail(error.into()))?;
            let framework = decode::<v1::FrameworkInfo>("frameworks", key.value(), value.value())?;
            registry.frameworks.push(framework);
        }

        let removed = transaction
            .open_table(REMOVED_FRAMEWORKS)
            .map_err(|error| fail(error.into()))?;
        for entry in removed.iter().map_err(|error| fail(error.into()))? {
            let (key, _) = entry.map_err(|error| fail(error.into()))?;
            registry
                .removed_frameworks
                .push(FrameworkId::new(key.value()));
        }
        Ok(registry)
    }

    fn apply_inner(&self, updates: &[RegistryUpdate]) -> Result<(), redb::Error> {
        let transaction = self.database.begin_write()?;
        {
            let mut agents = transaction.open_table(AGENTS)?;
            let mut frameworks = transaction.open_table(FRAMEWORKS)?;
            let mut removed = transaction.open_table(REMOVED_FRAMEWORKS)?;
            for update in updates {
                match update {
                    RegistryUpdate::UpsertAgent(agent) => {
                        agents.insert(agent.id.as_str(), agent.encode_to_vec().as_slice())?;
                    }
                    RegistryUpdate::RemoveAgent(agent_id) => {
                        agents.remove(agent_id.as_str())?;
                    }
                    RegistryUpdate::UpsertFramework(framework) => {
                        frameworks
                            .insert(framework.id.as_str(), framework.encode_to_vec().as_slice())?;
                    }
                    RegistryUpdate::RemoveFramework(framework_id) => {
                        frameworks.remove(framework_id.as_str())?;
                        removed.insert(framework_id.as_str(), ())?;
                    }
                }
            }
        }
        transaction.commit()?;
        Ok(())
    }
}

fn decode<M: Message + Default>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|error| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: error.to_string(),
    })
}

impl RegistryStore for RedbStore {
    fn load(&self) -> Result<Registry, StoreError> {
        self.load_inner()
    }

    fn apply(&self, updates: &[RegistryUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.apply_inner(updates).map_err(backend("apply"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::AgentId;

    fn agent(id: &str, hostname: &str) -> v1::AgentInfo {
        v1::AgentInfo {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
            address: format!("{hostname}:5051"),
            resources: agora_proto::Resources::cpus_mem(4.0, 8192.0).to_proto(),
            labels: [("disk".to_owned(), "ssd".to_owned())].into(),
            runtimes: vec!["process".to_owned()],
            version: "0.1.0".to_owned(),
        }
    }

    fn framework(id: &str) -> v1::FrameworkInfo {
        v1::FrameworkInfo {
            id: id.to_owned(),
            name: "svc".to_owned(),
            role: "*".to_owned(),
            failover_timeout_seconds: 60.0,
            ..Default::default()
        }
    }

    #[test]
    fn empty_store_loads_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_in(&dir.path().join("nested/work")).unwrap();
        assert_eq!(store.load().unwrap(), Registry::default());
        assert!(
            dir.path()
                .join("nested/work")
                .join(STORE_FILE_NAME)
                .exists()
        );
    }

    #[test]
    fn updates_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_in(dir.path()).unwrap();
        store
            .apply(&[
                RegistryUpdate::UpsertAgent(agent("agent-1", "a")),
                RegistryUpdate::UpsertAgent(agent("agent-2", "b")),
                RegistryUpdate::UpsertFramework(framework("fw-1")),
                RegistryUpdate::UpsertFramework(framework("fw-2")),
            ])
            .unwrap();
        let mut renamed = agent("agent-1", "a-renamed");
        renamed.labels.clear();
        store
            .apply(&[
                RegistryUpdate::UpsertAgent(renamed.clone()),
                RegistryUpdate::RemoveAgent(AgentId::new("agent-2")),
                RegistryUpdate::RemoveFramework(FrameworkId::new("fw-2")),
            ])
            .unwrap();

        let registry = store.load().unwrap();
        assert_eq!(registry.agents, vec![renamed]);
        assert_eq!(registry.frameworks, vec![framework("fw-1")]);
        assert_eq!(registry.removed_frameworks, vec![FrameworkId::new("fw-2")]);
    }

    #[test]
    fn registry_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open_in(dir.path()).unwrap();
            store
                .apply(&[
                    RegistryUpdate::UpsertAgent(agent("agent-1", "a")),
                    RegistryUpdate::UpsertFramework(framework("fw-1")),
                    RegistryUpdate::RemoveFramework(FrameworkId::new("fw-0")),
                ])
                .unwrap();
        }
        let reopened = RedbStore::open_in(dir.path()).unwrap();
        let registry = reopened.load().unwrap();
        assert_eq!(registry.agents, vec![agent("agent-1", "a")]);
        assert_eq!(registry.frameworks, vec![framework("fw-1")]);
        assert_eq!(registry.removed_frameworks, vec![FrameworkId::new("fw-0")]);
    }

    #[test]
    fn undecodable_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_in(dir.path()).unwrap();
        {
            let transaction = store.database.begin_write().unwrap();
            {
                let mut agents = transaction.open_table(AGENTS).unwrap();
                // A truncated length-delimited field: not a valid AgentInfo.
                agents
                    .insert("agent-bad", [0x0a_u8, 0x7f, 0x01].as_slice())
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        let error = store.load().unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { table: "agents", key, .. } if key == "agent-bad"),
            "{error}"
        );
    }

    #[test]
    fn garbage_file_is_an_open_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE_NAME), vec![0x5a_u8; 8192]).unwrap();
        let error = RedbStore::open_in(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Open { .. }), "{error}");
    }
}
