//! Background jobs: admission (one job per model, a cap on all jobs), progress, cancellation
//! and the table of recent results that the page polls.
//!
//! A job runs on its own OS thread so the async request threads never wait on the model. A
//! `&Job` is the libraries' [`Progress`]: each tick records the stage and counts the page
//! polls, and answers `Break` once the job was cancelled, so the library call returns its
//! cancellation error at its next tick and the job is recorded as "cancelled". A panic in a
//! job is caught and reported as an internal error; the server keeps serving.
//!
//! Job ids are 128 random bits from the thread-local CSPRNG, written as 32 hex digits: an id
//! is the capability to read, download or cancel its job, and no route lists ids, so one
//! client cannot find another's results by counting.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use fidelis_circuit::Progress;
use serde::Serialize;
use serde_json::Value;

/// Finished jobs kept for polling and downloads; older ones are forgotten.
pub const KEPT_FINISHED_JOBS: usize = 32;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Still working.
    Running,
    /// Finished with a result.
    Done,
    /// Stopped by an error (the message is in `error`).
    Failed,
    /// Stopped on request.
    Cancelled,
}

/// What the page sees of a job (`GET /api/jobs/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job's id (32 hex digits).
    pub id: String,
    /// `context` or `circuit`.
    pub kind: &'static str,
    /// The model it runs on.
    pub model: String,
    /// Where it stands.
    pub state: JobState,
    /// The current stage, e.g. `"scoring edges"` or `"cci 2/5"`.
    pub stage: String,
    /// Units of the current stage done (0 when the stage has no count).
    pub done: usize,
    /// Units of the current stage in all (0 when the stage has no count).
    pub total: usize,
    /// Wall time so far, or until it finished.
    pub elapsed_ms: u128,
    /// The result, once done.
    pub result: Option<Value>,
    /// The error message, once failed.
    pub error: Option<String>,
}

/// One job: its status and the flag that cancels it.
pub struct Job {
    status: Mutex<JobStatus>,
    /// Files the job produced (`result.json`, `graph.json`), served verbatim.
    files: Mutex<HashMap<&'static str, String>>,
    cancel: AtomicBool,
    started: Instant,
}

/// Locks a mutex, recovering the data if a thread panicked while holding it (a job's panic is
/// caught and reported; the table must stay usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Job {
    /// Records a new stage (and its count).
    pub fn progress(&self, stage: &str, done: usize, total: usize) {
        let mut s = lock(&self.status);
        if s.stage != stage {
            s.stage = stage.to_string();
        }
        s.done = done;
        s.total = total;
    }

    /// Whether the job was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Stores a file that `GET /api/jobs/{id}/{name}` serves.
    pub fn put_file(&self, name: &'static str, text: String) {
        lock(&self.files).insert(name, text);
    }

    /// A stored file.
    pub fn file(&self, name: &str) -> Option<String> {
        lock(&self.files).get(name).cloned()
    }

    /// A snapshot of the status.
    pub fn status(&self) -> JobStatus {
        let mut s = lock(&self.status).clone();
        if s.state == JobState::Running {
            s.elapsed_ms = self.started.elapsed().as_millis();
        }
        s
    }
}

impl Progress for &Job {
    fn tick(&mut self, stage: &str, done: usize, total: usize) -> ControlFlow<()> {
        self.progress(stage, done, total);
        if self.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The model already runs a job (whose id is not told: it would let anyone read it).
    Busy,
    /// As many jobs run as the server allows.
    TooMany(usize),
    /// No thread could be started for it.
    Spawn(String),
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Arc<Job>>,
    /// Running job per model.
    running: HashMap<String, String>,
    finished: VecDeque<String>,
}

/// A new job id: 128 bits from `rand`'s thread-local CSPRNG (ChaCha, seeded by the OS), as 32
/// lowercase hex digits.
pub fn new_job_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `text` has the form of a job id (so a malformed one is refused before a lookup).
pub fn is_job_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// All jobs of a server.
pub struct Jobs {
    table: Mutex<Table>,
    max_running: usize,
}

impl Jobs {
    /// A table that lets at most `max_running` jobs run at once (one per model).
    pub fn new(max_running: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max_running: max_running.max(1),
        }
    }

