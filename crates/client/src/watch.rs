//! [`CorralClient::watch`]: the event stream, resumed across replica failures.

use crate::client::CorralClient;
use crate::error::ClientError;
use crate::pb;
use futures::stream::{BoxStream, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codec::Streaming;
use tonic::Code;

/// Events from a `watch`, in log order. It ends only after an error it cannot resume
/// from (which it yields as its last item); drop it to stop watching.
pub struct EventStream {
    inner: BoxStream<'static, Result<pb::Event, ClientError>>,
}

impl Stream for EventStream {
    type Item = Result<pb::Event, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventStream")
    }
}

struct WatchState {
    client: CorralClient,
    /// Where the first stream starts.
    from_index: u64,
    /// Index of the last event delivered, and how many events of that index were
    /// delivered (one log entry can produce several events).
    last: Option<(u64, u64)>,
    /// Events of the last index a resumed stream will repeat, still to skip.
    to_skip: u64,
    stream: Option<Streaming<pb::Event>>,
    /// Failed (re)connections since the last event.
    failures: u32,
    finished: bool,
}

impl WatchState {
    fn new(client: CorralClient, from_index: u64) -> WatchState {
        WatchState {
            client,
            from_index,
            last: None,
            to_skip: 0,
            stream: None,
            failures: 0,
            finished: false,
        }
    }

    /// Where a (re)opened stream starts: at the last delivered index, whose events
    /// already delivered are then skipped, so none is lost or repeated.
    fn resume_index(&mut self) -> u64 {
        match self.last {
            Some((index, delivered)) => {
                self.to_skip = delivered;
                index
            }
            None => self.from_index,
        }
    }

    /// Whether `event` is new; records it if so.
    fn accept(&mut self, event: &pb::Event) -> bool {
        match self.last {
            Some((index, _)) if event.index < index => false,
            Some((index, _)) if event.index == index && self.to_skip > 0 => {
                self.to_skip -= 1;
                false
            }
            Some((index, delivered)) if event.index == index => {
                self.last = Some((index, delivered + 1));
                true
            }
            _ => {
                self.last = Some((event.index, 1));
                self.to_skip = 0;
                true
            }
        }
    }

    /// After `error`: Ok after a pause when the stream is worth reopening, else the
    /// error to end with.
    async fn pause_before_retry(&mut self, error: ClientError) -> Result<(), ClientError> {
        let resumable = matches!(
            error.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Internal
                | Code::Cancelled
                | Code::Aborted
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
        );
        self.failures += 1;
        if !resumable || self.failures >= self.client.options().max_attempts {
            self.finished = true;
            return Err(error);
        }
        tracing::debug!(%error, last = ?self.last, "resuming the event stream");
        let pause = self
            .client
            .options()
            .backoff
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(Duration::from_secs(1));
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

impl CorralClient {
    /// Events from log index `from_index` on (0 or 1: from the oldest kept): first the
    /// ones that exist, then new ones as they are applied.
    ///
    /// When the stream breaks (the replica stops, the connection drops, the server
    /// closes it) the client reconnects, to any replica, and resumes where it left off
    /// without repeating or losing events. After `max_attempts` failed reconnections
    /// in a row it yields the last error and ends. Errors the server answers with
    /// deliberately (unauthenticated, invalid argument, ...) end it at once.
    pub fn watch(&self, from_index: u64) -> EventStream {
        let state = WatchState::new(self.clone(), from_index);
        EventStream {
            inner: futures::stream::unfold(state, next_event).boxed(),
        }
    }

    /// As `watch`, but opens the stream before returning, so that an error the first
    /// attempt meets (unreachable cluster, bad token) is returned here, and events
    /// that already exist are on their way when it returns.
    pub async fn watch_connected(&self, from_index: u64) -> Result<EventStream, ClientError> {
        let stream = self.open_watch(from_index).await?;
        let mut state = WatchState::new(self.clone(), from_index);
        state.stream = Some(stream);
        Ok(EventStream {
            inner: futures::stream::unfold(state, next_event).boxed(),
        })
    }

    async fn open_watch(&self, from_index: u64) -> Result<Streaming<pb::Event>, ClientError> {
        let request = pb::WatchRequest { from_index };
        let response = self
            .call_with(request, false, |mut admin, request| async move {
                admin.watch(request).await
            })
            .await?;
        Ok(response.into_inner())
    }
}

async fn next_event(mut state: WatchState) -> Option<(Result<pb::Event, ClientError>, WatchState)> {
    loop {
        if state.finished {
            return None;
        }
        let stream = match &mut state.stream {
            Some(stream) => stream,
            None => {
                let from_index = state.resume_index();
                match state.client.open_watch(from_index).await {
                    Ok(stream) => state.stream.insert(stream),
                    Err(error) => match state.pause_before_retry(error).await {
                        Ok(()) => continue,
                        Err(error) => return Some((Err(error), state)),
                    },
                }
            }
        };
        let error = match stream.message().await {
            Ok(Some(event)) => {
                if !state.accept(&event) {
                    continue;
                }
                state.failures = 0;
                return Some((Ok(event), state));
            }
            Ok(None) => ClientError::new(Code::Unavailable, "the server closed the event stream"),
            Err(status) => ClientError::from(status),
        };
        state.stream = None;
        if let Err(error) = state.pause_before_retry(error).await {
            return Some((Err(error), state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientOptions;

    fn state(from_index: u64) -> WatchState {
        WatchState::new(
            CorralClient::connect(vec!["a:1".into()], None, ClientOptions::default()).unwrap(),
            from_index,
        )
    }

    fn event(index: u64, kind: &str) -> pb::Event {
        pb::Event {
            index,
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_resumed_stream_skips_what_was_delivered_and_keeps_the_rest() {
        let mut state = state(5);
        assert_eq!(state.resume_index(), 5);
        assert!(state.accept(&event(5, "a")));
        assert!(state.accept(&event(7, "b")));
        assert!(state.accept(&event(7, "c")));
        // The stream breaks here; the resumed one starts again at index 7.
        assert_eq!(state.resume_index(), 7);
        assert!(!state.accept(&event(6, "old")));
        assert!(!state.accept(&event(7, "b")));
        assert!(!state.accept(&event(7, "c")));
        assert!(state.accept(&event(7, "d")));
        assert!(state.accept(&event(8, "e")));
        assert_eq!(state.last, Some((8, 1)));
    }

    #[test]
    fn a_resumed_stream_that_does_not_repeat_loses_nothing() {
        let mut state = state(0);
        assert!(state.accept(&event(3, "a")));
        assert_eq!(state.resume_index(), 3);
        assert!(state.accept(&event(4, "b")));
        assert!(state.accept(&event(4, "c")));
    }
}
