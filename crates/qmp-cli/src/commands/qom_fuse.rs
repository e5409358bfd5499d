//! `qom-fuse [-s ADDR] [--rw] MOUNTPOINT` (`qmp qom fuse`): QEMU's object
//! tree as a filesystem, in the foreground until Ctrl-C or SIGTERM, which
//! unmount it.
//!
//! Objects are directories; `link<...>` properties are symlinks to their
//! target (relative, so they resolve inside the mount), an unset one to
//! `/dev/null`; other properties are files holding the `qom-get` value and
//! a newline. Read-only unless `--rw`, where writing a file is a `qom-set`
//! (JSON when it parses, else a string): `>` replaces the value, `>>`
//! appends to it. Nothing is cached: every read asks QEMU. QMP errors are logged
//! and map to ENOENT (no such object or property), EACCES (not readable or
//! writable) or EIO.

use crate::Failure;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, ReplyWrite, Request,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Object,
    Link,
    Value,
}

/// Inode numbers for QOM paths, handed out as paths are met.
#[derive(Default)]
struct Inodes {
    by_path: HashMap<String, u64>,
    paths: Vec<String>,
}

struct QomFs {
    /// Replaced when `--reconnect` connects again.
    client: std::sync::Arc<Mutex<std::sync::Arc<qmp_client::blocking::Client>>>,
    rw: bool,
    inodes: Mutex<Inodes>,
    uid: u32,
    gid: u32,
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// A path's directory and last name (`/machine/type` → `/machine`, `type`).
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}

