//! The access log: every flow record as Hubble-shaped JSON lines (the same lines as `/flows`) in a
//! file or on stdout, written by one task fed from the flow bus.
//!
//! The data path never waits for the disk: the bus never blocks its senders, so while a write is
//! slow this task falls behind and skips ahead, writing `{"lost":N}` in place of the N records it
//! missed (also counted in `tlsgate_flow_records_lost_total`).
//!
//! Rotation is left to the usual tools: the file is opened append-only (created 0640), and SIGUSR1
//! makes this task reopen it by name, as logrotate's `create` + `postrotate kill -USR1` expects.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::{FlowRecord, FlowSubscriber, hubble};
use crate::config::AccessLogTarget;
use crate::metrics::Metrics;

/// Records written with one `write_all`: bounds the batch buffer (a record renders to a few KiB
/// at most, so a batch stays under about a MiB).
const MAX_BATCH_RECORDS: usize = 256;
/// Mode of a newly created log file: owner writes, group (e.g. `adm`) reads, others nothing; the
/// URLs and headers in it are private.
pub const FILE_MODE: u32 = 0o640;
/// How long the final flush may take at shutdown before the last records are given up.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Where the lines go, and the open handle (none while the file cannot be opened).
struct Writer {
    target: AccessLogTarget,
    sink: Option<Sink>,
}

impl Writer {
    async fn open(target: AccessLogTarget) -> Self {
        let mut writer = Self { target, sink: None };
        writer.reopen().await;
        writer
    }

    /// (Re)opens the target by name; on failure keeps the previous handle (if any) so records keep
    /// going somewhere, and says why.
    async fn reopen(&mut self) {
        let path = match &self.target {
            AccessLogTarget::Stdout => {
                self.sink = Some(Box::new(tokio::io::stdout()));
                return;
            }
            AccessLogTarget::File(path) => path.clone(),
        };
        match open_append(&path).await {
            Ok(file) => {
                if let Some(mut old) = self.sink.replace(Box::new(file)) {
                    let _ = old.flush().await;
                }
                tracing::info!(path = %path.display(), "access log opened");
            }
            Err(e) => tracing::warn!(path = %path.display(), "cannot open the access log: {e}"),
        }
    }

    /// Writes `batch`; `false` when there is no handle or the write failed (the batch is lost).
    async fn write(&mut self, batch: &[u8]) -> bool {
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        let result = async {
            sink.write_all(batch).await?;
            sink.flush().await
        }
        .await;
        if let Err(e) = &result {
            tracing::warn!("writing the access log: {e}");
        }
        result.is_ok()
    }
}

async fn open_append(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .await
}

/// Writes every record from `rx` to `target` until `stop`, then what is already queued.
/// `rx` must be subscribed before traffic starts so no record is missed.
pub async fn run(
    target: AccessLogTarget,
    mut rx: FlowSubscriber,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // Registered before the first record is taken, so a SIGUSR1 sent after a logged request
    // always reopens rather than killing the process.
    let mut reopen = match signal(SignalKind::user_defined1()) {
        Ok(reopen) => Some(reopen),
        Err(e) => {
            tracing::warn!("access log: SIGUSR1 cannot be handled ({e}); no reopen on rotation");
            None
        }
    };
    let mut writer = Writer::open(target).await;
    let mut batch = Batch::default();
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            Some(()) = recv_signal(&mut reopen) => {
                writer.reopen().await;
                continue;
            }
            () = stop.cancelled() => break,
        };
        let more = take(next, &mut batch, &metrics) && drain(&mut rx, &mut batch, &metrics);
        write_batch(&mut writer, &mut batch, &metrics).await;
        if !more {
            return;
        }
    }
    // Shutting down: what the bus still holds for us, then the last flush, bounded in time.
    drain(&mut rx, &mut batch, &metrics);
    let last = write_batch(&mut writer, &mut batch, &metrics);
    if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, last)
        .await
        .is_err()
    {
        tracing::warn!(
            "access log: the last records were not written within {FINAL_FLUSH_TIMEOUT:?}"
        );
    }
}

