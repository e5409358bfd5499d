//! The QOM tools: `qom list|get|set|tree` (also `qom-list` and friends).

use crate::cli::QomCommand;
use crate::{Context, Failure};
use qmp_client::Client;
use serde_json::{json, Value};

pub async fn run(ctx: &Context, cmd: &QomCommand) -> Result<(), Failure> {
    if let QomCommand::Fuse {
        rw,
        reconnect,
        mountpoint,
    } = cmd
    {
        let address = ctx.address().ok_or_else(|| {
            Failure::Usage("no QMP address: pass -s ADDR or set QMP_SOCKET".into())
        })?;
        return super::qom_fuse::run(address, *rw, *reconnect, mountpoint).await;
    }
    let client = ctx.connect().await?;
    // --json, or --pretty/--compact (which are about JSON): JSON output.
    let as_json = |asked: bool| asked || ctx.json_given;
    match cmd {
        QomCommand::List { path, json } => {
            if as_json(*json) {
                let listing = client.execute("qom-list", json!({"path": path})).await?;
                ctx.style.print(&listing);
                return Ok(());
            }
            for p in list(&client, path).await? {
                println!("{}", p.display_name());
            }
        }
        QomCommand::Get { target, json } => {
            let (path, property) = split(target)?;
            let value = client
                .execute("qom-get", json!({"path": path, "property": property}))
                .await?;
            if as_json(*json) {
                ctx.style.print(&value);
                return Ok(());
            }
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
        QomCommand::Tree { path, json } => {
            let nodes = tree(&client, path).await?;
            if as_json(*json) {
                ctx.style.print(&node_json(&nodes, path));
            } else {
                print_node(&nodes, path);
            }
        }
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
    /// From an entry of `qom-list` or `qom-list-get`.
    fn from_listing(p: &Value) -> Property {
        Property {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            kind: p["type"].as_str().unwrap_or_default().to_owned(),
        }
    }

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
        .map(|a| a.iter().map(Property::from_listing).collect())
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

impl Node {
    /// From an object's properties, each with its value when it came with
    /// the listing; the others are fetched.
    async fn new(client: &Client, path: &str, listing: Vec<(Property, Option<Value>)>) -> Node {
        let children = listing
            .iter()
            .filter(|(p, _)| p.is_child())
            .map(|(p, _)| child_path(path, &p.name))
            .collect();
        let plain: Vec<(Property, Option<Value>)> =
            listing.into_iter().filter(|(p, _)| !p.is_child()).collect();
        let values = futures_join(plain.iter().map(|(p, value)| async move {
            match value {
                Some(v) => Ok(v.clone()),
                None => get(client, path, &p.name).await,
            }
        }))
        .await;
        Node {
            path: path.to_owned(),
            props: plain.into_iter().map(|(p, _)| p).zip(values).collect(),
            children,
        }
    }
}

/// The paths of the next level down.
fn children_of(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| n.children.iter().cloned())
        .collect()
}

/// A property's value, or the error QEMU gave for it.
async fn get(client: &Client, path: &str, name: &str) -> Result<Value, String> {
    client
        .execute("qom-get", json!({"path": path, "property": name}))
        .await
        .map_err(|e| e.qmp().map_or_else(|| e.to_string(), |q| q.desc.clone()))
}

/// Walks the tree level by level. With `qom-list-get` (QEMU 10.1 and
/// later) each level is one request with every value in it; otherwise
/// each object is a `qom-list` and each property a `qom-get`, all sent at
/// once (the client pipelines them), so a tree of N properties costs a
/// few round trips of latency, not N.
async fn tree(client: &Client, root: &str) -> Result<Vec<Node>, Failure> {
    Ok(match tree_with_list_get(client, root).await? {
        Some(nodes) => nodes,
        None => tree_with_get(client, root).await?,
    })
}

/// The tree by `qom-list-get`; `None` if the server does not have it.
/// Values it leaves out (properties that cannot be read) are asked for
/// with `qom-get`, for QEMU's error text.
async fn tree_with_list_get(client: &Client, root: &str) -> Result<Option<Vec<Node>>, Failure> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut level = vec![root.to_owned()];
    while !level.is_empty() {
        let objects = match client
            .execute("qom-list-get", json!({"paths": level}))
            .await
        {
            Ok(objects) => objects,
            Err(e) if nodes.is_empty() && e.qmp().is_some_and(|q| q.class == "CommandNotFound") => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let objects = match objects.as_array() {
            Some(objects) if objects.len() == level.len() => objects.clone(),
            _ => {
                return Err(Failure::Connection(format!(
                    "qom-list-get answered {objects} for {} paths",
                    level.len()
                )))
            }
        };
        let listed = level.iter().zip(objects).map(|(path, object)| {
            let listing = object["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (Property::from_listing(p), p.get("value").cloned()))
                .collect();
            Node::new(client, path, listing)
        });
        let level_nodes = futures_join(listed).await;
        level = children_of(&level_nodes);
        nodes.extend(level_nodes);
    }
    Ok(Some(nodes))
}

/// The tree by `qom-list` and `qom-get`, each level's requests at once.
async fn tree_with_get(client: &Client, root: &str) -> Result<Vec<Node>, Failure> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut level = vec![root.to_owned()];
    while !level.is_empty() {
        let listings = futures_join(level.iter().map(|p| list(client, p))).await;
        let mut listed = Vec::new();
        for (path, listing) in level.iter().zip(listings) {
            listed.push((path, listing?.into_iter().map(|p| (p, None)).collect()));
        }
        let level_nodes = futures_join(
            listed
                .into_iter()
                .map(|(path, l)| Node::new(client, path, l)),
        )
        .await;
        level = children_of(&level_nodes);
        nodes.extend(level_nodes);
    }
    Ok(nodes)
}

fn print_node(nodes: &[Node], path: &str) {
    let Some(node) = nodes.iter().find(|n| n.path == path) else {
        return;
    };
    println!("{path}");
    for (p, value) in &node.props {
        match value {
            // as qom-get prints it: strings without quotes
            Ok(v) => println!("  {}: {} ({})", p.name, plain(v), p.kind),
            Err(e) => println!("  {}: <error: {e}> ({})", p.name, p.kind),
        }
    }
    println!();
    for child in &node.children {
        print_node(nodes, child);
    }
}

/// The tree under `path` as nested JSON: each object's path, its
/// properties (with `value`, or QEMU's `error` for one that cannot be
/// read) and its children.
fn node_json(nodes: &[Node], path: &str) -> Value {
    let Some(node) = nodes.iter().find(|n| n.path == path) else {
        return Value::Null;
    };
    let properties: Vec<Value> = node
        .props
        .iter()
        .map(|(p, value)| match value {
            Ok(v) => json!({"name": p.name, "type": p.kind, "value": v}),
            Err(e) => json!({"name": p.name, "type": p.kind, "error": e}),
        })
        .collect();
    let children: Vec<Value> = node.children.iter().map(|c| node_json(nodes, c)).collect();
    json!({"path": path, "properties": properties, "children": children})
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
