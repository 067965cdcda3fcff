//! The checker: a few blocking threads that run every member's checks and every name's lookups
//! on schedule, off every connection's path. Jobs wait in one queue ordered by when they are
//! due; a thread takes the first due job, runs it (a check costs at most its timeout), and puts
//! it back for its next turn. Threads start with the first job (none while nothing is checked
//! or named) and grow, up to [`MAX_THREADS`], only while due jobs wait with no thread free. A job
//! holds its member and target weakly: when a reload drops them, the job drops out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::sys::clock::deadline_after;
use crate::sys::sync::{lock, wait, wait_timeout};

use super::marks::{Change, Condition};
use super::member::Member;
use super::probe;
use super::target::Target;

/// Most checker threads at once.
pub(crate) const MAX_THREADS: usize = 8;

/// How soon a name whose lookup failed is looked up again.
const RETRY_LOOKUP: Duration = Duration::from_secs(1);

/// What is called when a member's state changes (after the change is logged).
pub(crate) type OnChange = Box<dyn Fn(&Arc<Member>, &Change) + Send + Sync>;

/// A scheduled job.
#[derive(Debug, Clone)]
enum Errand {
    /// Check a member of a target.
    Check(Weak<Member>, Weak<Target>),
    /// Resolve a target's name, again every `resolve_interval`.
    Resolve(Weak<Target>),
    /// Resolve a target's name once, now (a member failed: its address may have moved).
    ResolveOnce(Weak<Target>),
}

#[derive(Debug, Default)]
struct Schedule {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: HashMap<u64, Errand>,
    next_id: u64,
    threads: usize,
    idle: usize,
}

#[derive(Default)]
struct Works {
    queue: Mutex<Schedule>,
    work: Condvar,
    /// Bumped at every change of state, for connections waiting for a first result.
    news: Mutex<u64>,
    heard: Condvar,
    on_change: OnceLock<OnChange>,
    stop: AtomicBool,
}

impl std::fmt::Debug for Works {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Works")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// The checker of one server; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checker {
    shared: Arc<Works>,
}

impl Checker {
    /// Sets what is called at each change of state (once; later calls are ignored).
    pub(crate) fn on_change(&self, hook: OnChange) {
        let _ = self.shared.on_change.set(hook);
    }

    /// Schedules what `target` needs now: its name's lookups, and its members' checks.
    pub(crate) fn watch(&self, target: &Arc<Target>) {
        if target.is_name() {
            self.schedule(Instant::now(), Errand::Resolve(Arc::downgrade(target)));
        }
        self.watch_members(target, &target.members());
    }

    /// Schedules the checks of `members` of `target`, due now (none if it has no check).
    pub(crate) fn watch_members(&self, target: &Arc<Target>, members: &[Arc<Member>]) {
        if target.plan.check.is_none() {
            return;
        }
        for member in members {
            let job = Errand::Check(Arc::downgrade(member), Arc::downgrade(target));
            self.schedule(Instant::now(), job);
        }
    }

    /// Looks `target`'s name up again soon, once, unless that was done less than a second ago:
    /// one of its members failed, and the name may point elsewhere now.
    pub(crate) fn resolve_soon(&self, target: &Arc<Target>) {
        if target.is_name() && target.may_look_up_again(RETRY_LOOKUP) {
            self.schedule(Instant::now(), Errand::ResolveOnce(Arc::downgrade(target)));
        }
    }

