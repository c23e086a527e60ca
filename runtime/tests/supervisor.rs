//! The Supervisor against real ractor actors, mirroring OTP's supervisor_SUITE: restart types ×
//! exit reasons × strategies, intensity, ordered shutdown, backoff, start failures, dynamic
//! children and the tree snapshot.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ALL_EXITS, ExitHow, Host, Log, Worker, WorkerMsg, eventually};
use corral_runtime::{
    Backoff, BoundedRef, ChildSpec, NodeKind, Probe, Restart, Shutdown, Started, Status, Strategy,
    Supervisor, SupervisorError, SupervisorRef, SupervisorSpec, TreeNode,
};
use ractor::{Actor, ActorRef};

fn worker(id: &str, log: &Log) -> ChildSpec {
    let (id2, log2) = (id.to_string(), log.clone());
    ChildSpec::actor(id, move || (Worker::new(&id2, &log2), ()))
}

async fn child_ref(sup: &SupervisorRef, id: &str) -> ActorRef<WorkerMsg> {
    let tree = sup.tree().await.unwrap();
    let node = tree.find(id).unwrap_or_else(|| panic!("no child {id}"));
    assert_eq!(node.status, Status::Running, "{id} not running: {node:?}");
    // The tree names the actor; find the live cell among the supervisor's ractor children.
    let actor = node.actor.clone().unwrap();
    let cell = sup
        .cell()
        .get_children()
        .into_iter()
        .find(|c| c.get_id().to_string() == actor)
        .unwrap();
    ActorRef::from(cell)
}

fn actor_of(tree: &TreeNode, id: &str) -> Option<String> {
    tree.find(id).and_then(|n| n.actor.clone())
}

/// The matrix: child `b` has restart type `restart` and exits with `how` under `strategy`;
/// `a` and `c` are permanent. The right children restart, the others keep their actor.
async fn matrix_case(strategy: Strategy, restart: Restart, how: ExitHow) {
    let log = Log::default();
    let spec = SupervisorSpec::new("matrix")
        .strategy(strategy)
        .intensity(10, Duration::from_secs(5))
        .child(worker("a", &log))
        .child(worker("b", &log).restart(restart))
        .child(worker("c", &log));
    let (sup, _) = Supervisor::start(spec).await.unwrap();
    let before = sup.tree().await.unwrap();
    let b = child_ref(&sup, "b").await;
    b.send_message(WorkerMsg::Exit(how)).unwrap();

    let abnormal = matches!(how, ExitHow::Panic | ExitHow::Err);
    let restarts = match restart {
        Restart::Permanent => true,
        Restart::Transient => abnormal,
        Restart::Temporary => false,
    };
    let expect_restarted: &[&str] = match (restarts, strategy) {
        (false, _) => &[],
        (true, Strategy::OneForOne) => &["b"],
        (true, Strategy::OneForAll) => &["a", "b", "c"],
        (true, Strategy::RestForOne) => &["b", "c"],
    };
    let case = format!("{strategy:?} × {restart:?} × {how:?}");
    if restarts {
        eventually(&case, || log.count("start:b") == 2).await;
        // Let any (wrong) extra restarts surface before asserting.
        tokio::time::sleep(Duration::from_millis(20)).await;
    } else {
        eventually(&case, || log.count("drop:b") == 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = sup.tree().await.unwrap();
    for id in ["a", "b", "c"] {
        let restarted = expect_restarted.contains(&id);
        assert_eq!(
            log.count(&format!("start:{id}")),
            if restarted { 2 } else { 1 },
            "{case}: starts of {id}: {:?}",
            log.entries()
        );
        if id != "b" && !restarted {
            assert_eq!(
                actor_of(&before, id),
                actor_of(&after, id),
                "{case}: {id} touched"
            );
        }
    }
    let b_node = after.find("b");
    match (restarts, restart) {
        (true, _) => assert_eq!(b_node.unwrap().status, Status::Running, "{case}"),
        (false, Restart::Temporary) => assert!(b_node.is_none(), "{case}: temporary kept"),
        (false, _) => assert_eq!(b_node.unwrap().status, Status::Stopped, "{case}"),
    }
    sup.stop(Some(Duration::from_secs(5))).await.unwrap();
    for id in ["a", "b", "c"] {
        let expected = log.count(&format!("start:{id}"));
        assert_eq!(
            log.count(&format!("drop:{id}")),
            expected,
            "{case}: every State dropped"
        );
    }
}

#[tokio::test]
async fn otp_matrix_restart_type_by_exit_reason_by_strategy() {
    for strategy in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        for restart in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
            for how in ALL_EXITS {
                matrix_case(strategy, restart, how).await;
            }
        }
    }
}

