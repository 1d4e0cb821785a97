//! A retained reality gets its log from its first publish, never from a read: a history read or
//! a subscription from a sequence, a time or the last n pulses on a reality nobody has published
//! to answers an empty result and leaves the data directory as it was. Otherwise any reader could
//! make the bus create (and preallocate) a log per name it makes up.

mod common;

use std::time::Duration;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::history_get::From;
use arqonbus::proto::v1::{start_position::Position, StartPosition};
use arqonbus_client::Outgoing;
use common::{client, history_query, retain, TestBus};
use futures::StreamExt;

fn reality_dir(data_dir: &std::path::Path, reality: &str) -> std::path::PathBuf {
    data_dir
        .join("realities")
        .join(format!("{reality}.reality"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_an_unwritten_reality_creates_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| retain(c, dir.path(), "lab-*", SyncMode::Always));
    let c = client(bus.addr).await;

    // Several names, so both shards own some of them.
    for i in 0..8 {
        let reality = format!("lab-never-{i}");
        let (pulses, end) = c
            .history(history_query(
                &reality,
                Some(From::FromSequence(1)),
                None,
                0,
            ))
            .await
            .unwrap()
            .collect_all()
            .await
            .expect("an empty history, not an error");
        assert!(pulses.is_empty());
        assert_eq!(end.count, 0);
        assert_eq!(end.next_sequence, 1);
        let (pulses, _) = c
            .history(history_query(
                &reality,
                Some(From::FromTimeUnixNanos(1)),
                None,
                0,
            ))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        assert!(pulses.is_empty());
        assert!(
            !reality_dir(dir.path(), &reality).exists(),
            "a history read created {reality}'s log"
        );
    }

    // A subscription replaying from sequence 1 (and from the last 10) catches up at once, creates
    // nothing, and goes live from the first pulse published afterwards: no gap.
    let mut sub = c
        .subscribe_from(
            "lab-never-0",
            ">",
            Some(StartPosition {
                position: Some(Position::FromSequence(1)),
            }),
        )
        .await
        .unwrap();
    let _last = c
        .subscribe_from(
            "lab-never-1",
            ">",
            Some(StartPosition {
                position: Some(Position::LastN(10)),
            }),
        )
        .await
        .unwrap();
    c.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..8 {
        let reality = format!("lab-never-{i}");
        assert!(
            !reality_dir(dir.path(), &reality).exists(),
            "a subscription created {reality}'s log"
        );
    }

    let ack = c
        .publish_acked(Outgoing::new("lab-never-0", "first.pulse.x"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
    assert!(reality_dir(dir.path(), "lab-never-0").exists());
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the live pulse arrives")
        .expect("stream open")
        .expect("a pulse");
    assert_eq!(got.sequence, 1);
}
