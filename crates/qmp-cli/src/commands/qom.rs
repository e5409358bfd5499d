//! The QOM tools: `qom list|get|set|tree` (also `qom-list` and friends).

use crate::cli::QomCommand;
use crate::{Failure, Session};
use qmp_client::Client;
use serde_json::{json, Value};

pub async fn run(session: &Session, cmd: &QomCommand) -> Result<(), Failure> {
    if let QomCommand::Fuse { rw, mountpoint } = cmd {
        let address = session.address().ok_or_else(|| {
            Failure::Usage("no QMP address: pass -s ADDR or set QMP_SOCKET".into())
        })?;
        return super::qom_fuse::run(address, *rw, mountpoint).await;
    }
    let client = session.connect().await?;
    match cmd {
        QomCommand::List { path } => {
            for p in list(&client, path).await? {
                println!("{}", p.display_name());
            }
        }
        QomCommand::Get { target } => {
            let (path, property) = split(target)?;
            let value = client
                .execute("qom-get", json!({"path": path, "property": property}))
                .await?;
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        println!("{k}: {}", plain(&v));
                    }
                }
                other => println!("{}", plain(&other)),
            }
        }
        QomCommand::Set { target, value } => {
            let (path, property) = split(target)?;
            let value = qmp_proto::args::parse_value(value);
            client
                .execute(
                    "qom-set",
                    json!({"path": path, "property": property, "value": value}),
                )
                .await?;
        }
        QomCommand::Tree { path } => tree(&client, path).await?,
        QomCommand::Fuse { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `PATH.PROPERTY`, split at the last dot.
fn split(target: &str) -> Result<(&str, &str), Failure> {
    target
        .rsplit_once('.')
        .filter(|(p, prop)| !p.is_empty() && !prop.is_empty())
        .ok_or_else(|| Failure::Usage(format!("'{target}' is not PATH.PROPERTY")))
}

/// A value for people: strings as they are, everything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Property {
    name: String,
    kind: String,
}

impl Property {
    fn is_child(&self) -> bool {
        self.kind.starts_with("child<")
    }

    fn display_name(&self) -> String {
        if self.is_child() {
            format!("{}/", self.name)
        } else if self.kind.starts_with("link<") {
            format!("@{}/", self.name)
        } else {
            self.name.clone()
        }
    }
}

async fn list(client: &Client, path: &str) -> Result<Vec<Property>, Failure> {
    let items = client.execute("qom-list", json!({"path": path})).await?;
    Ok(items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| Property {
                    name: p["name"].as_str().unwrap_or_default().to_owned(),
                    kind: p["type"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default())
}

fn child_path(path: &str, name: &str) -> String {
    format!("{}/{name}", path.trim_end_matches('/'))
}

/// One object of the tree: its properties, with values or errors.
struct Node {
    path: String,
    props: Vec<(Property, Result<Value, String>)>,
    children: Vec<String>,
}

/// Lists the tree level by level and fetches every value concurrently: the
/// client pipelines the requests, so a tree of N properties costs a few
/// round trips of latency, not N.
async fn tree(client: &Client, root: &str) -> Result<(), Failure> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut level = vec![root.to_owned()];
    while !level.is_empty() {
        let listings = futures_join(level.iter().map(|p| list(client, p))).await;
        let mut next = Vec::new();
        for (path, listing) in level.iter().zip(listings) {
            let props = listing?;
            let children: Vec<String> = props
                .iter()
                .filter(|p| p.is_child())
                .map(|p| child_path(path, &p.name))
                .collect();
            let values = futures_join(props.iter().filter(|p| !p.is_child()).map(|p| {
                let client = client.clone();
                let (path, name) = (path.clone(), p.name.clone());
                async move {
                    client
                        .execute("qom-get", json!({"path": path, "property": name}))
                        .await
                        .map_err(|e| e.qmp().map_or_else(|| e.to_string(), |q| q.desc.clone()))
                }
            }))
            .await;
            let plain_props = props
                .into_iter()
                .filter(|p| !p.is_child())
                .zip(values)
                .collect();
            next.extend(children.iter().cloned());
            nodes.push(Node {
                path: path.clone(),
                props: plain_props,
                children,
            });
        }
        level = next;
    }
    print_node(&nodes, root);
    Ok(())
}

fn print_node(nodes: &[Node], path: &str) {
    let Some(node) = nodes.iter().find(|n| n.path == path) else {
        return;
    };
    println!("{path}");
    for (p, value) in &node.props {
        match value {
            Ok(v) => println!("  {}: {} ({})", p.name, v, p.kind),
            Err(e) => println!("  {}: <error: {e}> ({})", p.name, p.kind),
        }
    }
    println!();
    for child in &node.children {
        print_node(nodes, child);
    }
}

/// Runs futures concurrently on this task, results in order.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