    /// Starts `work` on its own thread as a job on `model`, or says why not. `work` returns
    /// the result shown to the page, or an error message.
    pub fn start<F>(
        self: &Arc<Self>,
        kind: &'static str,
        model: &str,
        work: F,
    ) -> Result<String, Refusal>
    where
        F: FnOnce(&Job) -> Result<Value, String> + Send + 'static,
    {
        let mut table = lock(&self.table);
        if table.running.contains_key(model) {
            return Err(Refusal::Busy);
        }
        if table.running.len() >= self.max_running {
            return Err(Refusal::TooMany(self.max_running));
        }
        let mut id = new_job_id();
        while table.jobs.contains_key(&id) {
            id = new_job_id(); // 2^-128 per pair; the loop only makes it certain
        }
        let job = Arc::new(Job {
            status: Mutex::new(JobStatus {
                id: id.clone(),
                kind,
                model: model.to_string(),
                state: JobState::Running,
                stage: "queued".into(),
                done: 0,
                total: 0,
                elapsed_ms: 0,
                result: None,
                error: None,
            }),
            files: Mutex::new(HashMap::new()),
            cancel: AtomicBool::new(false),
            started: Instant::now(),
        });
        let (for_thread, jobs) = (Arc::clone(&job), Arc::clone(self));
        let (model_name, thread_id) = (model.to_string(), id.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("fidelis-job-{}", &id[..8]))
            .spawn(move || {
                run_job(&for_thread, work);
                jobs.finished(&thread_id, &model_name);
            });
        let handle = spawned.map_err(|e| Refusal::Spawn(e.to_string()))?;
        drop(handle); // detached: the job reports through its status
        table.jobs.insert(id.clone(), job);
        table.running.insert(model.to_string(), id.clone());
        Ok(id)
    }

    /// Called by the job thread when it ends: frees the model and forgets old jobs.
    fn finished(&self, id: &str, model: &str) {
        let mut table = lock(&self.table);
        if table
            .running
            .get(model)
            .is_some_and(|running| running == id)
        {
            table.running.remove(model);
        }
        table.finished.push_back(id.to_string());
        while table.finished.len() > KEPT_FINISHED_JOBS {
            if let Some(old) = table.finished.pop_front() {
                table.jobs.remove(&old);
            }
        }
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.table).jobs.get(id).cloned()
    }

    /// Asks a job to stop; `false` when there is no such job.
    pub fn cancel(&self, id: &str) -> bool {
        match self.get(id) {
            Some(job) => {
                job.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Number of running jobs.
    pub fn running(&self) -> usize {
        lock(&self.table).running.len()
    }
}

/// The job thread: runs `work`, catches panics, records the outcome (an error after a
/// cancellation is the cancellation).
fn run_job<F>(job: &Arc<Job>, work: F)
where
    F: FnOnce(&Job) -> Result<Value, String>,
{
    let outcome = catch_unwind(AssertUnwindSafe(|| work(job)));
    let mut s = lock(&job.status);
    s.elapsed_ms = job.started.elapsed().as_millis();
    match outcome {
        Ok(Ok(result)) => {
            s.state = JobState::Done;
            s.stage = "done".into();
            s.result = Some(result);
        }
        Ok(Err(_)) if job.is_cancelled() => {
            s.state = JobState::Cancelled;
            s.stage = "cancelled".into();
        }
        Ok(Err(message)) => {
            s.state = JobState::Failed;
            s.stage = "failed".into();
            s.error = Some(message);
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            s.state = JobState::Failed;
            s.stage = "failed".into();
            s.error = Some(format!("internal error: {what}"));
        }
    }
}