async fn spawn_host(log: &Log) -> ActorRef<()> {
    let (host, _) = Actor::spawn(None, Host { log: log.clone() }, ())
        .await
        .unwrap();
    host
}

#[tokio::test]
async fn intensity_n_restarts_pass_and_n_plus_one_escalate() {
    let log = Log::default();
    let host_log = Log::default();
    let host = spawn_host(&host_log).await;
    let spec = SupervisorSpec::new("intense")
        .intensity(3, Duration::from_secs(60))
        .child(worker("a", &log))
        .child(worker("w", &log));
    let (sup, _) = Supervisor::start_linked(spec, host.get_cell())
        .await
        .unwrap();
    for n in 1..=3 {
        child_ref(&sup, "w")
            .await
            .send_message(WorkerMsg::Exit(ExitHow::Err))
            .unwrap();
        eventually("restart", || log.count("start:w") == n + 1).await;
    }
    assert!(
        host_log.entries().is_empty(),
        "3 restarts must not escalate"
    );
    child_ref(&sup, "w")
        .await
        .send_message(WorkerMsg::Exit(ExitHow::Panic))
        .unwrap();
    eventually("escalation", || !host_log.entries().is_empty()).await;
    let e = host_log.entries();
    assert!(
        e[0].starts_with("failed:") && e[0].contains("intensity"),
        "{e:?}"
    );
    // Escalation stopped the other children gracefully, in order, and never looped.
    assert_eq!(log.count("start:w"), 4);
    assert!(log.position("stop:a").is_some(), "{:?}", log.entries());
    assert_eq!(log.count("drop:a"), 1);
    host.stop(None);
}

#[tokio::test(start_paused = true)]
async fn intensity_window_slides() {
    let log = Log::default();
    let host_log = Log::default();
    let host = spawn_host(&host_log).await;
    let spec = SupervisorSpec::new("slide")
        .intensity(2, Duration::from_secs(5))
        .child(worker("w", &log));
    let (sup, _) = Supervisor::start_linked(spec, host.get_cell())
        .await
        .unwrap();
    for round in 0..4 {
        for _ in 0..2 {
            let n = log.count("start:w");
            child_ref(&sup, "w")
                .await
                .send_message(WorkerMsg::Exit(ExitHow::Err))
                .unwrap();
            eventually("restart", || log.count("start:w") == n + 1).await;
        }
        // Two restarts per 6 s never exceed 2 in 5 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(host_log.entries().is_empty(), "round {round}: escalated");
    }
    assert_eq!(
        sup.tree().await.unwrap().find("w").unwrap().restarts_total,
        8
    );
    sup.stop(None).await.unwrap();
    host.stop(None);
}

