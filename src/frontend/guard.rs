//! Rules at work in one session: the verdict on each batch before it leaves
//! for the node, the watchdog that cancels overrunning queries, and the
//! statistics of each batch once its ReadyForQuery arrives.
//!
//! The client direction asks for verdicts and says what each batch
//! executes ([`QueryGuard::execution`]), which goes into the queue of what
//! the node owes ([`super::owed`]); the node direction records each batch
//! once its answer reached the client ([`QueryGuard::record`]); the
//! watchdog runs as a third future in the session's `select!`, watching the
//! front of that queue.
//!
//! Rejections answer with SQLSTATE 42501 (insufficient_privilege), not
//! 57014 (query_canceled): the query is refused by policy and retrying it
//! will not help, while drivers and BI tools treat 57014 as a user's cancel
//! or a timeout, which they may retry or hide. A cancel by the watchdog is a
//! real cancel, so the client gets the node's own 57014, preceded by a
//! NoticeResponse naming the rule.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alerts::{AlertEvent, Alerts};
use crate::cancel::CancelRegistry;
use crate::classify::fingerprint::mask;
use crate::classify::{Action, Classification, Fingerprint, RuleSet, SessionInfo, Verdict};
use crate::config::Config;
use crate::metrics::{Metrics, QueryEnd};
use crate::protocol::backend::ErrorFields;
use crate::protocol::sqlstate;
use crate::stats::{self, Outcome, QueryStats};

use super::owed::{Done, Execution, NodeProgress};

/// The name cancels by `[limits] max_query_duration` go by.
pub const GLOBAL_LIMIT: &str = "limits.max_query_duration";

/// One query text of a batch and its classification.
#[derive(Clone, Debug)]
pub struct Checked {
    pub class: Arc<Classification>,
    pub text: Arc<str>,
    /// The batch runs it (a Query, or a Bind of it), rather than only
    /// preparing it (a Parse alone).
    pub executed: bool,
}

/// What the client direction decided for a batch.
#[derive(Debug)]
pub enum Decision {
    /// Send it; cancel it after `budget` (named by `rule`), if any.
    Run {
        budget: Option<(Duration, Arc<str>)>,
    },
    /// Answer with this error; send nothing to the node.
    Reject(Verdict),
}

/// Where a session stands with rejected batches: a rejection of a batch
/// that ends at a Flush (a prepare) must drop the client's messages up to
/// its Sync, as the node drops them after an error, and answer that Sync.
/// The session keeps one and asks it about each batch
/// ([`Screening::screen`]), telling it what went to the node
/// ([`Screening::sent`]).
#[derive(Debug, Default)]
pub struct Screening {
    /// A batch without Sync was rejected: messages up to the next Sync are dropped.
    skipping_to_sync: bool,
    /// Part of the current Sync's batch (up to a Flush) went to the node.
    partial_on_node: bool,
}

/// What a session does with a batch.
#[derive(Debug)]
pub enum Screened {
    /// Send it; the watchdog cancels it after the budget (named by its rule), if any.
    Run(Option<(Duration, Arc<str>)>),
    /// Send nothing of it: sluice answers, once the node has answered
    /// everything sent before (so answers stay in order), with the
    /// rejection (none when the batch is only dropped), then as `end` says.
    Answer {
        rejection: Option<ErrorFields>,
        end: AnswerEnd,
    },
}

/// How sluice's answer to a batch it did not send ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerEnd {
    /// The batch ended at a Flush: the answer to its Sync, still to come, ends it.
    AtSync,
    /// The node holds the first part of the batch (up to a Flush): send it
    /// a Sync, and the node's ReadyForQuery ends the answer.
    SyncNode,
    /// sluice ends the answer with a ReadyForQuery of its own, carrying the
    /// node's last transaction status.
    Ready,
}

impl Screening {
    /// The rules' verdict on a batch of `syncs` Syncs whose query texts are
    /// `checked`, and what answering it takes.
    pub fn screen(&mut self, guard: &QueryGuard, checked: &[Checked], syncs: u64) -> Screened {
        let rejection = if self.skipping_to_sync {
            None
        } else {
            match guard.decide(checked) {
                Decision::Run { budget } => return Screened::Run(budget),
                Decision::Reject(v) => Some(QueryGuard::rejection(&v)),
            }
        };
        let end = if syncs == 0 {
            self.skipping_to_sync = true;
            AnswerEnd::AtSync
        } else if std::mem::take(&mut self.partial_on_node) {
            self.skipping_to_sync = false;
            AnswerEnd::SyncNode
        } else {
            self.skipping_to_sync = false;
            AnswerEnd::Ready
        };
        Screened::Answer { rejection, end }
    }

