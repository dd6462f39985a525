//! Behaviour of the in-memory log.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use korder_log::{Log, LogError, LogOffset, LogReader, MemLog, ReadFrom};

const BOUND: Duration = Duration::from_secs(30);

async fn is_pending<F: Future + Unpin>(fut: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx).is_pending()))
        .await
}

/// Appends get offsets 0, 1, 2, ... and read back in order from any start.
#[tokio::test]
async fn append_and_read_in_order() {
    let log = MemLog::new();
    for i in 0..10u8 {
        assert_eq!(
            log.append(Bytes::from(vec![i])).await.unwrap(),
            LogOffset::new(i64::from(i))
        );
    }
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(4)))
        .await
        .unwrap();
    for i in 4..10u8 {
        let rec = reader.next().await.unwrap();
        assert_eq!(rec.offset, LogOffset::new(i64::from(i)));
        assert_eq!(rec.value, Bytes::from(vec![i]));
    }
    assert_eq!(log.records().len(), 10);
}

/// A reader at the end waits and wakes on the next append.
#[tokio::test]
async fn reader_wakes_on_append() {
    let log = MemLog::new();
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    let mut next = Box::pin(reader.next());
    assert!(is_pending(&mut next).await);
    log.append(Bytes::from_static(b"x")).await.unwrap();
    let rec = tokio::time::timeout(BOUND, next).await.unwrap().unwrap();
    assert_eq!(rec.value, Bytes::from_static(b"x"));
}

/// Injected failures refuse exactly the next N appends and leave no gap in offsets.
#[tokio::test]
async fn injected_failures() {
    let log = MemLog::new();
    log.append(Bytes::from_static(b"a")).await.unwrap();
    log.fail_next_appends(2);
    for _ in 0..2 {
        assert!(matches!(
            log.append(Bytes::from_static(b"no")).await,
            Err(LogError::Unavailable(_))
        ));
    }
    assert_eq!(
        log.append(Bytes::from_static(b"b")).await.unwrap(),
        LogOffset::new(1)
    );
    assert_eq!(
        log.records(),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
}

/// Out-of-range starts and oversize records are refused.
#[tokio::test]
async fn range_and_size_limits() {
    let log = MemLog::with_max_record_bytes(4);
    log.append(Bytes::from_static(b"1234")).await.unwrap();
    assert!(matches!(
        log.append(Bytes::from_static(b"12345")).await,
        Err(LogError::RecordTooLarge { size: 5, max: 4 })
    ));
    assert!(
        log.reader(ReadFrom::Offset(LogOffset::new(1)))
            .await
            .is_ok()
    );
    for bad in [-1, 2] {
        assert!(matches!(
            log.reader(ReadFrom::Offset(LogOffset::new(bad))).await,
            Err(LogError::OffsetOutOfRange {
                oldest: 0,
                next: 1,
                ..
            })
        ));
    }
}

/// Closing refuses appends and ends readers after the records that exist.
#[tokio::test]
async fn close_ends_readers() {
    let log = MemLog::new();
    log.append(Bytes::from_static(b"a")).await.unwrap();
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    log.close();
    assert!(matches!(
        log.append(Bytes::from_static(b"b")).await,
        Err(LogError::Closed)
    ));
    assert_eq!(reader.next().await.unwrap().value, Bytes::from_static(b"a"));
    assert!(matches!(reader.next().await, Err(LogError::Closed)));
}

/// Concurrent appenders get distinct contiguous offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends() {
    let log = MemLog::new();
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut offs = Vec::new();
            for i in 0..25u8 {
                offs.push((
                    log.append(Bytes::from(vec![t, i])).await.unwrap(),
                    vec![t, i],
                ));
            }
            offs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let records = log.records();
    for (k, (off, v)) in all.iter().enumerate() {
        assert_eq!(off.get(), k as i64);
        assert_eq!(records[k].as_ref(), v.as_slice());
    }
}

/// A reader waiting at the end is woken by close and gets Closed.
#[tokio::test]
async fn close_wakes_waiting_reader() {
    let log = MemLog::new();
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    let mut next = Box::pin(reader.next());
    assert!(is_pending(&mut next).await);
    log.close();
    let end = tokio::time::timeout(BOUND, next).await.unwrap();
    assert!(matches!(end, Err(LogError::Closed)), "{end:?}");
}
