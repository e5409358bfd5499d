//! `qmp info` / `vm-info`: what a VM is, at a glance. Each line is shown
//! only when the server has the command behind it; the queries run
//! concurrently (the client pipelines them).

use crate::cli::InfoArgs;
use crate::{Context, Failure};
use qmp_client::Client;
use serde_json::{json, Map, Value};

/// What a server answered for one line: a value, or its error text.
async fn query(
    client: &Client,
    available: &[String],
    command: &str,
) -> Option<Result<Value, String>> {
    if !available.iter().any(|c| c == command) {
        return None;
    }
    Some(
        client
            .execute(command, Value::Null)
            .await
            .map_err(|e| e.qmp().map_or_else(|| e.to_string(), |q| q.desc.clone())),
    )
}

fn mib(bytes: &Value) -> Value {
    json!(bytes.as_u64().unwrap_or_default() / (1 << 20))
}

pub async fn run(ctx: &Context, a: &InfoArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let available: Vec<String> = client
        .execute("query-commands", Value::Null)
        .await?
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let q = |c: &'static str| query(&client, &available, c);
    let (name, uuid, version, status, kvm, cpus, memory, devices, nodes) = tokio::join!(
        q("query-name"),
        q("query-uuid"),
        q("query-version"),
        q("query-status"),
        q("query-kvm"),
        q("query-cpus-fast"),
        q("query-memory-size-summary"),
        q("query-block"),
        q("query-named-block-nodes"),
    );
    // Devices when there are any (a VM's drives), else block nodes (what a
    // storage daemon has).
    let has_devices = matches!(&devices, Some(Ok(Value::Array(l))) if !l.is_empty());
    let block = if has_devices || nodes.is_none() {
        devices
    } else {
        nodes
    };
    // Each field: JSON value for --json, and its text form.
    let mut fields: Vec<(&str, Value, String)> = Vec::new();
    let mut add = |key: &'static str,
                   r: Option<Result<Value, String>>,
                   shape: &dyn Fn(&Value) -> (Value, String)| {
        match r {
            None => {}
            Some(Ok(v)) => {
                let (j, t) = shape(&v);
                fields.push((key, j, t));
            }
            Some(Err(e)) => fields.push((key, json!({"error": e}), format!("<error: {e}>"))),
        }
    };
    // --json: QEMU's own objects (numbers as numbers, every member),
    // under one key per line; the text: what a person reads first.
    add("name", name, &|v| {
        let n = v["name"].as_str().unwrap_or("");
        let text = if n.is_empty() { "(none)" } else { n };
        (json!(n), text.into())
    });
    add("uuid", uuid, &|v| {
        (v["UUID"].clone(), v["UUID"].as_str().unwrap_or("").into())
    });
    add("version", version, &|v| {
        let q = &v["qemu"];
        let text = format!("{}.{}.{}", q["major"], q["minor"], q["micro"]);
        let package = v["package"].as_str().unwrap_or("");
        let shown = if package.is_empty() {
            text
        } else {
            format!("{text} ({package})")
        };
        (v.clone(), shown)
    });
    add("status", status, &|v| {
        (v.clone(), v["status"].as_str().unwrap_or("").into())
    });
    add("kvm", kvm, &|v| {
        let (enabled, present) = (v["enabled"] == true, v["present"] == true);
        let text = match (enabled, present) {
            (true, _) => "enabled",
            (false, true) => "disabled (available)",
            (false, false) => "disabled (not available)",
        };
        (v.clone(), text.into())
    });
    add("cpus", cpus, &|v| {
        let n = v.as_array().map_or(0, Vec::len);
        (v.clone(), n.to_string())
    });
    add("memory", memory, &|v| {
        (v.clone(), format!("{} MiB", mib(&v["base-memory"])))
    });
    add("block", block, &|v| {
        let disks: Vec<Disk> = v
            .as_array()
            .map(|l| l.iter().map(Disk::of).collect())
            .unwrap_or_default();
        let text = if disks.is_empty() {
            "none".to_string()
        } else {
            disks.iter().map(Disk::text).collect::<Vec<_>>().join(", ")
        };
        (
            json!(disks.iter().map(Disk::json).collect::<Vec<_>>()),
            text,
        )
    });
    if a.json {
        let map: Map<String, Value> = fields
            .into_iter()
            .map(|(k, j, _)| (k.to_owned(), j))
            .collect();
        ctx.style.print(&Value::Object(map));
    } else {
        let width = fields.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
        for (key, _, text) in fields {
            println!("{key:<width$}  {text}");
        }
    }
    Ok(())
}

/// A block device (`query-block`) or, on a storage daemon, a node
/// (`query-named-block-nodes`).
struct Disk {
    /// What a person calls it: the `-drive` id, the `-device` id (from
    /// its qdev path, as libvirt's `-blockdev` + `-device` disks have no
    /// drive id), or the node name.
    label: String,
    qdev: Option<String>,
    node: Option<String>,
    driver: Option<String>,
    file: Option<String>,
    read_only: Option<bool>,
}

impl Disk {
    fn of(d: &Value) -> Disk {
        // query-block keeps the medium under "inserted"; a node is it.
        let medium = if d.get("inserted").is_some() || d.get("qdev").is_some() {
            &d["inserted"]
        } else {
            d
        };
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let qdev = text(&d["qdev"]);
        let node = text(&medium["node-name"]);
        let from_qdev = qdev
            .as_deref()
            .map(|q| match q.strip_prefix("/machine/peripheral/") {
                // `/machine/peripheral/ID/virtio-backend`: the device's id
                Some(rest) => rest.split('/').next().unwrap_or(rest).to_owned(),
                None => q.to_owned(),
            });
        let label = text(&d["device"])
            .or(from_qdev)
            .or_else(|| node.clone())
            .unwrap_or_else(|| "?".into());
        Disk {
            label,
            qdev,
            node,
            driver: text(&medium["drv"]),
            file: text(&medium["file"]),
            read_only: medium["ro"].as_bool(),
        }
    }

    /// `disk0 (n0, qcow2)`: the node only when it is not the label, and
    /// `empty` for a drive without a medium.
    fn text(&self) -> String {
        let driver = self.driver.as_deref().unwrap_or("empty");
        match &self.node {
            Some(node) if *node != self.label && !node.starts_with('#') => {
                format!("{} ({node}, {driver})", self.label)
            }
            _ => format!("{} ({driver})", self.label),
        }
    }

    fn json(&self) -> Value {
        json!({
            "name": self.label,
            "qdev": self.qdev,
            "node-name": self.node,
            "driver": self.driver,
            "file": self.file,
            "read-only": self.read_only,
        })
    }
}
