//! A demo machine: the framework's showcase, and something to point a
//! client at when no QEMU is around (`qmp demo --listen ADDR`).
//!
//! It keeps a run state (prelaunch, running, paused, shutdown) changed by
//! `stop`, `cont`, `system_reset`, `system_powerdown` and `quit`, with the
//! events QEMU sends for them, and a small QOM tree for `qom-list`,
//! `qom-get` and `qom-set`. Where QEMU has a quirk, the demo has it too:
//! `cont` on a running machine sends STOP then RESUME; `stop` before the
//! machine first ran sends no event. `getfd` and `closefd` keep and close
//! file descriptors passed with SCM_RIGHTS, and `query-yank` runs out of
//! band, so fd passing and oob can be tried on it too.
//!
//! [`start`] serves it in the calling program, which is how the examples
//! of the project's crates run without a QEMU:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let demo = qmp_server::demo::start().await?;
//! assert!(demo.address().ends_with("qmp.sock"));
//! // ... connect a client to demo.address() ...
//! drop(demo); // stops serving and removes the socket
//! # Ok(()) }
//! ```

use crate::declare::{Field, Ty};
use crate::server::{Request, Server, ServerBuilder};
use crate::session::QmpError;
use qmp_proto::qemu_json::{QDict, QObject};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Prelaunch,
    Running,
    Paused,
    Shutdown,
}

impl RunState {
    fn name(self) -> &'static str {
        match self {
            RunState::Prelaunch => "prelaunch",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Shutdown => "shutdown",
        }
    }
}

/// A QOM property: its type name and value (none if it cannot be read);
/// `writable` for `qom-set`.
struct Property {
    kind: &'static str,
    value: Option<QObject>,
    writable: bool,
}

/// The machine: run state, QOM objects by path, descriptors by name.
struct Machine {
    state: RunState,
    objects: BTreeMap<String, BTreeMap<String, Property>>,
    fds: BTreeMap<String, OwnedFd>,
}

/// The UUID the demo machine reports (`query-uuid`).
pub const DEMO_UUID: &str = "4a3f5c0e-6d1b-4c2a-9e7f-0123456789ab";

fn string(s: &str) -> QObject {
    QObject::String(s.into())
}

fn dict(members: &[(&str, QObject)]) -> QObject {
    let mut d = QDict::new();
    for (k, v) in members {
        d.insert(*k, v.clone());
    }
    QObject::Dict(d)
}

fn prop(kind: &'static str, value: QObject, writable: bool) -> Property {
    Property {
        kind,
        value: Some(value),
        writable,
    }
}

impl Machine {
    fn new() -> Self {
        let mut objects = BTreeMap::new();
        let mut root = BTreeMap::new();
        root.insert("type".into(), prop("string", string("container"), false));
        root.insert(
            "machine".into(),
            prop("child<demo-machine>", QObject::Null, false),
        );
        root.insert(
            "objects".into(),
            prop("child<container>", QObject::Null, false),
        );
        objects.insert("/".to_string(), root);
        let mut machine = BTreeMap::new();
        machine.insert("type".into(), prop("string", string("demo-machine"), false));
        machine.insert(
            "memory-size".into(),
            prop("size", QObject::Int(128 << 20), false),
        );
        machine.insert("name".into(), prop("string", string("demo"), true));
        machine.insert(
            "dump-guest-core".into(),
            prop("bool", QObject::Bool(true), true),
        );
        machine.insert(
            "peripheral".into(),
            prop("child<container>", QObject::Null, false),
        );
        // Write-only, as some of QEMU's are: qom-get fails, qom-list-get
        // leaves its value out.
        machine.insert(
            "legacy-memory".into(),
            Property {
                kind: "str",
                value: None,
                writable: false,
            },
        );
        objects.insert("/machine".to_string(), machine);
        objects.insert("/objects".to_string(), container());
        objects.insert("/machine/peripheral".to_string(), container());
        Machine {
            state: RunState::Prelaunch,
            objects,
            fds: BTreeMap::new(),
        }
    }

