//! Replica output: rotation of `output.log` (copy-and-truncate, so the shim's `O_APPEND`
//! descriptor keeps working) and the `AgentLogs` gRPC service, which streams a replica's
//! log to managers in bounded chunks, following it while the process runs.
//!
//! One `AgentLogs` server runs per agent process and serves all of its (virtual) nodes;
//! callers must present the agent token as a bearer token.

use crate::dirs::{parse_file_stem, NodeDirs};
use crate::reconcile::ReplicaKey;
use crate::replica::RunningView;
use crate::wire::pb::agent_logs_server::AgentLogs;
use crate::wire::{constant_time_equal, pb};
use std::collections::BTreeMap;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Largest chunk sent on a log stream.
pub(crate) const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// How often a followed log is checked for new bytes.
pub(crate) const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Log streams served at once by one agent process.
pub(crate) const MAX_CONCURRENT_STREAMS: usize = 64;
/// Replica directories looked at to find a replica's latest generation.
pub(crate) const MAX_REPLICA_DIRS_SCANNED: usize = 4096;

/// Rotates `log` when it is larger than `max_bytes`: `output.log.(k)` moves to
/// `output.log.(k+1)` (the oldest beyond `kept` is removed), the log is copied to
/// `output.log.1` and truncated. Returns whether it rotated. With `kept` 0 the log is
/// only truncated.
pub(crate) fn rotate_if_needed(log: &Path, max_bytes: u64, kept: u32) -> io::Result<bool> {
    let length = match std::fs::metadata(log) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if length <= max_bytes {
        return Ok(false);
    }
    if kept > 0 {
        let _ = std::fs::remove_file(rotated_path(log, kept));
        for index in (1..kept).rev() {
            match std::fs::rename(rotated_path(log, index), rotated_path(log, index + 1)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        std::fs::copy(log, rotated_path(log, 1))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// `output.log.<index>`.
pub(crate) fn rotated_path(log: &Path, index: u32) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{index}"));
    log.with_file_name(name)
}

/// The newest generation of `job`'s `rank` that has a directory on this node.
pub(crate) fn latest_replica(dirs: &NodeDirs, job: u64, rank: u32) -> Option<ReplicaKey> {
    std::fs::read_dir(dirs.replicas_dir())
        .ok()?
        .take(MAX_REPLICA_DIRS_SCANNED)
        .filter_map(|entry| parse_file_stem(entry.ok()?.file_name().to_str()?))
        .filter(|key| key.job == job && key.rank == rank)
        .max_by_key(|key| key.generation)
}

/// What the log service knows of one node: its directories and which replicas run.
#[derive(Clone, Debug)]
pub(crate) struct NodeLogs {
    pub(crate) dirs: NodeDirs,
    pub(crate) running: RunningView,
    /// What callers must present for this node's logs (from its registration).
    pub(crate) log_key: String,
}

impl NodeLogs {
    fn is_running(&self, key: ReplicaKey) -> bool {
        self.running
            .lock()
            .map(|running| running.contains_key(&key))
            .unwrap_or(false)
    }
}

/// The nodes of this agent process, by node id (filled in as they register).
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeRegistry {
    nodes: Arc<RwLock<BTreeMap<u64, NodeLogs>>>,
}

impl NodeRegistry {
    pub(crate) fn insert(&self, node: u64, logs: NodeLogs) {
        if let Ok(mut nodes) = self.nodes.write() {
            nodes.insert(node, logs);
        }
    }

    pub(crate) fn get(&self, node: u64) -> Option<NodeLogs> {
        self.nodes.read().ok()?.get(&node).cloned()
    }
}

/// The `AgentLogs` service.
#[derive(Debug)]
pub(crate) struct LogService {
    registry: NodeRegistry,
    streams: Arc<Semaphore>,
}

impl LogService {
    pub(crate) fn new(registry: NodeRegistry) -> LogService {
        LogService {
            registry,
            streams: Arc::new(Semaphore::new(MAX_CONCURRENT_STREAMS)),
        }
    }

    /// The node's logs, if the caller presents that node's log key. An unknown node and
    /// a wrong key are the same answer, so a caller learns nothing about which nodes
    /// this agent runs.
    fn authenticate<T>(&self, request: &Request<T>, node: u64) -> Result<NodeLogs, Status> {
        let refused = || Status::unauthenticated("a node's log key is required");
        let presented = request
            .metadata()
            .get(crate::wire::AUTHORIZATION_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().strip_prefix("Bearer "))
            .ok_or_else(refused)?;
        let logs = self.registry.get(node).ok_or_else(refused)?;
        if !logs.log_key.is_empty()
            && constant_time_equal(presented.trim().as_bytes(), logs.log_key.as_bytes())
        {
            Ok(logs)
        } else {
            Err(refused())
        }
    }
}

#[tonic::async_trait]
impl AgentLogs for LogService {
    type ReadLogsStream = ReceiverStream<Result<pb::LogChunk, Status>>;

    async fn read_logs(
        &self,
        request: Request<pb::ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        let node = self.authenticate(&request, request.get_ref().node)?;
        let request = request.into_inner();
        let key = latest_replica(&node.dirs, request.job, request.rank).ok_or_else(|| {
            Status::not_found(format!(
                "no output of job {} rank {} on this node",
                request.job, request.rank
            ))
        })?;
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many log streams on this agent"))?;
        let (sender, receiver) = mpsc::channel(4);
        let path = node.dirs.log_path(key);
        tokio::spawn(async move {
            let _permit = permit;
            let start = if request.tail_bytes > 0 {
                Start::Tail(request.tail_bytes)
            } else {
                Start::Offset(request.offset)
            };
            if let Err(status) = stream_log(&path, start, request.follow, &node, key, &sender).await
            {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

enum Start {
    Offset(u64),
    Tail(u64),
}

async fn stream_log(
    path: &Path,
    start: Start,
    follow: bool,
    node: &NodeLogs,
    key: ReplicaKey,
    sender: &mpsc::Sender<Result<pb::LogChunk, Status>>,
) -> Result<(), Status> {
    let io_error = |error: io::Error| Status::internal(format!("reading the log: {error}"));
    let mut file = loop {
        match tokio::fs::File::open(path).await {
            Ok(file) => break file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if !follow || !node.is_running(key) {
                    return Ok(());
                }
                tokio::time::sleep(FOLLOW_POLL_INTERVAL).await;
                if sender.is_closed() {
                    return Ok(());
                }
            }
            Err(error) => return Err(io_error(error)),
        }
    };
    let length = file.metadata().await.map_err(io_error)?.len();
    let mut position = match start {
        Start::Offset(offset) => offset.min(length),
        Start::Tail(tail) => length.saturating_sub(tail),
    };
    let mut buffer = vec![0u8; MAX_CHUNK_BYTES];
    // Once the process has ended, one more pass drains what it wrote last.
    let mut draining = !follow;
    loop {
        file.seek(SeekFrom::Start(position))
            .await
            .map_err(io_error)?;
        let read = file.read(&mut buffer).await.map_err(io_error)?;
        if read > 0 {
            position += read as u64;
            let chunk = pb::LogChunk {
                data: buffer[..read].to_vec(),
            };
            if sender.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
            continue;
        }
        if draining {
            return Ok(());
        }
        if !node.is_running(key) {
            draining = true;
            continue;
        }
        tokio::time::sleep(FOLLOW_POLL_INTERVAL).await;
        if sender.is_closed() {
            return Ok(());
        }
        // Rotated (truncated) meanwhile: continue from its new start.
        let length = file.metadata().await.map_err(io_error)?.len();
        if length < position {
            position = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirs::LOG_FILE_NAME;

    #[test]
    fn rotation_copies_truncates_and_keeps_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE_NAME);
        std::fs::write(&log, "small").unwrap();
        assert!(!rotate_if_needed(&log, 10, 2).unwrap());
        for round in 0..4 {
            std::fs::write(&log, format!("round {round} with enough bytes")).unwrap();
            assert!(rotate_if_needed(&log, 10, 2).unwrap());
            assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        }
        assert_eq!(
            std::fs::read_to_string(rotated_path(&log, 1)).unwrap(),
            "round 3 with enough bytes"
        );
        assert_eq!(
            std::fs::read_to_string(rotated_path(&log, 2)).unwrap(),
            "round 2 with enough bytes"
        );
        assert!(!rotated_path(&log, 3).exists());
        assert!(!rotate_if_needed(&dir.path().join("absent"), 10, 2).unwrap());
    }

    #[test]
    fn an_appending_writer_continues_at_the_start_after_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE_NAME);
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(rotate_if_needed(&log, 50, 1).unwrap());
        writer.write_all(b"after").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"after");
        assert_eq!(std::fs::read(rotated_path(&log, 1)).unwrap().len(), 100);
    }

    #[test]
    fn the_latest_generation_of_a_rank_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        for stem in ["7-0-1", "7-0-3", "7-1-9", "8-0-5", "junk"] {
            std::fs::create_dir(dirs.replicas_dir().join(stem)).unwrap();
        }
        let found = latest_replica(&dirs, 7, 0).unwrap();
        assert_eq!((found.job, found.rank, found.generation), (7, 0, 3));
        assert_eq!(latest_replica(&dirs, 9, 0), None);
    }
}
