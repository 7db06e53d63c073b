//! The daemon's embedded store (redb, `<work_dir>/svc.redb`): apps, their versions,
//! instances, deployments and the framework id, written one transaction per command batch.

use std::path::Path;

use agora_sdk::FrameworkStore;
use agora_sdk::store::{OrStoreError, decode, encode, open_database};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::{RecoveredState, StoreWrite};

pub use agora_sdk::store::StoreError;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// Key: `<app id>\0<version>`.
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
const FRAMEWORK_ID: &str = "framework_id";

/// The redb store.
#[derive(Debug)]
pub struct SvcStore {
    database: Database,
}

fn version_key(app_id: &str, version: &str) -> String {
    format!("{app_id}\0{version}")
}

impl SvcStore {
    /// Opens or creates `<work_dir>/svc.redb`.
    pub fn open(work_dir: &Path) -> Result<Self, StoreError> {
        let (database, _path) = open_database(work_dir, "svc.redb")?;
        let store = SvcStore { database };
        let transaction = store.database.begin_write().or_store("create tables")?;
        transaction.open_table(META).or_store("create tables")?;
        transaction.open_table(APPS).or_store("create tables")?;
        transaction.open_table(VERSIONS).or_store("create tables")?;
        transaction
            .open_table(INSTANCES)
            .or_store("create tables")?;
        transaction
            .open_table(DEPLOYMENTS)
            .or_store("create tables")?;
        transaction.commit().or_store("create tables")?;
        Ok(store)
    }

    /// Everything stored.
    pub fn load(&self) -> Result<RecoveredState, StoreError> {
        let transaction = self.database.begin_read().or_store("load")?;
        let mut state = RecoveredState::default();
        let meta = transaction.open_table(META).or_store("load")?;
        state.framework_id = meta
            .get(FRAMEWORK_ID)
            .or_store("load")?
            .map(|value| value.value().to_owned());
        let apps = transaction.open_table(APPS).or_store("load")?;
        for entry in apps.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            state.apps.push((
                key.value().to_owned(),
                decode("apps", key.value(), value.value())?,
            ));
        }
        let versions = transaction.open_table(VERSIONS).or_store("load")?;
        for entry in versions.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            let Some((app_id, version)) = key.value().split_once('\0') else {
                return Err(StoreError::Corrupt {
                    table: "versions",
                    key: key.value().to_owned(),
                    reason: "key is not <app id>\\0<version>".to_owned(),
                });
            };
            let definition = decode("versions", key.value(), value.value())?;
            state
                .versions
                .push((app_id.to_owned(), version.to_owned(), definition));
        }
        let instances = transaction.open_table(INSTANCES).or_store("load")?;
        for entry in instances.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            state
                .instances
                .push(decode("instances", key.value(), value.value())?);
        }
        let deployments = transaction.open_table(DEPLOYMENTS).or_store("load")?;
        for entry in deployments.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            state
                .deployments
                .push(decode("deployments", key.value(), value.value())?);
        }
        Ok(state)
    }
}

impl FrameworkStore for SvcStore {
    type Write = StoreWrite;
    type Error = StoreError;

    /// Applies a batch of writes in one transaction (all or nothing, durable on return).
    fn apply(&self, writes: &[StoreWrite]) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().or_store("write")?;
        {
            let mut meta = transaction.open_table(META).or_store("write")?;
            let mut apps = transaction.open_table(APPS).or_store("write")?;
            let mut versions = transaction.open_table(VERSIONS).or_store("write")?;
            let mut instances = transaction.open_table(INSTANCES).or_store("write")?;
            let mut deployments = transaction.open_table(DEPLOYMENTS).or_store("write")?;
            for write in writes {
                match write {
                    StoreWrite::FrameworkId(id) => {
                        meta.insert(FRAMEWORK_ID, id.as_str()).or_store("write")?;
                    }
                    StoreWrite::PutApp { app_id, app } => {
                        apps.insert(app_id.as_str(), encode(app)?.as_slice())
                            .or_store("write")?;
                    }
                    StoreWrite::DeleteApp { app_id } => {
                        apps.remove(app_id.as_str()).or_store("write")?;
                        let start = version_key(app_id, "");
                        let end = format!("{app_id}\u{1}");
                        let keys: Vec<String> = versions
                            .range(start.as_str()..end.as_str())
                            .or_store("write")?
                            .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
                            .collect::<Result<_, _>>()
                            .or_store("write")?;
                        for key in keys {
                            versions.remove(key.as_str()).or_store("write")?;
                        }
                    }
                    StoreWrite::PutVersion {
                        app_id,
                        version,
                        definition,
                    } => {
                        versions
                            .insert(
                                version_key(app_id, version).as_str(),
                                encode(definition)?.as_slice(),
                            )
                            .or_store("write")?;
                    }
                    StoreWrite::PutInstance(instance) => {
                        instances
                            .insert(instance.task_id.as_str(), encode(instance)?.as_slice())
                            .or_store("write")?;
                    }
                    StoreWrite::DeleteInstance { task_id } => {
                        instances.remove(task_id.as_str()).or_store("write")?;
                    }
                    StoreWrite::PutDeployment(deployment) => {
                        deployments
                            .insert(deployment.id.as_str(), encode(deployment)?.as_slice())
                            .or_store("write")?;
                    }
                    StoreWrite::DeleteDeployment { id } => {
                        deployments.remove(id.as_str()).or_store("write")?;
                    }
                }
            }
        }
        transaction.commit().or_store("write")?;
        Ok(())
    }
}