impl QomFs {
    fn ino(&self, path: &str) -> INodeNo {
        let mut t = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&n) = t.by_path.get(path) {
            return INodeNo(n);
        }
        t.paths.push(path.to_owned());
        let n = t.paths.len() as u64; // the root, "/", is 1
        t.by_path.insert(path.to_owned(), n);
        INodeNo(n)
    }

    fn path(&self, ino: INodeNo) -> Option<String> {
        let t = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        t.paths.get((ino.0 as usize).checked_sub(1)?).cloned()
    }

    /// Runs a command; a QMP error is logged and becomes an errno.
    fn qmp(&self, what: &str, command: &str, args: Value) -> Result<Value, Errno> {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        client.execute(command, args).map_err(|e| {
            eprintln!("qom-fuse: {what}: {e}");
            match e.qmp() {
                Some(q) if q.class == "DeviceNotFound" || q.desc.contains("not found") => {
                    Errno::ENOENT
                }
                Some(q)
                    if q.desc.contains("not readable")
                        || q.desc.contains("not writable")
                        || q.desc.contains("ermission") =>
                {
                    Errno::EACCES
                }
                _ => Errno::EIO,
            }
        })
    }

    /// An object's entries: name and kind.
    fn list(&self, path: &str) -> Result<Vec<(String, Kind)>, Errno> {
        let items = self.qmp(path, "qom-list", json!({"path": path}))?;
        Ok(items
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let kind = p["type"].as_str().unwrap_or_default();
                let kind = if kind.starts_with("child<") {
                    Kind::Object
                } else if kind.starts_with("link<") {
                    Kind::Link
                } else {
                    Kind::Value
                };
                (p["name"].as_str().unwrap_or_default().to_owned(), kind)
            })
            .collect())
    }

    fn kind(&self, path: &str) -> Result<Kind, Errno> {
        if path == "/" {
            return Ok(Kind::Object);
        }
        let (dir, name) = split(path);
        self.list(dir)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: INodeNo, kind: Kind) -> FileAttr {
        let (file_type, perm) = match kind {
            Kind::Object => (FileType::Directory, 0o555),
            Kind::Link => (FileType::Symlink, 0o777),
            Kind::Value if self.rw => (FileType::RegularFile, 0o644),
            Kind::Value => (FileType::RegularFile, 0o444),
        };
        let now = SystemTime::now();
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: file_type,
            perm,
            nlink: if kind == Kind::Object { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// A property's value as file contents.
    fn contents(&self, path: &str) -> Result<Vec<u8>, Errno> {
        let (dir, name) = split(path);
        let v = self.qmp(path, "qom-get", json!({"path": dir, "property": name}))?;
        let mut text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        text.push('\n');
        Ok(text.into_bytes())
    }
}

const TTL: Duration = Duration::ZERO;

impl Filesystem for QomFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let name = name.to_string_lossy();
        match self
            .list(&dir)
            .map(|l| l.into_iter().find(|(n, _)| *n == name))
        {
            Ok(Some((n, kind))) => {
                let ino = self.ino(&join(&dir, &n));
                reply.entry(&TTL, &self.attr(ino, kind), Generation(0));
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.kind(&path) {
            Ok(kind) => reply.attr(&TTL, &self.attr(ino, kind)),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let entries = match self.list(&path) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let mut all = vec![
            (ino, FileType::Directory, ".".to_owned()),
            (ino, FileType::Directory, "..".to_owned()),
        ];
        for (name, kind) in entries {
            let t = match kind {
                Kind::Object => FileType::Directory,
                Kind::Link => FileType::Symlink,
                Kind::Value => FileType::RegularFile,
            };
            all.push((self.ino(&join(&path, &name)), t, name));
        }
        for (i, (ino, t, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, t, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let (dir, name) = split(&path);
        match self.qmp(&path, "qom-get", json!({"path": dir, "property": name})) {
            // An unset link points at /dev/null: readlink (and `ls -l`)
            // succeed, and reading through it gives nothing.
            Ok(Value::String(target)) if target.is_empty() => reply.data(b"/dev/null"),
            Ok(Value::String(target)) => {
                // relative to the link's directory, so it resolves in the mount
                let depth = dir.split('/').filter(|s| !s.is_empty()).count();
                let up = "../".repeat(depth);
                let target = format!("{up}{}", target.trim_start_matches('/'));
                reply.data(target.as_bytes());
            }
            Ok(_) => reply.error(Errno::EIO),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY && !self.rw {
            return reply.error(Errno::EACCES);
        }
        // no caching, reads see QEMU's value now, and no size needed
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.contents(&path) {
            Ok(data) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        if !self.rw {
            return reply.error(Errno::EACCES);
        }
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let (dir, name) = split(&path);
        // `>>` (O_APPEND), or the later pieces of a long write: what is
        // written goes after the value there is, not in its place.
        let appending = flags.0 & nix::libc::O_APPEND != 0;
        let mut text = Vec::new();
        if appending || offset > 0 {
            match self.contents(&path) {
                Ok(mut now) => {
                    now.pop(); // the newline the file shows
                    let keep = if appending {
                        now.len()
                    } else {
                        usize::try_from(offset).unwrap_or(usize::MAX).min(now.len())
                    };
                    text.extend_from_slice(&now[..keep]);
                }
                Err(e) => return reply.error(e),
            }
        }
        text.extend_from_slice(data);
        let text = String::from_utf8_lossy(&text);
        let value = qmp_proto::args::parse_value(text.trim_end_matches('\n'));
        match self.qmp(
            &path,
            "qom-set",
            json!({"path": dir, "property": name, "value": value}),
        ) {
            Ok(_) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // `echo x > file` truncates first; the value is replaced by the write
        if !self.rw {
            return reply.error(Errno::EACCES);
        }
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.kind(&path) {
            Ok(kind) => reply.attr(&TTL, &self.attr(ino, kind)),
            Err(e) => reply.error(e),
        }
    }
}

pub async fn run(
    address: &str,
    rw: bool,
    reconnect: bool,
    mountpoint: &str,
) -> Result<(), Failure> {
    // The filesystem's callbacks are blocking, on fuser's thread, so they
    // use the blocking client; it owns a runtime of its own and must be
    // made outside this one.
    if !std::path::Path::new(mountpoint).is_dir() {
        return Err(Failure::Usage(format!(
            "cannot mount on {mountpoint}: not a directory"
        )));
    }
    let (address, mp) = (address.to_owned(), mountpoint.to_owned());
    type Shared = std::sync::Arc<Mutex<std::sync::Arc<qmp_client::blocking::Client>>>;
    // The filesystem holds the client; this task only a weak handle, so the
    // blocking client (and its runtime) is dropped with the filesystem, on
    // a blocking thread, never on this runtime.
    type Mounted = (
        fuser::BackgroundSession,
        qmp_client::Client,
        std::sync::Weak<Mutex<std::sync::Arc<qmp_client::blocking::Client>>>,
    );
    let (session, mut watch, shared) = std::thread::spawn({
        let address = address.clone();
        move || -> Result<Mounted, Failure> {
            let client = qmp_client::blocking::Client::connect(&address)
                .map_err(|e| Failure::Connection(e.to_string()))?;
            // to notice QEMU going away from here
            let watch = client.as_async().clone();
            let shared: Shared = std::sync::Arc::new(Mutex::new(std::sync::Arc::new(client)));
            let fs = QomFs {
                client: shared.clone(),
                rw,
                inodes: Mutex::default(),
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            };
            fs.ino("/");
            let mut config = Config::default();
            config.mount_options = vec![
                MountOption::FSName("qom".into()),
                MountOption::Subtype("qmp".into()),
                if rw { MountOption::RW } else { MountOption::RO },
            ];
            fuser::spawn_mount(fs, &mp, &config)
                .map(|session| (session, watch, std::sync::Arc::downgrade(&shared)))
                .map_err(|e| Failure::Connection(format!("cannot mount on {mp}: {e}")))
        }
    })
    .join()
    .map_err(|_| Failure::Connection("the mount thread failed".into()))??;
    eprintln!(
        "qom-fuse: mounted on {mountpoint} ({}); Ctrl-C to unmount",
        if rw { "read-write" } else { "read-only" }
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let mut gone = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            // Without QEMU the tree is gone: unmount rather than answer
            // EIO; or, with --reconnect, answer EIO until it is back.
            reason = watch.disconnected() => {
                if !reconnect {
                    gone = Some(reason);
                    break;
                }
                eprintln!("qom-fuse: QEMU went away ({reason}); waiting for it to come back");
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => return unmount(session, mountpoint).await,
                        _ = term.recv() => return unmount(session, mountpoint).await,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    let address = address.clone();
                    // the blocking client makes its own runtime: not on this one
                    let again = tokio::task::spawn_blocking(move || {
                        qmp_client::blocking::Client::connect(&address)
                    })
                    .await;
                    if let Ok(Ok(client)) = again {
                        watch = client.as_async().clone();
                        let client = std::sync::Arc::new(client);
                        let old = shared.upgrade().map(|s| {
                            let old = std::mem::replace(
                                &mut *s.lock().unwrap_or_else(|e| e.into_inner()),
                                client,
                            );
                            (s, old)
                        });
                        // what is dropped here may hold a runtime: not on this one
                        tokio::task::spawn_blocking(move || drop(old));
                        eprintln!("qom-fuse: connected again");
                        break;
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if session.guard.is_finished() {
                    // unmounted from outside
                    return Ok(());
                }
            }
        }
    }
    unmount(session, mountpoint).await?;
    match gone {
        Some(reason) => Err(Failure::Connection(format!(
            "QEMU went away ({reason}); unmounted {mountpoint}"
        ))),
        None => Ok(()),
    }
}

async fn unmount(session: fuser::BackgroundSession, mountpoint: &str) -> Result<(), Failure> {
    let mp = mountpoint.to_owned();
    tokio::task::spawn_blocking(move || session.umount_and_join())
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?
        .map_err(|e| Failure::Connection(format!("unmounting {mp}: {e}")))
}
