//! `subscribe`: prints a Falconet server's alerts as the alert JSON, one per line. The Rust SDK's example, and
//! what the multi-language tests and bench/sdk_clients.py run.
//!
//!     subscribe --unix-socket /run/falconet/falconet.sock --from oldest --count 10
//!     subscribe --addr localhost:5060 --ca certs/ca.crt --cert certs/client.crt --key certs/client.key

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use falconet_sdk::{Client, Config, Filter, Start, SubscribeOptions};

const USAGE: &str = "usage: subscribe [--unix-socket PATH | --addr HOST:PORT --ca FILE --cert FILE --key FILE \
[--server-name NAME]] [--from oldest|now|EPOCH:SEQ] [--count N] [--batched] [--output json|none] [--stats] \
[--min-priority P] [--rule NAME]... [--tag TAG]...";

struct Args {
    unix: Option<String>,
    addr: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    from: Start,
    count: u64,
    batched: bool,
    json: bool,
    stats: bool,
    filter: Filter,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        unix: None,
        addr: None,
        ca: None,
        cert: None,
        key: None,
        server_name: None,
        from: Start::Now,
        count: 0,
        batched: false,
        json: true,
        stats: false,
        filter: Filter::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match name.as_str() {
            "--unix-socket" => a.unix = Some(value(&mut it)?),
            "--addr" => a.addr = Some(value(&mut it)?),
            "--ca" => a.ca = Some(value(&mut it)?.into()),
            "--cert" => a.cert = Some(value(&mut it)?.into()),
            "--key" => a.key = Some(value(&mut it)?.into()),
            "--server-name" => a.server_name = Some(value(&mut it)?),
            "--from" => a.from = value(&mut it)?.parse().map_err(|e| format!("{e}"))?,
            "--count" => {
                let v = value(&mut it)?;
                a.count = v
                    .parse()
                    .map_err(|_| format!("--count must be a number, not {v:?}"))?;
            }
            "--batched" => a.batched = true,
            "--stats" => a.stats = true,
            "--output" => match value(&mut it)?.as_str() {
                "json" => a.json = true,
                "none" => a.json = false,
                v => return Err(format!("--output must be json or none, not {v:?}")),
            },
            "--min-priority" => a.filter.min_priority = Some(value(&mut it)?),
            "--rule" => a.filter.rules.push(value(&mut it)?),
            "--tag" => a.filter.tags.push(value(&mut it)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn config(a: &Args) -> Result<Config, String> {
    match (&a.unix, &a.addr) {
        (Some(_), Some(_)) => Err("give either --unix-socket or --addr, not both".into()),
        (_, Some(addr)) => match (&a.ca, &a.cert, &a.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Config::Tls {
                addr: addr.clone(),
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: a.server_name.clone(),
            }),
            _ => Err("mTLS needs --ca, --cert and --key".into()),
        },
        (unix, None) => {
            if a.ca.is_some() || a.cert.is_some() || a.key.is_some() {
                return Err(
                    "the UNIX socket takes no certificates: drop --ca/--cert/--key or use --addr"
                        .into(),
                );
            }
            Ok(Config::Unix(
                unix.clone()
                    .unwrap_or_else(|| "/run/falconet/falconet.sock".into()),
            ))
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let client = Client::connect(&config(&a)?).map_err(|e| e.to_string())?;
    let opts = SubscribeOptions {
        batched: a.batched,
        fail_fast: true,
        on_reconnect: Some(std::sync::Arc::new(|e, wait| {
            eprintln!("subscribe: {e}; reconnecting in {wait:?}")
        })),
        on_warning: Some(std::sync::Arc::new(|msg| {
            eprintln!("subscribe: warning: {msg}")
        })),
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut n: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut write_err: Option<std::io::Error> = None;
    let (count, json) = (a.count, a.json);
    let sub = client.subscribe(&a.filter, a.from.clone(), &opts, |alert| {
        first.get_or_insert_with(Instant::now);
        n += 1;
        if json {
            let mut line = alert.to_json();
            line.push('\n');
            // Flush per alert, so a reader sees each alert as it comes (--output none for throughput).
            let res = out.write_all(line.as_bytes()).and_then(|()| out.flush());
            if let Err(e) = res {
                write_err = Some(e);
                return ControlFlow::Break(());
            }
        }
        if count > 0 && n >= count {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let result = tokio::select! {
        r = sub => r.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    out.flush().map_err(|e| format!("writing to stdout: {e}"))?;
    if let Some(e) = write_err {
        return Err(format!("writing to stdout: {e}"));
    }
    if a.stats && n > 0 {
        if let Some(t) = first {
            eprintln!("received {n} alerts in {:.6} s", t.elapsed().as_secs_f64());
        }
    }
    result
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("subscribe: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("subscribe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subscribe: {e}");
            ExitCode::FAILURE
        }
    }
}
