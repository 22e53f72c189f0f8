//! `shaddock admin ...`: the jobs of Pomelo's CLI (`pomelo list`, kick, broadcast) against a
//! running cluster's admin API (any server's admin port), printed as tables.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The cluster's servers.
    Servers,
    /// Each connector's connections and users.
    Connectors,
    /// Rooms with members, largest first.
    Rooms {
        /// Only names containing this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 50)]
        per_page: usize,
    },
    /// One room's members.
    Room { name: String },
    /// Kicks a user (`name*room`) wherever it is connected.
    Kick {
        uid: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sends an `onChat` from "admin" to everyone, or to one room.
    Broadcast {
        text: String,
        #[arg(long)]
        room: Option<String>,
    },
}

/// Runs one verb against `url` (e.g. `http://127.0.0.1:3114`) with `token`.
pub async fn run(url: &str, token: &str, command: AdminCommand) -> anyhow::Result<()> {
    let api = Api {
        base: format!("{}/admin/api", url.trim_end_matches('/')),
        token: token.to_owned(),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    match command {
        AdminCommand::Servers => {
            let v = api.get("/servers").await?;
            let rows = rows(&v["servers"], |s| {
                vec![
                    text(&s["id"]),
                    text(&s["type"]),
                    text(&s["host"]),
                    text(&s["clientPort"]),
                ]
            });
            print_table(&["ID", "TYPE", "HOST", "CLIENT PORT"], &rows);
        }
        AdminCommand::Connectors => {
            let v = api.get("/connectors").await?;
            let rows = rows(&v["connectors"], |c| {
                vec![
                    text(&c["id"]),
                    format!("{}:{}", text(&c["host"]), text(&c["clientPort"])),
                    text(&c["connections"]),
                    text(&c["users"]),
                    text(&c["error"]),
                ]
            });
            print_table(&["ID", "ADDRESS", "CONNECTIONS", "USERS", "ERROR"], &rows);
        }
        AdminCommand::Rooms {
            search,
            page,
            per_page,
        } => {
            let mut path = format!("/rooms?page={page}&per_page={per_page}");
            if let Some(q) = search {
                path.push_str(&format!("&q={}", encode(&q)));
            }
            let v = api.get(&path).await?;
            let rows = rows(&v["rooms"], |r| vec![text(&r["name"]), text(&r["members"])]);
            print_table(&["ROOM", "MEMBERS"], &rows);
            println!("{} rooms in all (page {page})", text(&v["total"]));
        }
        AdminCommand::Room { name } => {
            let v = api.get(&format!("/rooms/{}", encode(&name))).await?;
            let rows = rows(&v["members"], |m| {
                vec![text(&m["user"]), text(&m["uid"]), text(&m["sid"])]
            });
            print_table(&["USER", "UID", "CONNECTOR"], &rows);
        }
        AdminCommand::Kick { uid, reason } => {
            let v = api.post("/kick", json!({"uid": uid, "reason": reason})).await?;
            println!("kicked {} session(s) of {uid}", text(&v["kicked"]));
        }
        AdminCommand::Broadcast { text: msg, room } => {
            let v = api.post("/broadcast", json!({"text": msg, "rid": room})).await?;
            match room {
                Some(r) => println!("sent to {} member(s) of {r}", text(&v["members"])),
                None => println!("sent to every connector"),
            }
        }
    }
    Ok(())
}

struct Api {
    base: String,
    token: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send("POST", path, Some(body)).await
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .context("building the request")?;
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), self.client.request(request))
            .await
            .with_context(|| format!("{url}: no answer in 10 s"))?
            .with_context(|| format!("{url}: cannot connect (is it a server's admin port?)"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        match status.as_u16() {
            200 => serde_json::from_slice(&body).with_context(|| format!("{url}: the answer is not JSON")),
            401 => bail!("{url}: 401, wrong or missing token (--token or SHADDOCK_ADMIN_TOKEN)"),
            404 if path == "/servers" => {
                bail!("{url}: 404, the console is off on that server (no admin.token)")
            }
            code => bail!("{url}: {code} {}", String::from_utf8_lossy(&body).trim()),
        }
    }
}

/// A JSON value as a table cell: strings bare, null empty.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rows(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|a| a.iter().map(row).collect())
        .unwrap_or_default()
}

/// Percent-encodes what is not unreserved in a URL.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(header, rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_each_column_to_its_widest_cell() {
        let rows = vec![
            vec!["lobby".to_owned(), "12".to_owned()],
            vec!["a".to_owned(), "3".to_owned()],
        ];
        assert_eq!(
            table(&["ROOM", "MEMBERS"], &rows),
            "ROOM   MEMBERS\nlobby  12\na      3\n"
        );
        assert_eq!(encode("a b*c"), "a%20b%2Ac");
    }
}
