//! Replaying finished runs against their journals.
//!
//! Each step of the run is run again in a fresh instance of its agent (the
//! installed one, or a component given in its place), with every host call
//! answered from the step's journal in order: no memory is written, no
//! model is called, no action is proposed, and the clocks and random
//! generators give back what they gave. If the agent makes a call other
//! than the recorded one, the step has diverged there: from then on reads
//! are answered live from the current memory and calls with effects get
//! `unavailable`. The step's output is compared with the recorded one.
//!
//! A counterfactual swaps in other components for agents, or asks other
//! models live for some tiers (those calls cost what they cost and are
//! recorded as spend; their answers are shown next to the recorded ones).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::WorkflowError;
use super::journal::{Divergence, ModelAnswer, StepJournal};
use super::runs::{Run, StepStatus};
use crate::bindings::Task;
use crate::runtime::{PreparedPlugin, Runtime, StepContext};

/// What replaying one step (or fan-out item) showed.
#[derive(Debug, Clone, Serialize)]
pub struct StepReplay {
    /// `step` or `step.item`.
    pub task: String,
    pub agent: String,
    /// The version that ran originally, and the one replayed.
    pub recorded_version: String,
    pub replayed_version: String,
    pub identical: bool,
    /// The first host call that differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    pub recorded_output: Value,
    /// The replayed output, or why the replay failed.
    pub replayed_output: Result<Value, String>,
    /// Model calls a counterfactual made live, with the recorded answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_answers: Vec<ModelAnswer>,
}

/// A whole run, replayed.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub run: String,
    pub workflow: String,
    pub steps: Vec<StepReplay>,
}

impl ReplayReport {
    pub fn identical(&self) -> bool {
        self.steps.iter().all(|s| s.identical)
    }

    /// The first step that differs.
    pub fn first_difference(&self) -> Option<&StepReplay> {
        self.steps.iter().find(|s| !s.identical)
    }
}

fn as_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl Runtime {
    /// Replays finished run `id`. A counterfactual swaps in components by
    /// agent name (`agents`) or asks models live (`models`: tier ->
    /// `provider/model`).
    pub async fn replay_run(
        &self,
        id: &str,
        agents: &BTreeMap<String, PathBuf>,
        models: &BTreeMap<String, String>,
    ) -> Result<ReplayReport, WorkflowError> {
        let run = self.store().run(id)?.ok_or_else(|| WorkflowError::NoSuchRun(id.to_owned()))?;
        if !run.state.is_finished() {
            return Err(WorkflowError::Definition(format!(
                "run {id} is {}: only finished runs can be replayed",
                run.state.as_str()
            )));
        }
        let mut prepared: BTreeMap<String, Arc<PreparedPlugin>> = BTreeMap::new();
        let mut steps = Vec::new();
        for step_id in &run.order {
            let Some(step) = run.steps.get(step_id).filter(|s| s.status == StepStatus::Succeeded) else { continue };
            let plugin = match prepared.get(&step.agent) {
                Some(p) => p.clone(),
                None => {
                    let plugin = match agents.get(&step.agent) {
                        Some(path) => Arc::new(self.prepare_file(path, &step.agent, &())?),
                        None => self.prepare(&step.agent, &())?,
                    };
                    prepared.insert(step.agent.clone(), plugin.clone());
                    plugin
                }
            };
            let tasks: Vec<(String, Value)> = if step.items.is_empty() {
                vec![(step_id.clone(), step.output.clone().unwrap_or(Value::Null))]
            } else {
                step.items.iter().map(|(i, out)| (format!("{step_id}.{i}"), out.clone())).collect()
            };
            for (task, recorded_output) in tasks {
                steps.push(self.replay_task(&run, &task, &plugin, &step.version, recorded_output, models).await?);
            }
        }
        Ok(ReplayReport { run: run.id.clone(), workflow: run.workflow.clone(), steps })
    }

    async fn replay_task(
        &self,
        run: &Run,
        task: &str,
        plugin: &PreparedPlugin,
        recorded_version: &str,
        recorded_output: Value,
        models: &BTreeMap<String, String>,
    ) -> Result<StepReplay, WorkflowError> {
        let recorded = self.store().journal(&run.id, task)?;
        let input = self.store().step_input(&run.id, task)?.unwrap_or_default();
        let journal = StepJournal::replaying(&run.id, task, recorded, models.clone()).shared();
        let context = StepContext { workflow: run.workflow.clone(), journal: journal.clone(), dry_run: true };
        let guest_task = Task { id: format!("{}/{task}", run.id), input, run_id: Some(run.id.clone()) };
        let outcome = self.call_task(plugin, guest_task, None, Some(context)).await;
        let (divergence, model_answers) = {
            let journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            (journal.divergence(), journal.model_answers())
        };
        let replayed_output = outcome.map(|o| as_json(&o.output)).map_err(|e| e.to_string());
        let same_answers = model_answers.iter().all(|a| a.recorded.as_ref() == Some(&a.now));
        let identical =
            divergence.is_none() && same_answers && replayed_output.as_ref().is_ok_and(|o| *o == recorded_output);
        Ok(StepReplay {
            task: task.to_owned(),
            agent: plugin.record.name.clone(),
            recorded_version: recorded_version.to_owned(),
            replayed_version: plugin.record.version.clone(),
            identical,
            divergence,
            recorded_output,
            replayed_output,
            model_answers,
        })
    }
}