async fn recv_signal(reopen: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match reopen {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Lines to write together, and how many records they hold.
#[derive(Default)]
struct Batch {
    text: String,
    records: u64,
}

/// Appends the lines of one bus result to `batch`; `false` when the bus is closed.
fn take(next: Result<Arc<FlowRecord>, RecvError>, batch: &mut Batch, metrics: &Metrics) -> bool {
    match next {
        Ok(record) => {
            batch.text.push_str(&hubble::ndjson(&record));
            batch.records += 1;
        }
        Err(RecvError::Lagged(n)) => {
            metrics.count_lost(n);
            batch.text.push_str(&lost_line(n));
        }
        Err(RecvError::Closed) => return false,
    }
    true
}

/// Appends what is already queued, at most [`MAX_BATCH_RECORDS`] results in all; `false` when
/// the bus is closed.
fn drain(rx: &mut FlowSubscriber, batch: &mut Batch, metrics: &Metrics) -> bool {
    for _ in 1..MAX_BATCH_RECORDS {
        let next = match rx.try_recv() {
            Ok(record) => Ok(record),
            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(TryRecvError::Closed) => return false,
            Err(TryRecvError::Empty) => return true,
        };
        take(next, batch, metrics);
    }
    true
}

async fn write_batch(writer: &mut Writer, batch: &mut Batch, metrics: &Metrics) {
    if batch.text.is_empty() {
        return;
    }
    if !writer.write(batch.text.as_bytes()).await {
        metrics.count_lost(batch.records);
    }
    *batch = Batch::default();
}

/// `{"lost":N}` and a newline: N records were skipped because this writer fell behind.
fn lost_line(n: u64) -> String {
    format!("{{\"lost\":{n}}}\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::flow::Flows;

    fn record(port: u16) -> FlowRecord {
        FlowRecord {
            name: Some("www.example.com".into()),
            bytes_from_client: 1,
            bytes_to_client: 2,
            ..crate::flow::tests::record(port)
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[tokio::test]
    async fn writes_each_record_as_a_hubble_line_into_a_0640_file_and_flushes_at_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flows.log");
        let flows = Flows::new(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            AccessLogTarget::File(path.clone()),
            flows.subscribe(),
            flows.metrics().clone(),
            stop.clone(),
        ));
        for port in [1000, 1001] {
            flows.emit(record(port), None);
        }
        stop.cancel();
        task.await.expect("the task ends");
        let flows = lines(&path);
        let ports: Vec<_> = flows
            .iter()
            .map(|f| f["flow"]["l4"]["TCP"]["source_port"].clone())
            .collect();
        assert_eq!(ports, [1000, 1001]);
        assert_eq!(flows[0]["flow"]["destination_names"][0], "www.example.com");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE & !umask());
    }

    #[tokio::test]
    async fn a_writer_that_fell_behind_writes_how_many_records_it_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flows.log");
        let flows = Flows::new(2);
        let rx = flows.subscribe();
        // Five records into a bus of two before the writer runs: it lags by three.
        for port in 1..=5 {
            flows.emit(record(port), None);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            AccessLogTarget::File(path.clone()),
            rx,
            flows.metrics().clone(),
            stop.clone(),
        ));
        // Closing the bus ends the task once it has written everything.
        drop(flows);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends when the bus closes")
            .expect("no panic");
        let flows = lines(&path);
        assert_eq!(flows[0], serde_json::json!({"lost": 3}));
        let ports: Vec<_> = flows[1..]
            .iter()
            .map(|f| f["flow"]["l4"]["TCP"]["source_port"].clone())
            .collect();
        assert_eq!(ports, [4, 5]);
    }

    /// The process umask, read without changing it (from /proc).
    fn umask() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }
}
