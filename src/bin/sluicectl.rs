//! `sluicectl`: the operator's client for sluice's admin API.
//!
//! A thin blocking HTTP client (ureq): each subcommand is one request;
//! `--json` prints the API's answer as is, otherwise a table.

use clap::{Args, Parser, Subcommand};
use sluice::admin::api::{Count, DestInfo, ErrorBody, QueueInfo, Status, Trace};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluicectl", version, about = "Control a running sluice")]
struct Cli {
    /// The admin API.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8025")]
    url: String,
    /// File holding the bearer token.
    #[arg(long, global = true, default_value = "/var/lib/sluice/admin.token")]
    token_file: PathBuf,
    /// Print the raw JSON answer.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct TargetArgs {
    /// The destination domain.
    domain: Option<String>,
    /// Every destination of this queue instead.
    #[arg(long)]
    queue: Option<String>,
}

#[derive(Args)]
struct FilterArgs {
    /// Recipients at this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Messages from this envelope sender.
    #[arg(long)]
    sender: Option<String>,
    /// This message (queue id, hex).
    #[arg(long)]
    message_id: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Uptime and each shard's counters.
    Status,
    /// Each shard's queues: waiting, deferred, connections.
    Queues,
    /// Destinations: waiting, deferred, oldest age, next attempt, paused.
    Destinations {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Stop new transactions to a destination or queue (mail keeps waiting).
    Pause(TargetArgs),
    /// Undo pause.
    Resume(TargetArgs),
    /// Retry a destination's or queue's deferred recipients now.
    Flush(TargetArgs),
    /// Fail queued recipients now, with a DSN to the sender.
    Bounce(FilterArgs),
    /// Drop queued recipients silently (logged as `deleted`).
    Delete(FilterArgs),
    /// A message's delivery-log events and where it is queued now.
    Trace {
        /// Queue id from the 250 reply.
        queue_id: String,
    },
    /// Reload TLS and AUTH files and reopen logs (like SIGHUP).
    Reload,
    /// Print the Prometheus metrics.
    Metrics,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluicectl: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(cli: &Cli) -> Result<Api, String> {
        let token = std::fs::read_to_string(&cli.token_file)
            .map_err(|e| format!("{}: cannot read the token: {e}", cli.token_file.display()))?
            .trim()
            .to_string();
        Ok(Api {
            base: cli.url.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .build(),
        })
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<String, String> {
        let mut req = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in query {
            req = req.query(k, v);
        }
        answer(req.call())
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Result<String, String> {
        let req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", "application/json");
        answer(req.send_string(&body.to_string()))
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Result<String, String> {
    match r {
        Ok(resp) => resp.into_string().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            Err(format!("{code}: {msg}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("unexpected answer: {e}: {text}"))
}

fn run(cli: &Cli) -> Result<(), String> {
    let api = Api::new(cli)?;
    let text = match &cli.command {
        Command::Status => api.get("/v1/status", &[])?,
        Command::Queues => api.get("/v1/queues", &[])?,
        Command::Destinations { queue, domain } => {
            let mut q = Vec::new();
            if let Some(v) = queue {
                q.push(("queue", v.as_str()));
            }
            if let Some(v) = domain {
                q.push(("domain", v.as_str()));
            }
            api.get("/v1/destinations", &q)?
        }
        Command::Pause(t) => api.post("/v1/pause", &target(t)?)?,
        Command::Resume(t) => api.post("/v1/resume", &target(t)?)?,
        Command::Flush(t) => api.post("/v1/flush", &target(t)?)?,
        Command::Bounce(f) => api.post("/v1/bounce", &filter(f))?,
        Command::Delete(f) => api.post("/v1/delete", &filter(f))?,
        Command::Trace { queue_id } => api.get(&format!("/v1/trace/{queue_id}"), &[])?,
        Command::Reload => api.post("/v1/reload", &serde_json::json!({}))?,
        Command::Metrics => api.get("/metrics", &[])?,
    };
    if cli.json || matches!(cli.command, Command::Metrics) {
        println!("{}", text.trim_end());
        return Ok(());
    }
    match &cli.command {
        Command::Status => print_status(&parse(&text)?),
        Command::Queues => print_queues(&parse::<Vec<QueueInfo>>(&text)?),
        Command::Destinations { .. } => print_destinations(&parse::<Vec<DestInfo>>(&text)?),
        Command::Pause(_) | Command::Resume(_) => {
            println!(
                "{} destinations or queues changed",
                parse::<Count>(&text)?.count
            )
        }
        Command::Flush(_) => println!("{} recipients flushed", parse::<Count>(&text)?.count),
        Command::Bounce(_) => println!("{} recipients bounced", parse::<Count>(&text)?.count),
        Command::Delete(_) => println!("{} recipients deleted", parse::<Count>(&text)?.count),
        Command::Trace { .. } => print_trace(&parse(&text)?),
        Command::Reload => println!("reloaded"),
        Command::Metrics => {}
    }
    Ok(())
}

fn target(t: &TargetArgs) -> Result<serde_json::Value, String> {
    if t.domain.is_none() && t.queue.is_none() {
        return Err("give a DOMAIN or --queue NAME".into());
    }
    Ok(serde_json::json!({ "domain": t.domain, "queue": t.queue }))
}

fn filter(f: &FilterArgs) -> serde_json::Value {
    serde_json::json!({ "domain": f.domain, "sender": f.sender, "message_id": f.message_id })
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

fn print_status(s: &Status) {
    println!("uptime {}  cores {}", secs(Some(s.uptime_secs)), s.cores);
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>5} {:>6} {:>6} {:>7} {:>7} {:>6}",
        "shard",
        "accepted",
        "rcpts",
        "delivered",
        "deferred",
        "bounced",
        "expired",
        "deleted",
        "dsns",
        "conns",
        "opened",
        "queued",
        "q_rcpt",
        "retry"
    );
    for x in &s.shards {
        println!(
            "{:>5} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>5} {:>6} {:>6} {:>7} {:>7} {:>6}",
            x.shard,
            x.accepted_messages,
            x.accepted_recipients,
            x.delivered,
            x.deferred,
            x.bounced,
            x.expired,
            x.deleted,
            x.dsns,
            x.connections_open,
            x.connections_opened,
            x.queued_messages,
            x.queued_recipients,
            x.retry_heap
        );
    }
}

fn print_queues(qs: &[QueueInfo]) {
    println!(
        "{:>5} {:<20} {:>6} {:>8} {:>8} {:>6} {:>6} {:>9}",
        "shard", "queue", "dests", "waiting", "deferred", "conns", "paused", "delivered"
    );
    for q in qs {
        println!(
            "{:>5} {:<20} {:>6} {:>8} {:>8} {:>6} {:>6} {:>9}",
            q.shard,
            q.queue,
            q.destinations,
            q.waiting,
            q.deferred,
            q.active_connections,
            q.paused,
            q.delivered
        );
    }
}

fn print_destinations(ds: &[DestInfo]) {
    println!(
        "{:>5} {:<30} {:<12} {:>8} {:>8} {:>7} {:>7} {:>5} {:>6} {:>7} {:>5} {:>9}  signal",
        "shard",
        "destination",
        "queue",
        "waiting",
        "deferred",
        "oldest",
        "next",
        "conns",
        "paused",
        "rate",
        "limit",
        "suspended",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    for d in ds {
        // A sender pool's sub-queue of a domain: `domain/pool`.
        let name = match &d.pool {
            Some(p) => format!("{}/{p}", d.destination),
            None => d.destination.clone(),
        };
        println!(
            "{:>5} {:<30} {:<12} {:>8} {:>8} {:>7} {:>7} {:>5} {:>6} {:>7} {:>5} {:>9}  {}",
            d.shard,
            name,
            d.queue,
            d.waiting,
            d.deferred,
            secs(d.oldest_age_secs),
            secs(d.next_attempt_secs),
            d.active_connections,
            if d.paused { "yes" } else { "no" },
            d.rate.map_or_else(|| "-".into(), |r| format!("{r:.1}/s")),
            d.concurrency.map_or_else(|| "-".into(), |c| c.to_string()),
            secs(d.suspended_until.map(|t| (t - now).max(0.0))),
            d.last_signal.as_deref().unwrap_or("-")
        );
    }
}

fn print_trace(t: &Trace) {
    println!("message {}", t.message_id);
    for e in &t.events {
        let f = |k: &str| {
            e.get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default()
        };
        println!(
            "  {} {:<9} {} {} {} {}",
            f("time"),
            f("event"),
            f("recipient"),
            f("code"),
            f("status"),
            f("text")
        );
    }
    for q in &t.queued {
        println!(
            "  queued on shard {}: {} ({}, {} attempts, next in {})",
            q.shard,
            q.recipient,
            q.state,
            q.attempts,
            secs(q.next_attempt_secs)
        );
    }
    if t.events.is_empty() && t.queued.is_empty() {
        println!("  nothing logged or queued for this id");
    }
}
