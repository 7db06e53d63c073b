//! The instance book: every instance the daemon knows, with the indexes it is looked up by.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_proto::{AgentId, TaskId};

use super::model::{AppId, Instance};

/// Instances by app and task id, with indexes by task id and by agent.
///
/// Planning an app walks its own map, with no lookup per instance (those were half the
/// daemon's CPU at 100,000 instances). The indexes are kept in step by [`InstanceBook::insert`]
/// and [`InstanceBook::remove`], the only ways in and out; an instance keeps its task, app and
/// agent for life, so [`InstanceBook::get_mut`] cannot make them drift.
#[derive(Debug, Default)]
pub struct InstanceBook {
    /// App id -> task id -> instance.
    by_app: BTreeMap<AppId, BTreeMap<TaskId, Instance>>,
    /// Task id -> app id, to find an instance by its task id.
    app_of_task: HashMap<TaskId, AppId>,
    /// Agent id -> task ids of the instances on it.
    by_agent: HashMap<AgentId, BTreeSet<TaskId>>,
}

impl InstanceBook {
    /// The instances of an app, in task id order.
    pub fn of_app(&self, app_id: &str) -> Vec<&Instance> {
        self.by_app
            .get(app_id)
            .map(|instances| instances.values().collect())
            .unwrap_or_default()
    }

    /// Every app with instances, and its instances by task id.
    pub fn by_app(&self) -> impl Iterator<Item = (&str, &BTreeMap<TaskId, Instance>)> {
        self.by_app
            .iter()
            .map(|(app_id, instances)| (app_id.as_str(), instances))
    }

    /// The instance of a task.
    pub fn get(&self, task_id: &str) -> Option<&Instance> {
        let app_id = self.app_of_task.get(task_id)?;
        self.by_app.get(app_id)?.get(task_id)
    }

    /// The instance of a task, to change it (not its task, app or agent: they are indexed).
    pub fn get_mut(&mut self, task_id: &str) -> Option<&mut Instance> {
        let app_id = self.app_of_task.get(task_id)?;
        self.by_app.get_mut(app_id)?.get_mut(task_id)
    }

    /// The app of a task, when the task is an instance.
    pub fn app_of(&self, task_id: &str) -> Option<&str> {
        self.app_of_task.get(task_id).map(AppId::as_str)
    }

    /// Every instance, by app id, then task id.
    pub fn iter(&self) -> impl Iterator<Item = &Instance> {
        self.by_app.values().flat_map(BTreeMap::values)
    }

    /// Every instance, to change them (not their task, app or agent: they are indexed).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Instance> {
        self.by_app.values_mut().flat_map(BTreeMap::values_mut)
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.app_of_task.len()
    }

    /// True when there is no instance.
    pub fn is_empty(&self) -> bool {
        self.app_of_task.is_empty()
    }

    /// The task ids of the instances on an agent, in order.
    pub fn task_ids_on(&self, agent_id: &str) -> impl Iterator<Item = &str> {
        self.by_agent
            .get(agent_id)
            .into_iter()
            .flatten()
            .map(TaskId::as_str)
    }

    /// The instances on an agent, in task id order.
    pub fn on_agent(&self, agent_id: &str) -> Vec<&Instance> {
        self.task_ids_on(agent_id)
            .filter_map(|task_id| self.get(task_id))
            .collect()
    }

    /// Stores an instance (replacing one with its task id) and indexes it.
    pub fn insert(&mut self, instance: Instance) {
        self.remove(instance.task_id.as_str());
        self.by_agent
            .entry(instance.agent_id.clone())
            .or_default()
            .insert(instance.task_id.clone());
        self.app_of_task
            .insert(instance.task_id.clone(), instance.app_id.clone());
        self.by_app
            .entry(instance.app_id.clone())
            .or_default()
            .insert(instance.task_id.clone(), instance);
    }

    /// Forgets an instance and its index entries.
    pub fn remove(&mut self, task_id: &str) -> Option<Instance> {
        let app_id = self.app_of_task.remove(task_id)?;
        let of_app = self.by_app.get_mut(app_id.as_str())?;
        let instance = of_app.remove(task_id)?;
        if of_app.is_empty() {
            self.by_app.remove(app_id.as_str());
        }
        if let Some(task_ids) = self.by_agent.get_mut(instance.agent_id.as_str()) {
            task_ids.remove(task_id);
            if task_ids.is_empty() {
                self.by_agent.remove(instance.agent_id.as_str());
            }
        }
        Some(instance)
    }
}