    /// A property's value as `qom-get` gives it: a child's path, or the
    /// value, or QEMU's error for a property that cannot be read.
    fn value(&self, path: &str, name: &str) -> Result<QObject, QmpError> {
        let props = self.object(path)?;
        let p = props
            .get(name)
            .ok_or_else(|| QmpError::generic(format!("Property '{name}' not found")))?;
        if p.kind.starts_with("child<") {
            return Ok(string(&format!("{}/{name}", path.trim_end_matches('/'))));
        }
        p.value.clone().ok_or_else(|| {
            let kind = props.get("type").and_then(|t| t.value.as_ref());
            let kind = kind.and_then(QObject::as_str).unwrap_or("object");
            QmpError::generic(format!("Property '{kind}.{name}' is not readable"))
        })
    }

    fn object(&self, path: &str) -> Result<&BTreeMap<String, Property>, QmpError> {
        let normalized = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        self.objects.get(normalized).ok_or_else(|| QmpError {
            class: "DeviceNotFound".into(),
            desc: format!("Device '{path}' not found"),
        })
    }
}

/// An empty QOM container's properties.
fn container() -> BTreeMap<String, Property> {
    let mut props = BTreeMap::new();
    props.insert("type".into(), prop("string", string("container"), false));
    props
}

fn arg<'a>(req: &'a Request, name: &str) -> Result<&'a QObject, QmpError> {
    req.arguments
        .get(name)
        .ok_or_else(|| QmpError::generic(format!("Parameter '{name}' is missing")))
}

fn arg_str<'a>(req: &'a Request, name: &str) -> Result<&'a str, QmpError> {
    arg(req, name)?.as_str().ok_or_else(|| {
        QmpError::generic(format!(
            "Invalid parameter type for '{name}', expected: string"
        ))
    })
}

/// Builds the demo server (version 10.1.0, package "qmp-rs demo").
pub fn server() -> Server {
    let machine = Arc::new(Mutex::new(Machine::new()));
    let b = ServerBuilder::new().version(10, 1, 0, "qmp-rs demo");
    let b = with_run_state(b, &machine);
    let b = declare_types(b);
    let b = with_fds(b, &machine);
    let built = b
        // Out of band, as on qemu-system; nothing here can be yanked.
        .oob_command("query-yank", |_| async {
            Ok(Some(QObject::List(Vec::new())))
        })
        .command("query-name", |_| async {
            Ok(Some(dict(&[("name", string("demo"))])))
        })
        .command("query-uuid", |_| async {
            Ok(Some(dict(&[("UUID", string(DEMO_UUID))])))
        })
        .command("qom-list", {
            let machine = machine.clone();
            move |req| {
                let result = (|| {
                    let machine = machine.lock().unwrap_or_else(|e| e.into_inner());
                    let props = machine.object(arg_str(&req, "path")?)?;
                    Ok(Some(QObject::List(
                        props
                            .iter()
                            .map(|(name, p)| {
                                dict(&[("name", string(name)), ("type", string(p.kind))])
                            })
                            .collect(),
                    )))
                })();
                async move { result }
            }
        })
        .command("qom-get", {
            let machine = machine.clone();
            move |req| {
                let result = (|| {
                    let machine = machine.lock().unwrap_or_else(|e| e.into_inner());
                    let value = machine.value(arg_str(&req, "path")?, arg_str(&req, "property")?);
                    Ok(Some(value?))
                })();
                async move { result }
            }
        })
        // QEMU 10.1's: every property of each object with its value, left
        // out where it cannot be read; one bad path fails the whole call.
        .command("qom-list-get", {
            let machine = machine.clone();
            move |req| {
                let result = (|| {
                    let machine = machine.lock().unwrap_or_else(|e| e.into_inner());
                    let QObject::List(paths) = arg(&req, "paths")? else {
                        return Err(QmpError::generic(
                            "Invalid parameter type for 'paths', expected: array",
                        ));
                    };
                    let mut out = Vec::new();
                    for path in paths {
                        let path = path.as_str().unwrap_or_default();
                        let props = machine.object(path)?;
                        let mut listed = Vec::new();
                        for (name, p) in props {
                            let mut item =
                                dict(&[("name", string(name)), ("type", string(p.kind))]);
                            if let (Ok(v), QObject::Dict(d)) =
                                (machine.value(path, name), &mut item)
                            {
                                d.insert("value", v);
                            }
                            listed.push(item);
                        }
                        out.push(dict(&[("properties", QObject::List(listed))]));
                    }
                    Ok(Some(QObject::List(out)))
                })();
                async move { result }
            }
        })
        .command("qom-set", {
            let machine = machine.clone();
            move |req| {
                let result = (|| {
                    let mut machine = machine.lock().unwrap_or_else(|e| e.into_inner());
                    let path = arg_str(&req, "path")?.to_owned();
                    let property = arg_str(&req, "property")?.to_owned();
                    let value = arg(&req, "value")?.clone();
                    machine.object(&path)?;
                    let normalized = if path.len() > 1 {
                        path.trim_end_matches('/')
                    } else {
                        &path
                    };
                    let props = machine.objects.get_mut(normalized).expect("checked above");
                    let p = props.get_mut(&property).ok_or_else(|| {
                        QmpError::generic(format!("Property '{property}' not found"))
                    })?;
                    if !p.writable {
                        return Err(QmpError::generic(format!(
                            "Property '{property}' is not writable"
                        )));
                    }
                    let fits = matches!(
                        (p.kind, &value),
                        ("string", QObject::String(_)) | ("bool", QObject::Bool(_))
                    );
                    if !fits {
                        return Err(QmpError::generic(format!(
                            "Invalid parameter type for '{property}', expected: {}",
                            if p.kind == "bool" { "boolean" } else { p.kind }
                        )));
                    }
                    p.value = Some(value);
                    Ok(None)
                })();
                async move { result }
            }
        })
        .build();
    built
}

