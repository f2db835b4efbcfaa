//! The one owner of a background thread: spawn, commands in, events out, shutdown. The training
//! worker, the inference thread and every watch are a `ThreadHandle` with their own command
//! and event types, so each stops the same way: a stop flag and the thread's shutdown command,
//! then its events drained while it is joined (a thread blocked on a full event queue would
//! otherwise never see the stop).

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How a thread wakes the UI after sending events (e.g. `ctx.request_repaint_after`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What the thread's body is given: its commands, its way out, and the stop flag.
pub struct ThreadEnds<C, E> {
    pub commands: Receiver<C>,
    pub events: Sender<E>,
    pub stop: Arc<AtomicBool>,
    pub waker: Waker,
}

impl<C, E> ThreadEnds<C, E> {
    /// Sends one event and wakes the UI; `false` once the handle is gone.
    pub fn emit(&self, event: E) -> bool {
        let sent = self.events.send(event).is_ok();
        (self.waker)();
        sent
    }

    /// Whether the owner asked the thread to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Queue sizes and the name of a thread.
pub struct ThreadSpec {
    pub name: &'static str,
    pub command_queue: usize,
    pub event_queue: usize,
}

/// The UI's end of one background thread. Dropping it stops and joins the thread.
pub struct ThreadHandle<C, E> {
    commands: Sender<C>,
    events: Receiver<E>,
    stop: Arc<AtomicBool>,
    /// Sent on shutdown, for a thread that waits on its commands rather than the flag.
    shutdown_command: Option<fn() -> C>,
    thread: Option<JoinHandle<()>>,
}

impl<C: Send + 'static, E: Send + 'static> ThreadHandle<C, E> {
    /// Spawns `body` on a named thread with bounded queues.
    pub fn spawn(
        spec: ThreadSpec,
        waker: Waker,
        shutdown_command: Option<fn() -> C>,
        body: impl FnOnce(ThreadEnds<C, E>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (command_tx, command_rx) = bounded(spec.command_queue);
        let (event_tx, event_rx) = bounded(spec.event_queue);
        let stop = Arc::new(AtomicBool::new(false));
        let ends = ThreadEnds {
            commands: command_rx,
            events: event_tx,
            stop: stop.clone(),
            waker,
        };
        let thread = std::thread::Builder::new()
            .name(format!("dinoscope-{}", spec.name))
            .spawn(move || body(ends))?;
        Ok(Self {
            commands: command_tx,
            events: event_rx,
            stop,
            shutdown_command,
            thread: Some(thread),
        })
    }
}

impl<C, E> ThreadHandle<C, E> {
    /// Never blocks: a full queue (the thread is far behind) is an error.
    pub fn try_send(&self, command: C) -> Result<(), TrySendError<C>> {
        self.commands.try_send(command)
    }

    /// Next pending event, if any (never blocks).
    pub fn try_recv(&self) -> Option<E> {
        self.events.try_recv().ok()
    }

    /// Waits up to `timeout` for an event (tests and headless drivers).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<E> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Events waiting for the UI (the soak log watches this stay bounded).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Stops the thread and waits for it, draining its events meanwhile.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(command) = self.shutdown_command {
            // A full command queue still gets the shutdown: drain events until there is room.
            while let Err(TrySendError::Full(_)) = self.commands.try_send(command()) {
                if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                    break;
                }
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = thread.join();
        }
    }
}

impl<C, E> Drop for ThreadHandle<C, E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_joins_a_thread_blocked_on_a_full_event_queue() {
        let spec = ThreadSpec {
            name: "test",
            command_queue: 1,
            event_queue: 1,
        };
        let mut handle: ThreadHandle<(), usize> =
            ThreadHandle::spawn(spec, Arc::new(|| {}), None, |ends| {
                let mut n = 0;
                // Blocks on the second send until the owner drains.
                while !ends.stopped() && ends.emit(n) {
                    n += 1;
                }
            })
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(20));
        handle.shutdown();
        assert!(handle.thread.is_none());
    }

    #[test]
    fn the_shutdown_command_reaches_a_thread_waiting_on_commands() {
        let spec = ThreadSpec {
            name: "test",
            command_queue: 4,
            event_queue: 4,
        };
        let mut handle: ThreadHandle<Option<u32>, u32> =
            ThreadHandle::spawn(spec, Arc::new(|| {}), Some(|| None), |ends| {
                while let Ok(Some(value)) = ends.commands.recv() {
                    ends.emit(value * 2);
                }
            })
            .expect("spawn");
        handle.try_send(Some(21)).expect("send");
        assert_eq!(handle.recv_timeout(Duration::from_secs(5)), Some(42));
        handle.shutdown();
        assert!(handle.thread.is_none());
    }
}
