//! The recorder: writes a transcript while the proxy runs.

use qmp_client::{EventFilter, EventStream};
use qmp_replay::transcript::{Dir, Entry};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Writes a transcript while the proxy runs.
///
/// Events are taken from a subscription of their own, which QEMU's
/// reader fills before it routes the reply that follows them; so writing
/// the waiting events before each request and reply keeps them where they
/// stood. A pump writes the rest (events while no command runs).
///
/// The file is written under a temporary name beside its path (mode 0600
/// from the first byte) and takes the path's place once QEMU is reached: a
/// proxy that fails to start leaves an existing transcript untouched.
pub struct Recorder {
    state: Mutex<State>,
    start: Instant,
    start_wall: f64,
}

struct State {
    file: File,
    events: Option<EventStream>,
    /// `(temporary, final)` names until the first upstream is attached.
    pending: Option<(PathBuf, PathBuf)>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((temporary, _)) = st.pending.take() {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Recorder {
    pub fn create(path: &Path) -> io::Result<Arc<Recorder>> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = path.with_file_name(format!(".{name}.{}.recording", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        Ok(Arc::new(Recorder {
            state: Mutex::new(State {
                file,
                events: None,
                pending: Some((temporary, path.to_path_buf())),
            }),
            start: Instant::now(),
            start_wall: wall_now(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts on a (new) upstream: its greeting, and its events from now.
    pub fn attach(&self, client: &qmp_client::Client) {
        let greeting = client
            .greeting()
            .map(|g| json!({"QMP": g}))
            .unwrap_or(Value::Null);
        let mut st = self.lock();
        let first = st.events.is_none();
        st.events = Some(client.events_with_capacity(EventFilter::all(), 65536));
        let line = if first {
            json!({"qmp-transcript": 1, "greeting": greeting})
        } else {
            json!({"t": self.start.elapsed().as_secs_f64(), "dir": "greeting", "msg": greeting})
        };
        write_line(&mut st.file, &line);
        if let Some((temporary, path)) = st.pending.take() {
            if let Err(e) = std::fs::rename(&temporary, &path) {
                tracing::error!("cannot put the transcript at {}: {e}", path.display());
            }
        }
    }

    /// Writes the events waiting, then `entry` if any.
    fn write(&self, entry: Option<Entry>) {
        let mut st = self.lock();
        let mut waiting = Vec::new();
        if let Some(events) = st.events.as_mut() {
            while let Some(item) = events.try_next() {
                match item {
                    Ok(e) => waiting.push(e),
                    Err(lost) => tracing::error!("the transcript missed events: {lost}"),
                }
            }
        }
        for e in waiting {
            let wall = e.timestamp.seconds as f64 + e.timestamp.microseconds as f64 / 1e6;
            let entry = Entry {
                t: Some((wall - self.start_wall).max(0.0)),
                client: None,
                dir: Dir::Event,
                msg: e.to_value(),
                fds: 0,
                line: 0,
            };
            write_line(&mut st.file, &entry.to_line());
        }
        if let Some(entry) = entry {
            write_line(&mut st.file, &entry.to_line());
        }
    }

    pub fn request(&self, client: u64, msg: Value, fds: usize) {
        self.message(client, Dir::Request, msg, fds);
    }

    pub fn reply(&self, client: u64, msg: Value) {
        self.message(client, Dir::Reply, msg, 0);
    }

    /// A client's request or reply, stamped now.
    fn message(&self, client: u64, dir: Dir, msg: Value, fds: usize) {
        self.write(Some(Entry {
            t: Some(self.start.elapsed().as_secs_f64()),
            client: Some(client),
            dir,
            msg,
            fds,
            line: 0,
        }));
    }

    /// Writes events that arrive while no command runs, until dropped.
    pub async fn pump(self: Arc<Self>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.write(None);
        }
    }
}

fn write_line(file: &mut File, line: &Value) {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    if let Err(e) = file.write_all(&bytes) {
        tracing::error!("cannot write the transcript: {e}");
    }
}
