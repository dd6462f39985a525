//! Threads: an embedded log owns no thread; every log of the process is written by
//! the shared writer threads. (Alone in its test binary, so that no other test's
//! threads are counted.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use korder_log::{EmbeddedLog, EmbeddedLogOptions, Log, LogOffset, WRITER_THREADS};

const LOGS: usize = 200;

/// Threads of this process, from /proc/self/task.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// 200 open logs, each with appends acknowledged (all at once, so the writers are
/// busy together), add at most the shared writer threads, not a thread per log.
#[test]
fn two_hundred_logs_do_not_add_two_hundred_threads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let before = threads();
    let logs: Vec<EmbeddedLog> = (0..LOGS)
        .map(|i| {
            EmbeddedLog::open(
                dir.path().join(format!("ch{i}")),
                EmbeddedLogOptions::default(),
            )
            .unwrap()
        })
        .collect();
    rt.block_on(async {
        let acks: Vec<_> = logs
            .iter()
            .flat_map(|log| (0..3).map(|r| log.append(Bytes::from(vec![b'x'; 100 + r]))))
            .collect();
        for (i, ack) in acks.into_iter().enumerate() {
            assert_eq!(ack.await.unwrap(), LogOffset::new((i % 3) as i64));
        }
    });
    let during = threads();
    assert!(
        during.saturating_sub(before) <= WRITER_THREADS,
        "{LOGS} open logs added {} threads (before {before}, now {during})",
        during.saturating_sub(before)
    );
    rt.block_on(async {
        for log in &logs {
            log.close().await;
        }
    });
    assert!(threads() <= during, "closing the logs starts no thread");
}
