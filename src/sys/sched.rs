//! The CPU scheduling policy of tcp-router's threads.
//!
//! Under load a blocking relay wakes one thread per message, and on a busy machine the kernel's
//! default policy lets each woken copy thread preempt whatever is running (often the very client
//! or server it relays for), which costs two extra context switches per message. SCHED_BATCH is
//! the normal time-sharing policy without that wake-up preemption: a woken thread runs at once
//! on an idle CPU, and otherwise at the next scheduling point. Same nice value, same fairness,
//! no privilege needed. It raises request/response rates under load, with single-connection
//! latency unchanged (docs/performance.md, "Many busy connections: scheduling and the wait").

use std::fmt;

use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
    NormalThreadSchedulePolicy, ThreadSchedulePolicy,
};
use thread_priority::{ThreadPriority, ThreadPriorityOsValue};

/// Which policy tcp-router's threads run under (`--scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduler {
    /// SCHED_BATCH, when the process starts under the default policy at nice 0.
    #[default]
    Batch,
    /// Leave the policy tcp-router was started with.
    Inherit,
}

impl std::str::FromStr for Scheduler {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "batch" => Ok(Scheduler::Batch),
            "inherit" | "normal" => Ok(Scheduler::Inherit),
            _ => Err(format!(
                "invalid scheduler '{text}': expected 'batch' or 'inherit'"
            )),
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The calling thread (and every thread it starts from now on) runs under SCHED_BATCH.
    Batch,
    /// Left alone, and why.
    Unchanged(String),
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applied::Batch => f.write_str("SCHED_BATCH"),
            Applied::Unchanged(why) => write!(f, "unchanged ({why})"),
        }
    }
}

/// Applies `choice` to the calling thread. Call it before any other thread starts: Linux copies
/// the policy to threads at creation. A policy or nice value someone chose (chrt, nice, systemd's
/// CPUSchedulingPolicy=) is respected: only SCHED_OTHER at nice 0 is switched.
pub fn apply(choice: Scheduler) -> Applied {
    if choice == Scheduler::Inherit {
        return Applied::Unchanged("--scheduler inherit".into());
    }
    match thread_schedule_policy() {
        Ok(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)) => {}
        Ok(policy) => return Applied::Unchanged(format!("started under {policy:?}")),
        Err(err) => return Applied::Unchanged(format!("cannot read the policy: {err:?}")),
    }
    match rustix::process::getpriority_process(None) {
        Ok(0) => {}
        Ok(nice) => return Applied::Unchanged(format!("started at nice {nice}")),
        Err(err) => return Applied::Unchanged(format!("cannot read the nice value: {err}")),
    }
    // Normal policies take their priority as a nice value; 0 is the one just read.
    let nice_zero = ThreadPriority::Os(ThreadPriorityOsValue::default());
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    match set_thread_priority_and_policy(thread_native_id(), nice_zero, batch) {
        Ok(()) => Applied::Batch,
        Err(err) => Applied::Unchanged(format!("cannot set SCHED_BATCH: {err:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_choices() {
        assert_eq!("batch".parse(), Ok(Scheduler::Batch));
        assert_eq!("inherit".parse(), Ok(Scheduler::Inherit));
        assert!("fifo".parse::<Scheduler>().unwrap_err().contains("'fifo'"));
    }

    #[test]
    fn batch_is_applied_to_the_calling_thread_and_inherited() {
        // A fresh thread, so the test harness's own threads keep their policy.
        std::thread::spawn(|| {
            let default_policy = thread_schedule_policy().unwrap()
                == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
                && rustix::process::getpriority_process(None).unwrap() == 0;
            let applied = apply(Scheduler::Batch);
            if !default_policy {
                // The tests run under chrt or nice: that choice is respected.
                assert!(matches!(applied, Applied::Unchanged(_)), "{applied}");
                return;
            }
            assert_eq!(applied, Applied::Batch);
            let child = std::thread::spawn(thread_schedule_policy).join().unwrap();
            assert_eq!(
                child.unwrap(),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch)
            );
        })
        .join()
        .unwrap();
    }
}