/// The commands' argument and return types, as QEMU declares them: their
/// arguments are checked with QEMU's texts, and `query-qmp-schema` and the
/// shell's completion and `help` describe them.
fn declare_types(b: ServerBuilder) -> ServerBuilder {
    let path = || Field::required("path", Ty::Str);
    let property = || Field::required("property", Ty::Str);
    let run_state = Ty::enumeration(&["prelaunch", "running", "paused", "shutdown"]);
    let mut b = b
        .declare(
            "qom-list",
            vec![path()],
            Some(Ty::list(Ty::Object(vec![
                Field::required("name", Ty::Str),
                Field::required("type", Ty::Str),
            ]))),
        )
        .declare("qom-get", vec![path(), property()], Some(Ty::Any))
        .declare(
            "qom-list-get",
            vec![Field::required("paths", Ty::list(Ty::Str))],
            Some(Ty::list(Ty::Object(vec![Field::required(
                "properties",
                Ty::list(Ty::Object(vec![
                    Field::required("name", Ty::Str),
                    Field::required("type", Ty::Str),
                    Field::optional("value", Ty::Any),
                ])),
            )]))),
        )
        .declare(
            "qom-set",
            vec![path(), property(), Field::required("value", Ty::Any)],
            None,
        )
        .declare(
            "query-status",
            vec![],
            Some(Ty::Object(vec![
                Field::required("running", Ty::Bool),
                Field::required("status", run_state),
            ])),
        )
        .declare(
            "query-name",
            vec![],
            Some(Ty::Object(vec![Field::optional("name", Ty::Str)])),
        )
        .declare(
            "query-uuid",
            vec![],
            Some(Ty::Object(vec![Field::required("UUID", Ty::Str)])),
        );
    let fdname = || vec![Field::required("fdname", Ty::Str)];
    b = b.declare("getfd", fdname(), None);
    b = b.declare("closefd", fdname(), None);
    b = b.declare(
        "query-yank",
        vec![],
        Some(Ty::list(Ty::Object(vec![Field::required("type", Ty::Str)]))),
    );
    for command in ["stop", "cont", "system_reset", "system_powerdown", "quit"] {
        b = b.declare(command, vec![], None);
    }
    b
}

/// `getfd` keeps the descriptor passed with it under a name (replacing,
/// and so closing, one of the same name); `closefd` closes it. The texts
/// are QEMU's.
fn with_fds(b: ServerBuilder, machine: &Arc<Mutex<Machine>>) -> ServerBuilder {
    let fds = machine.clone();
    let b = b.command("getfd", move |mut req: Request| {
        let result = (|| {
            let name = arg_str(&req, "fdname")?.to_owned();
            let fd = req
                .fds
                .pop()
                .ok_or_else(|| QmpError::generic("No file descriptor supplied via SCM_RIGHTS"))?;
            let mut m = fds.lock().unwrap_or_else(|e| e.into_inner());
            m.fds.insert(name, fd);
            Ok(None)
        })();
        async move { result }
    });
    let fds = machine.clone();
    b.command("closefd", move |req: Request| {
        let result = (|| {
            let name = arg_str(&req, "fdname")?;
            let mut m = fds.lock().unwrap_or_else(|e| e.into_inner());
            match m.fds.remove(name) {
                Some(_closed) => Ok(None),
                None => Err(QmpError::generic(format!(
                    "File descriptor named '{name}' not found"
                ))),
            }
        })();
        async move { result }
    })
}

