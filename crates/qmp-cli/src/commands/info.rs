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
    add("name", name, &|v| {
        let n = v["name"].as_str().unwrap_or("");
        (
            json!(n),
            if n.is_empty() {
                "(none)".into()
            } else {
                n.into()
            },
        )
    });
    add("uuid", uuid, &|v| {
        (v["UUID"].clone(), v["UUID"].as_str().unwrap_or("").into())
    });
    add("version", version, &|v| {
        let q = &v["qemu"];
        let text = format!("{}.{}.{}", q["major"], q["minor"], q["micro"]);
        let package = v["package"].as_str().unwrap_or("");
        let shown = if package.is_empty() {
            text.clone()
        } else {
            format!("{text} ({package})")
        };
        (json!({"qemu": text, "package": package}), shown)
    });
    add("status", status, &|v| {
        (
            v["status"].clone(),
            v["status"].as_str().unwrap_or("").into(),
        )
    });
    add("kvm", kvm, &|v| {
        let (enabled, present) = (v["enabled"] == true, v["present"] == true);
        let text = match (enabled, present) {
            (true, _) => "enabled",
            (false, true) => "disabled (available)",
            (false, false) => "disabled (not available)",
        };
        (json!({"enabled": enabled, "present": present}), text.into())
    });
    add("cpus", cpus, &|v| {
        let n = v.as_array().map_or(0, Vec::len);
        (json!(n), n.to_string())
    });
    add("memory", memory, &|v| {
        let base = mib(&v["base-memory"]);
        (json!({"base-mib": base}), format!("{base} MiB"))
    });
    add("block", block, &|v| {
        let devices: Vec<String> = v
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|d| {
                        let id = d["device"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .or(d["node-name"].as_str())
                            .unwrap_or("?");
                        let drv = d["inserted"]["drv"]
                            .as_str()
                            .or(d["drv"].as_str())
                            .unwrap_or("empty");
                        format!("{id} ({drv})")
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = if devices.is_empty() {
            "none".to_string()
        } else {
            devices.join(", ")
        };
        (json!(devices), text)
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