    /// A batch of `syncs` Syncs went to the node.
    pub fn sent(&mut self, syncs: u64) {
        self.partial_on_node = syncs == 0;
    }
}

pub struct QueryGuard {
    config: Arc<Config>,
    user: String,
    application: String,
    database: String,
    client_addr: Option<IpAddr>,
    metrics: Arc<Metrics>,
    stats: Arc<QueryStats>,
    alerts: Arc<Alerts>,
    cancels: Arc<CancelRegistry>,
    /// The node and key to cancel with, once BackendKeyData arrived.
    target: Mutex<Option<crate::cancel::CancelTarget>>,
}

impl QueryGuard {
    /// The guard of a session opened with `startup` from `peer`, under
    /// the configuration of `generation`.
    pub fn for_session(
        frontend: &super::Frontend,
        generation: &crate::generation::Generation,
        startup: &crate::protocol::startup::StartupMessage,
        peer: std::net::SocketAddr,
    ) -> QueryGuard {
        QueryGuard::new(
            generation.config.clone(),
            startup.user(),
            startup.application(),
            startup.database(),
            Some(peer.ip()),
            frontend.metrics.clone(),
            frontend.stats.clone(),
            frontend.alerts.clone(),
            frontend.cancels.clone(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        user: &str,
        application: &str,
        database: &str,
        client_addr: Option<IpAddr>,
        metrics: Arc<Metrics>,
        stats: Arc<QueryStats>,
        alerts: Arc<Alerts>,
        cancels: Arc<CancelRegistry>,
    ) -> QueryGuard {
        QueryGuard {
            config,
            user: user.to_string(),
            application: application.to_string(),
            database: database.to_string(),
            client_addr,
            metrics,
            stats,
            alerts,
            cancels,
            target: Mutex::new(None),
        }
    }

    fn rules(&self) -> &RuleSet {
        &self.config.rules
    }

    /// The verdict on a batch's query texts: the most severe of their rules'.
    pub fn decide(&self, checked: &[Checked]) -> Decision {
        let session = SessionInfo {
            user: &self.user,
            application: &self.application,
            database: &self.database,
            client_addr: self.client_addr,
        };
        let mut worst: Option<Verdict> = None;
        for c in checked {
            if let Some(v) = self.rules().evaluate(&c.class, &session, &c.text) {
                let severe = |a: Action| match a {
                    Action::Reject => 2,
                    Action::Cancel { .. } => 1,
                    Action::Log => 0,
                };
                if worst
                    .as_ref()
                    .is_none_or(|w| severe(v.action) > severe(w.action))
                {
                    worst = Some(v);
                }
            }
        }
        let limit = self
            .config
            .limits
            .max_query_duration
            .map(|d| (d, Arc::<str>::from(GLOBAL_LIMIT)));
        let Some(v) = worst else {
            return Decision::Run { budget: limit };
        };
        // Preparing a statement runs nothing: only a reject acts on it (the
        // prepare fails); log and cancel count once it is executed.
        if v.action != Action::Reject && !checked.iter().any(|c| c.executed) {
            return Decision::Run { budget: limit };
        }
        self.metrics.rule_hit(&v.rule, v.action.name());
        let fingerprint = checked
            .first()
            .map(|c| c.class.fingerprint)
            .unwrap_or_default();
        match v.action {
            Action::Log => {
                tracing::info!(rule = &*v.rule, user = self.user, application = self.application,
                    %fingerprint, query = mask(checked.first().map(|c| &*c.text).unwrap_or("")),
                    "a log rule matched a query");
                Decision::Run { budget: limit }
            }
            Action::Cancel { budget } => {
                // The tighter of the rule's budget and the global one.
                let budget = match limit {
                    Some((d, name)) if d < budget => (d, name),
                    _ => (budget, v.rule.clone()),
                };
                Decision::Run {
                    budget: Some(budget),
                }
            }
            Action::Reject => {
                tracing::info!(rule = &*v.rule, user = self.user, application = self.application,
                    %fingerprint, "a rule rejected a query");
                self.metrics.query_routed(QueryEnd::Rejected);
                for c in checked {
                    self.stats.record(stats::Execution {
                        fingerprint: c.class.fingerprint,
                        user: &self.user,
                        application: &self.application,
                        text: &c.text,
                        duration: Duration::ZERO,
                        finished: Instant::now(),
                        rows: 0,
                        bytes: 0,
                        outcome: Outcome::Rejected,
                    });
                }
                Decision::Reject(v)
            }
        }
    }

    /// The ErrorResponse a rejected batch gets.
    pub fn rejection(verdict: &Verdict) -> ErrorFields {
        let message = if verdict.message.is_empty() {
            format!("sluice rule \"{}\" rejected this query", verdict.rule)
        } else {
            format!(
                "sluice rule \"{}\" rejected this query: {}",
                verdict.rule, verdict.message
            )
        };
        ErrorFields::error(sqlstate::INSUFFICIENT_PRIVILEGE, message).with_hint(format!(
            "The query was not run. Rule \"{}\" is set by your database administrators in sluice's configuration; ask them if this query should be allowed (`sluice explain` shows why it matched).",
            verdict.rule
        ))
    }

    /// What a batch sent to the node executes, for statistics and the
    /// watchdog (`budget`); `None` for a batch that only prepares.
    pub(super) fn execution(
        &self,
        checked: &[Checked],
        budget: Option<(Duration, Arc<str>)>,
    ) -> Option<Execution> {
        let mut executed = checked.iter().filter(|c| c.executed);
        let first = executed.next()?;
        let fingerprint = if executed.next().is_none() {
            first.class.fingerprint
        } else {
            let parts: Vec<Fingerprint> = checked
                .iter()
                .filter(|c| c.executed)
                .map(|c| c.class.fingerprint)
                .collect();
            Fingerprint::combine(&parts)
        };
        Some(Execution {
            fingerprint,
            text: first.text.clone(),
            budget,
        })
    }

    /// Where a cancel of this session's queries goes now.
    pub fn target(&self) -> Option<crate::cancel::CancelTarget> {
        self.target.lock().expect("cancel target lock").clone()
    }

    /// The node's cancel key arrived; `None`: the session detached.
    pub fn set_target(&self, target: Option<crate::cancel::CancelTarget>) {
        *self.target.lock().expect("cancel target lock") = target;
    }

    /// Whether a cancel of this session's queries is still on its way to
    /// the node: its node connection must not serve another client yet.
    pub fn cancel_on_its_way(&self) -> bool {
        self.target
            .lock()
            .expect("cancel target lock")
            .as_ref()
            .is_some_and(|t| self.cancels.is_sending(t))
    }

    /// The notice that goes just ahead of the node's 57014 when the
    /// watchdog cancelled the query in the name of `rule`.
    pub fn cancel_notice(rule: &str) -> ErrorFields {
        let text = if rule == GLOBAL_LIMIT {
            format!("sluice cancelled this query: it ran longer than {GLOBAL_LIMIT}")
        } else {
            format!(
                "sluice rule \"{rule}\" cancelled this query: it ran longer than the rule's max_duration"
            )
        };
        let mut notice = ErrorFields::error(sqlstate::QUERY_CANCELED, text);
        notice.severity = "WARNING";
        notice
    }

    /// A batch of the client's ended at `at` (its ReadyForQuery), `elapsed`
    /// after it was sent: its statistics, if it executed anything.
    pub(super) fn record(&self, done: &Done, at: Instant, elapsed: Duration) {
        let Some(execution) = &done.execution else {
            return;
        };
        let outcome = match (done.cancelled, done.error) {
            (true, true) => Outcome::Cancelled,
            (_, true) => Outcome::Error,
            _ => Outcome::Ok,
        };
        self.stats.record(stats::Execution {
            fingerprint: execution.fingerprint,
            user: &self.user,
            application: &self.application,
            text: &execution.text,
            duration: elapsed,
            finished: at,
            rows: done.rows,
            bytes: done.bytes,
            outcome,
        });
    }

    /// Cancels overrunning batches; runs for the whole session.
    /// Cancel safe: state lives in `progress`.
    pub(super) async fn watchdog(
        &self,
        progress: &NodeProgress,
        generation: Arc<crate::generation::Generation>,
    ) {
        // A session keeps the rules it started under: without a budget among
        // them there is nothing to watch, and a pending future costs the
        // session's wake-ups nothing.
        if self.config.limits.max_query_duration.is_none() && !self.rules().has_budgets() {
            return std::future::pending().await;
        }
        loop {
            let notified = progress.watched();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // The running batch is the first unanswered one; later ones wait.
            let Some(running) = progress.owed().running() else {
                notified.await;
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(running.deadline.into()) => {}
                _ = &mut notified => continue,
            }
            let Some(execution) = progress.owed().fire(running.id) else {
                continue;
            };
            let rule = running.rule;
            let fingerprint = execution.fingerprint;
            tracing::info!(rule = &*rule, user = self.user, %fingerprint,
                budget = %humantime::format_duration(running.budget), "cancelling a query that overran its budget");
            self.alerts.raise(AlertEvent::QueryCancelled {
                user: self.user.clone(),
                application: self.application.clone(),
                rule: rule.to_string(),
                fingerprint: fingerprint.to_string(),
                duration: running.budget,
                sample: mask(&execution.text),
            });
            let target = self.target.lock().expect("cancel target lock").clone();
            if let Some(target) = target {
                let generation = generation.clone();
                let sending = self.cancels.sending(&target);
                tokio::spawn(async move {
                    send_cancel(&generation, &target).await;
                    drop(sending);
                });
            }
        }
    }
}

/// Sends a CancelRequest for `target` to its node, as a client would.
async fn send_cancel(
    generation: &crate::generation::Generation,
    target: &crate::cancel::CancelTarget,
) {
    if let Err(e) = generation.node_connector.send_cancel(target).await {
        tracing::warn!(
            node = target.node,
            error = e,
            "could not send a cancel request for a rule"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{CatalogPolicy, ClassificationCache};

    fn guard() -> QueryGuard {
        let config = Config::parse(
            "[warehouse]\nnodes = [\"127.0.0.1:5441\"]\n\n[[rules]]\nname = \"no-secrets\"\ntables = [\"secret\"]\naction = \"reject\"\n",
            "frontend.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        QueryGuard::new(
            Arc::new(config),
            "u",
            "app",
            "db",
            None,
            metrics.clone(),
            Arc::new(QueryStats::new(100)),
            Arc::new(Alerts::new(8, metrics)),
            Arc::new(CancelRegistry::new(1)),
        )
    }

    fn checked(sql: &str, executed: bool) -> Vec<Checked> {
        let cache = ClassificationCache::new(16, CatalogPolicy::default());
        vec![Checked {
            class: cache.lookup(sql).0,
            text: sql.into(),
            executed,
        }]
    }

    fn answer(s: Screened) -> (bool, AnswerEnd) {
        match s {
            Screened::Answer { rejection, end } => (rejection.is_some(), end),
            Screened::Run(_) => panic!("the batch was let through"),
        }
    }

    #[test]
    fn a_rejected_prepare_drops_the_rest_up_to_its_sync() {
        let guard = guard();
        let mut s = Screening::default();
        let secret = checked("SELECT * FROM secret", false);
        // Parse/Describe/Flush: refused; the answer ends with the Sync's.
        assert_eq!(
            answer(s.screen(&guard, &secret, 0)),
            (true, AnswerEnd::AtSync)
        );
        // Bind/Execute/Sync of it: dropped, answered by sluice's ReadyForQuery.
        let run = checked("SELECT * FROM secret", true);
        assert_eq!(answer(s.screen(&guard, &run, 1)), (false, AnswerEnd::Ready));
        // Then batches are judged again.
        let fine = checked("SELECT 1", true);
        assert!(matches!(s.screen(&guard, &fine, 1), Screened::Run(None)));
        assert_eq!(answer(s.screen(&guard, &run, 1)), (true, AnswerEnd::Ready));
    }

    #[test]
    fn a_refusal_after_a_flush_the_node_took_ends_with_the_nodes_answer() {
        let guard = guard();
        let mut s = Screening::default();
        let fine = checked("SELECT 1", false);
        assert!(matches!(s.screen(&guard, &fine, 0), Screened::Run(_)));
        s.sent(0);
        let secret = checked("SELECT * FROM secret", true);
        assert_eq!(
            answer(s.screen(&guard, &secret, 1)),
            (true, AnswerEnd::SyncNode)
        );
        // The next refusal stands alone again.
        assert_eq!(
            answer(s.screen(&guard, &secret, 1)),
            (true, AnswerEnd::Ready)
        );
    }
}