/// The demo machine served by this program on a unix socket of its own,
/// from [`start`]. Dropping it stops serving and removes the socket.
#[derive(Debug)]
pub struct DemoServer {
    address: String,
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl DemoServer {
    /// The socket's path, to connect to.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves the demo machine on a new socket in a private directory (mode
/// 0700) under the temp directory, on a task of the current tokio
/// runtime: a QMP server to point examples and tests at when no QEMU is
/// around.
pub async fn start() -> std::io::Result<DemoServer> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qmp-demo-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let address = dir.join("qmp.sock").display().to_string();
    let unix = qmp_proto::Address::Unix(dir.join("qmp.sock"));
    let server = server();
    let listener = match server.bind(&unix).await {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let task = tokio::spawn(async move { server.serve(listener).await });
    Ok(DemoServer { address, dir, task })
}

/// The run-state commands and their events.
fn with_run_state(b: ServerBuilder, machine: &Arc<Mutex<Machine>>) -> ServerBuilder {
    // Each transition: the new state (or an error) and the events to send.
    type Transition =
        fn(RunState) -> Result<(RunState, Vec<(&'static str, Option<QObject>)>), QmpError>;
    let transitions: [(&str, Transition); 4] = [
        ("stop", |s| {
            Ok(match s {
                RunState::Running => (RunState::Paused, vec![("STOP", None)]),
                RunState::Prelaunch => (RunState::Paused, vec![]),
                other => (other, vec![]),
            })
        }),
        ("cont", |s| match s {
            RunState::Shutdown => Err(QmpError::generic(
                "Resetting the Virtual Machine is required",
            )),
            // QEMU's quirk: cont on a running machine sends STOP and RESUME
            RunState::Running => Ok((RunState::Running, vec![("STOP", None), ("RESUME", None)])),
            _ => Ok((RunState::Running, vec![("RESUME", None)])),
        }),
        ("system_reset", |s| {
            let next = if s == RunState::Shutdown {
                RunState::Paused
            } else {
                s
            };
            Ok((
                next,
                vec![(
                    "RESET",
                    Some(dict(&[
                        ("guest", QObject::Bool(false)),
                        ("reason", string("host-qmp-system-reset")),
                    ])),
                )],
            ))
        }),
        ("system_powerdown", |s| {
            // The demo's guest obeys at once: it powers off.
            let shutdown = Some(dict(&[
                ("guest", QObject::Bool(true)),
                ("reason", string("guest-shutdown")),
            ]));
            Ok(match s {
                RunState::Running => (
                    RunState::Shutdown,
                    vec![("POWERDOWN", None), ("SHUTDOWN", shutdown)],
                ),
                other => (other, vec![("POWERDOWN", None)]),
            })
        }),
    ];
    let mut b = b;
    for (name, transition) in transitions {
        let machine = machine.clone();
        b = b.command(name, move |req: Request| {
            let result = {
                let mut m = machine.lock().unwrap_or_else(|e| e.into_inner());
                transition(m.state).map(|(next, events)| {
                    m.state = next;
                    events
                })
            };
            async move {
                for (event, data) in result? {
                    req.server().emit(event, data);
                }
                Ok(None)
            }
        });
    }
    let status = machine.clone();
    b = b.command("query-status", move |_| {
        let state = status.lock().unwrap_or_else(|e| e.into_inner()).state;
        async move {
            Ok(Some(dict(&[
                ("running", QObject::Bool(state == RunState::Running)),
                ("status", string(state.name())),
            ])))
        }
    });
    b.command("quit", move |req: Request| async move {
        req.close_after_reply();
        let server = req.server();
        server.emit(
            "SHUTDOWN",
            Some(dict(&[
                ("guest", QObject::Bool(false)),
                ("reason", string("host-qmp-quit")),
            ])),
        );
        server.shutdown();
        Ok(None)
    })
}