    /// Stops the threads (each finishes the job it runs).
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _queue = lock(&self.shared.queue);
        self.shared.work.notify_all();
    }

    /// Waits until some member's state changes, or `deadline`.
    pub(crate) fn wait_for_news(&self, deadline: Instant) {
        let mut news = lock(&self.shared.news);
        let seen = *news;
        while *news == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            news = wait_timeout(&self.shared.heard, news, left);
        }
    }

    /// Logs a change of `member`'s state, wakes those waiting for news and calls the hook.
    pub(crate) fn changed(&self, member: &Arc<Member>, change: &Change) {
        match change.to {
            Condition::Up => log::info!("upstream {} up: {}", member.describe(), change.why),
            _ => log::warn!("upstream {} down: {}", member.describe(), change.why),
        }
        *lock(&self.shared.news) += 1;
        self.shared.heard.notify_all();
        if let Some(hook) = self.shared.on_change.get() {
            hook(member, change);
        }
    }

    fn schedule(&self, at: Instant, job: Errand) {
        let mut queue = lock(&self.shared.queue);
        let id = queue.next_id;
        queue.next_id += 1;
        queue.jobs.insert(id, job);
        queue.due.push(Reverse((at, id)));
        if queue.idle == 0
            && queue.threads < MAX_THREADS
            && !self.shared.stop.load(Ordering::SeqCst)
        {
            self.spawn(&mut queue);
        } else {
            self.shared.work.notify_one();
        }
    }

    fn spawn(&self, queue: &mut Schedule) {
        let checker = self.clone();
        let spawned = std::thread::Builder::new()
            .name("checker".into())
            .spawn(move || checker.work());
        match spawned {
            Ok(_) => queue.threads += 1,
            Err(error) => log::warn!("cannot start a checker thread: {error}"),
        }
    }

    /// A checker thread: take the first due job, run it, put it back.
    fn work(self) {
        while let Some(job) = self.next_job() {
            if let Some((at, job)) = self.run(job) {
                let mut queue = lock(&self.shared.queue);
                let id = queue.next_id;
                queue.next_id += 1;
                queue.jobs.insert(id, job);
                queue.due.push(Reverse((at, id)));
            }
        }
    }

    /// Waits for the first job that is due; `None` when stopping.
    fn next_job(&self) -> Option<Errand> {
        let mut queue = lock(&self.shared.queue);
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                queue.threads -= 1;
                return None;
            }
            let now = Instant::now();
            match queue.due.peek().copied() {
                Some(Reverse((at, id))) if at <= now => {
                    queue.due.pop();
                    let Some(job) = queue.jobs.remove(&id) else {
                        continue;
                    };
                    let more_due = queue.due.peek().is_some_and(|Reverse((at, _))| *at <= now);
                    if more_due && queue.idle == 0 && queue.threads < MAX_THREADS {
                        self.spawn(&mut queue);
                    }
                    return Some(job);
                }
                next => {
                    queue.idle += 1;
                    queue = match next {
                        Some(Reverse((at, _))) => wait_timeout(&self.shared.work, queue, at - now),
                        None => wait(&self.shared.work, queue),
                    };
                    queue.idle -= 1;
                }
            }
        }
    }

    /// Runs one job; returns it with its next turn, or `None` if its member or target is gone.
    fn run(&self, job: Errand) -> Option<(Instant, Errand)> {
        match &job {
            Errand::Check(member, target) => {
                let (member, target) = (member.upgrade()?, target.upgrade()?);
                let check = target.plan.check.as_ref()?;
                let host = check
                    .host
                    .clone()
                    .unwrap_or_else(|| target.upstream.host.to_string());
                let started = Instant::now();
                let result = probe::run(
                    &check.kind,
                    &probe::target(&member.addr, check),
                    &host,
                    target.plan.proxy,
                    target.plan.src,
                    target.plan.check_timeout,
                )
                .map_err(|why| (started.elapsed(), why));
                if let Some(change) = member.checked(result) {
                    self.changed(&member, &change);
                    if change.to != Condition::Up {
                        self.resolve_soon(&target);
                    }
                }
                Some((deadline_after(started, check.interval), job))
            }
            Errand::ResolveOnce(weak) => {
                let target = weak.upgrade()?;
                let (added, _) = target.resolve();
                self.watch_members(&target, &added);
                None
            }
            Errand::Resolve(weak) => {
                let target = weak.upgrade()?;
                let (added, answered) = target.resolve();
                self.watch_members(&target, &added);
                let after = if answered {
                    target.plan.resolve_interval
                } else {
                    RETRY_LOOKUP.min(target.plan.resolve_interval)
                };
                Some((deadline_after(Instant::now(), after), job))
            }
        }
    }
}