#[tokio::test]
async fn shutdown_is_reverse_order_and_kills_a_child_that_ignores_stop() {
    let log = Log::default();
    let spec = SupervisorSpec::new("ordered")
        .child(worker("a", &log))
        .child(worker("b", &log).shutdown(Shutdown::Timeout(Duration::from_millis(100))))
        .child(worker("c", &log))
        .child(worker("d", &log).shutdown(Shutdown::BrutalKill));
    let (sup, _) = Supervisor::start(spec).await.unwrap();
    assert_eq!(
        log.entries()
            .iter()
            .filter(|e| e.starts_with("start:"))
            .cloned()
            .collect::<Vec<_>>(),
        ["start:a", "start:b", "start:c", "start:d"]
    );
    child_ref(&sup, "b")
        .await
        .send_message(WorkerMsg::Block(Duration::from_secs(3600)))
        .unwrap();
    child_ref(&sup, "d")
        .await
        .send_message(WorkerMsg::Block(Duration::from_secs(3600)))
        .unwrap();
    eventually("b and d block", || {
        log.count("blocking:b") == 1 && log.count("blocking:d") == 1
    })
    .await;
    let t = std::time::Instant::now();
    sup.stop(Some(Duration::from_secs(10))).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t.elapsed()
    );
    let order = |e: &str| {
        log.position(e)
            .unwrap_or_else(|| panic!("no {e}: {:?}", log.entries()))
    };
    // d is brutally killed (no post_stop), c stops, b ignores stop and is killed, a stops.
    assert_eq!(log.count("stop:d"), 0);
    assert_eq!(log.count("stop:b"), 0);
    assert!(order("killed:d") < order("stop:c"));
    assert!(order("stop:c") < order("killed:b"));
    assert!(order("killed:b") < order("stop:a"));
    // Every State's Drop ran, including the killed ones (a killed child's State travels in its
    // termination event, so it is dropped when the supervisor drops that event).
    eventually("all states dropped", || {
        ["a", "b", "c", "d"]
            .iter()
            .all(|id| log.count(&format!("drop:{id}")) == 1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_caps_shows_restarting_and_resets_after_stable_run() {
    let log = Log::default();
    let w = Worker::new("w", &log);
    let z = Duration::ZERO;
    // Crash at once four times, then run 2 s (longer than reset_after), then crash at once.
    w.lifetimes
        .lock()
        .extend([z, z, z, z, Duration::from_secs(2), z, z]);
    let (lifetimes, fail) = (w.lifetimes.clone(), w.fail_starts.clone());
    let log2 = log.clone();
    let spec = ChildSpec::actor("w", move || {
        let mut w = Worker::new("w", &log2);
        w.lifetimes = lifetimes.clone();
        w.fail_starts = fail.clone();
        (w, ())
    })
    .backoff(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        multiplier: 2.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(1),
    });
    let (sup, _) = Supervisor::start(
        SupervisorSpec::new("backoff")
            .intensity(100, Duration::from_secs(60))
            .child(spec),
    )
    .await
    .unwrap();
    // The first crash is immediate: the child is visibly waiting for its restart.
    eventually("first crash", || log.count("drop:w") == 1).await;
    assert_eq!(
        sup.tree().await.unwrap().find("w").unwrap().status,
        Status::Restarting
    );
    eventually("all starts", || log.count("start:w") == 8).await;
    let t = log.times("start:w");
    let gaps: Vec<u128> = t.windows(2).map(|p| (p[1] - p[0]).as_millis()).collect();
    // 100, 200, 400, 400 (capped), then a 2 s run + reset → 100, 2000+100 … then 200.
    assert_eq!(
        gaps,
        vec![100, 200, 400, 400, 2100, 200, 400],
        "gaps {gaps:?}"
    );
    sup.stop(None).await.unwrap();
}

#[tokio::test]
async fn a_failing_start_fails_the_supervisor_start_and_undoes_the_others() {
    let log = Log::default();
    let bad = Worker::new("bad", &log);
    *bad.fail_starts.lock() = (0, 1);
    let fail = bad.fail_starts.clone();
    let log2 = log.clone();
    let spec = SupervisorSpec::new("boot")
        .child(worker("a", &log))
        .child(ChildSpec::actor("bad", move || {
            let mut w = Worker::new("bad", &log2);
            w.fail_starts = fail.clone();
            (w, ())
        }))
        .child(worker("c", &log));
    let err = Supervisor::start(spec).await.unwrap_err();
    assert!(err.to_string().contains("bad"), "{err}");
    assert_eq!(log.count("start:c"), 0);
    eventually("a stopped", || {
        log.count("stop:a") == 1 && log.count("drop:a") == 1
    })
    .await;
}

#[tokio::test]
async fn failed_restarts_count_against_intensity_and_escalate() {
    let log = Log::default();
    let host_log = Log::default();
    let host = spawn_host(&host_log).await;
    let proto = Worker::new("w", &log);
    // First start works, every later start fails in pre_start.
    *proto.fail_starts.lock() = (1, u32::MAX);
    let fail = proto.fail_starts.clone();
    let log2 = log.clone();
    let spec = SupervisorSpec::new("refuse")
        .intensity(3, Duration::from_secs(60))
        .child(ChildSpec::actor("w", move || {
            let mut w = Worker::new("w", &log2);
            w.fail_starts = fail.clone();
            (w, ())
        }));
    let (sup, _) = Supervisor::start_linked(spec, host.get_cell())
        .await
        .unwrap();
    child_ref(&sup, "w")
        .await
        .send_message(WorkerMsg::Crash)
        .unwrap();
    eventually("escalation", || !host_log.entries().is_empty()).await;
    assert!(
        host_log.entries()[0].contains("intensity"),
        "{:?}",
        host_log.entries()
    );
    // 1 good start + 3 failed attempts; never a busy loop.
    assert_eq!(log.count("attempt:w"), 4, "{:?}", log.entries());
    host.stop(None);
}

#[tokio::test]
async fn dynamic_children_add_remove_duplicate_bound_and_temporary_forgotten() {
    let log = Log::default();
    let (sup, _) = Supervisor::start(SupervisorSpec::new("dyn").max_children(3))
        .await
        .unwrap();
    for id in ["s1", "s2"] {
        sup.start_child(worker(id, &log).restart(Restart::Temporary))
            .await
            .unwrap();
    }
    assert!(matches!(
        sup.start_child(worker("s1", &log)).await,
        Err(SupervisorError::AlreadyPresent(_))
    ));
    sup.start_child(worker("s3", &log)).await.unwrap();
    // Driving past the bound is a clear error, not growth.
    match sup.start_child(worker("s4", &log)).await {
        Err(e @ SupervisorError::TooManyChildren { max: 3 }) => {
            assert_eq!(e.to_string(), "supervisor is full (3 children)")
        }
        other => panic!("expected TooManyChildren, got {other:?}"),
    }
    assert_eq!(log.count("start:s4"), 0);
    sup.remove_child("s2").await.unwrap();
    assert!(matches!(
        sup.remove_child("s2").await,
        Err(SupervisorError::NotFound(_))
    ));
    // A temporary child that exits is forgotten; a permanent one restarts.
    child_ref(&sup, "s1")
        .await
        .send_message(WorkerMsg::Exit(ExitHow::Panic))
        .unwrap();
    eventually("s1 forgotten", || log.count("drop:s1") == 1).await;
    let tree = sup.tree().await.unwrap();
    let ids: Vec<_> = tree.children.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["s3"]);
    // terminate keeps the spec; restart_child brings it back; delete forgets it.
    sup.terminate_child("s3").await.unwrap();
    assert_eq!(
        sup.tree().await.unwrap().find("s3").unwrap().status,
        Status::Stopped
    );
    sup.restart_child("s3").await.unwrap();
    assert!(matches!(
        sup.delete_child("s3").await,
        Err(SupervisorError::Running(_))
    ));
    sup.terminate_child("s3").await.unwrap();
    sup.delete_child("s3").await.unwrap();
    assert!(sup.tree().await.unwrap().children.is_empty());
    sup.stop(None).await.unwrap();
}

/// A worker behind a BoundedRef, for the tree's mailbox gauge.
struct Sink;
impl Actor for Sink {
    type Msg = corral_runtime::Permit;
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        _permit: Self::Msg,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

#[tokio::test]
async fn tree_shows_nested_supervisors_status_restarts_and_mailbox_depth() {
    let log = Log::default();
    let bounded: Arc<parking_lot::Mutex<Option<BoundedRef<corral_runtime::Permit>>>> =
        Default::default();
    let slot = bounded.clone();
    let sink = ChildSpec::new("sink", move |sup| {
        let slot = slot.clone();
        async move {
            let (r, _) = Actor::spawn_linked(None, Sink, (), sup).await?;
            let b = BoundedRef::new(r.clone(), 2);
            let probe = Probe {
                mailbox: Some(b.gauge()),
                lag: None,
            };
            *slot.lock() = Some(b);
            Ok(Started {
                cell: r.get_cell(),
                probe,
            })
        }
    })
    .shutdown(Shutdown::BrutalKill);
    let inner = SupervisorSpec::new("sessions")
        .child(worker("s1", &log))
        .child(worker("s2", &log));
    let spec = SupervisorSpec::new("corral")
        .intensity(5, Duration::from_secs(5))
        .child(worker("persister", &log))
        .child(Supervisor::child_spec("sessions", inner))
        .child(sink);
    let (sup, _) = Supervisor::start(spec).await.unwrap();
    let b = bounded.lock().clone().unwrap();
    for _ in 0..3 {
        // one taken by the handler, two queued, then full
        if b.try_send(|p| p).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child_ref(&sup, "persister")
        .await
        .send_message(WorkerMsg::Exit(ExitHow::Err))
        .unwrap();
    eventually("persister restart", || log.count("start:persister") == 2).await;
    let tree = sup.tree().await.unwrap();
    let json = serde_json::to_string(&tree).unwrap();
    let back: TreeNode = serde_json::from_str(&json).unwrap();
    assert_eq!(back, tree);
    assert_eq!(tree.id, "corral");
    assert_eq!(tree.children.len(), 3);
    let sessions = tree.find("sessions").unwrap();
    assert_eq!(sessions.kind, NodeKind::Supervisor);
    assert_eq!(sessions.children.len(), 2);
    assert_eq!(tree.find("s2").unwrap().status, Status::Running);
    let p = tree.find("persister").unwrap();
    assert_eq!((p.restarts_total, p.restarts_in_window), (1, 1));
    assert!(p.last_exit.as_deref().unwrap().contains("fails on purpose"));
    let sink = tree.find("sink").unwrap();
    assert_eq!(sink.mailbox_depth, Some(2));
    sup.stop(None).await.unwrap();
    // Stopping the root stopped the nested supervisor's children too.
    assert_eq!(log.count("stop:s1"), 1);
    assert_eq!(log.count("stop:s2"), 1);
}

/// OTP: a dynamic supervisor's temporary children (simple_one_for_one's) are terminated at
/// once, each within its own shutdown spec — not one after another (five children that each
/// use their whole 300 ms took 1.5 s; a thousand agent sessions with a 5 s grace, an hour).
#[tokio::test]
async fn temporary_children_are_stopped_at_once() {
    let log = Log::default();
    let (sup, _) = Supervisor::start(SupervisorSpec::new("dynamic"))
        .await
        .unwrap();
    let ids = ["t1", "t2", "t3", "t4", "t5"];
    for id in ids {
        sup.start_child(
            worker(id, &log)
                .restart(Restart::Temporary)
                .shutdown(Shutdown::Timeout(Duration::from_millis(300))),
        )
        .await
        .unwrap();
        child_ref(&sup, id)
            .await
            .send_message(WorkerMsg::Block(Duration::from_secs(3600)))
            .unwrap();
    }
    eventually("every worker blocks", || {
        ids.iter()
            .all(|id| log.count(&format!("blocking:{id}")) == 1)
    })
    .await;
    let t = std::time::Instant::now();
    sup.stop(Some(Duration::from_secs(10))).await.unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_millis(900), "stop took {took:?}");
    for id in ids {
        assert_eq!(log.count(&format!("killed:{id}")), 1, "{:?}", log.entries());
    }
}
