use super::*;
use crate::upstream::limits::CounterKind;

const ONE: Turn = Turn { flow: 0, weight: 1 };

fn plan() -> PacingPlan {
    PacingPlan::new(
        5,
        Duration::from_secs(10),
        Duration::from_millis(100),
        1,
        CounterKind::Approximated,
    )
}

fn pacer(max_len: usize) -> Arc<Pacer> {
    Pacer::start("test", plan(), max_len, Arc::new(Metrics::new()))
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

#[tokio::test(start_paused = true)]
async fn slots_are_granted_one_period_apart() {
    let pacer = pacer(16);
    let start = Instant::now();
    let mut grants = Vec::new();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let pacer = Arc::clone(&pacer);
            tokio::spawn(async move {
                pacer
                    .acquire(Priority::Interactive, far(), ONE)
                    .await
                    .unwrap();
                Instant::now()
            })
        })
        .collect();
    for task in tasks {
        grants.push(task.await.unwrap() - start);
    }
    grants.sort();

    let period = plan().period;
    assert_eq!(
        grants[0], period,
        "the first slot waits out the spent burst"
    );
    for pair in grants.windows(2) {
        assert!(pair[1] - pair[0] >= period, "{grants:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_mutating_call_overtakes_queued_reads() {
    let pacer = pacer(16);
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, priority) in [
        Priority::Background,
        Priority::Interactive,
        Priority::Mutating,
    ]
    .into_iter()
    .enumerate()
    {
        let pacer = Arc::clone(&pacer);
        let order_tx = order_tx.clone();
        tokio::spawn(async move {
            pacer.acquire(priority, far(), ONE).await.unwrap();
            order_tx.send(priority).unwrap();
        });
        if i == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1)).await;

    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(order_rx.recv().await.unwrap());
    }
    assert_eq!(
        order,
        [
            Priority::Mutating,
            Priority::Interactive,
            Priority::Background
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_start_before_its_deadline_is_refused_at_once() {
    let pacer = pacer(16);
    let _first = tokio::spawn({
        let pacer = Arc::clone(&pacer);
        async move { pacer.acquire(Priority::Interactive, far(), ONE).await }
    });
    tokio::task::yield_now().await;

    let deadline = Instant::now() + Duration::from_secs(4);
    let refused = pacer
        .acquire(Priority::Interactive, deadline, ONE)
        .await
        .unwrap_err();
    match refused {
        Refusal::DeadlineUnreachable { retry_after } => {
            assert_eq!(
                retry_after,
                plan().period * 2,
                "one slot pending, one queued ahead"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_frees_its_place_and_gets_no_slot() {
    let pacer = pacer(1);
    let queued = tokio::spawn({
        let pacer = Arc::clone(&pacer);
        async move { pacer.acquire(Priority::Interactive, far(), ONE).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(pacer.queued(), 1);

    queued.abort();
    let _ = queued.await;
    assert_eq!(pacer.queued(), 0, "the abandoned place is free");

    let slot = pacer.acquire(Priority::Interactive, far(), ONE).await;
    assert!(slot.is_ok(), "the next caller takes the slot: {slot:?}");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_with_retry_after() {
    let pacer = pacer(2);
    for _ in 0..2 {
        let pacer = Arc::clone(&pacer);
        tokio::spawn(async move { pacer.acquire(Priority::Interactive, far(), ONE).await });
    }
    tokio::task::yield_now().await;

    let refused = pacer
        .acquire(Priority::Interactive, far(), ONE)
        .await
        .unwrap_err();
    assert!(matches!(refused, Refusal::QueueFull { retry_after } if retry_after > Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_block_refuses_queued_and_new_calls_until_the_cool_down_ends() {
    let pacer = pacer(8);
    let queued = tokio::spawn({
        let pacer = Arc::clone(&pacer);
        async move { pacer.acquire(Priority::Interactive, far(), ONE).await }
    });
    tokio::task::yield_now().await;

    pacer.block_until(Instant::now() + Duration::from_secs(60));
    let queued = queued.await.unwrap().unwrap_err();
    assert!(
        matches!(queued, Refusal::Blocked { retry_after } if retry_after == Duration::from_secs(60))
    );
    let new = pacer
        .acquire(Priority::Mutating, far(), ONE)
        .await
        .unwrap_err();
    assert!(matches!(new, Refusal::Blocked { .. }));

    tokio::time::sleep(Duration::from_secs(61)).await;
    let probing = pacer
        .acquire(Priority::Interactive, far(), ONE)
        .await
        .unwrap_err();
    assert!(
        matches!(probing, Refusal::Blocked { .. }),
        "closed until a probe passes"
    );

    pacer.probe_slot().await;
    pacer.reopen();
    assert!(
        pacer
            .acquire(Priority::Interactive, far(), ONE)
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn closing_refuses_everything_queued() {
    let pacer = pacer(8);
    let queued = tokio::spawn({
        let pacer = Arc::clone(&pacer);
        async move { pacer.acquire(Priority::Interactive, far(), ONE).await }
    });
    tokio::task::yield_now().await;

    pacer.close();
    assert_eq!(queued.await.unwrap().unwrap_err(), Refusal::ShuttingDown);
    assert_eq!(
        pacer
            .acquire(Priority::Mutating, far(), ONE)
            .await
            .unwrap_err(),
        Refusal::ShuttingDown
    );
}

#[tokio::test(start_paused = true)]
async fn a_flooding_caller_delays_a_quiet_one_by_one_turn_not_its_whole_backlog() {
    let pacer = pacer(64);
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..10 {
        let (pacer, order_tx) = (Arc::clone(&pacer), order_tx.clone());
        tokio::spawn(async move {
            pacer
                .acquire(Priority::Interactive, far(), Turn { flow: 1, weight: 1 })
                .await
                .unwrap();
            order_tx.send(("flood", i)).unwrap();
        });
    }
    tokio::task::yield_now().await;
    let quiet = Arc::clone(&pacer);
    tokio::spawn(async move {
        quiet
            .acquire(Priority::Interactive, far(), Turn { flow: 2, weight: 1 })
            .await
            .unwrap();
        order_tx.send(("quiet", 0)).unwrap();
    });

    let mut order = Vec::new();
    for _ in 0..11 {
        order.push(order_rx.recv().await.unwrap().0);
    }
    let quiet_turn = order.iter().position(|who| *who == "quiet").unwrap();
    assert_eq!(
        quiet_turn, 1,
        "served right after the flood's first call: {order:?}"
    );
}
