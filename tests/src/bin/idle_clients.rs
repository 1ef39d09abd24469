//! Opens many client connections to a MySQL endpoint and holds them, idle
//! or running a light load, for the memory benchmark (`bench/memory.sh`).
//!
//! idle_clients PORT CLIENTS HOLD_SECS [QUERY_EVERY_MS]

use sluice_tests::raw::RawClient;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, name: &str| -> anyhow::Result<u64> {
        args.get(i)
            .ok_or_else(|| anyhow::anyhow!("missing {name}"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let port = arg(1, "PORT")? as u16;
    let clients = arg(2, "CLIENTS")? as usize;
    let hold = Duration::from_secs(arg(3, "HOLD_SECS")?);
    let every = args
        .get(4)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    sluice_tests::raise_fd_limit();

    let mut conns = Vec::with_capacity(clients);
    // Connect in batches so the listener's backlog is not overrun.
    for batch in (0..clients).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(
            batch
                .iter()
                .map(|_| RawClient::connect_without_schema(port, "app", "app")),
        )
        .await;
        for c in opened {
            conns.push(c?);
        }
    }
    println!("ready {}", conns.len());
    match every {
        None => tokio::time::sleep(hold).await,
        Some(every) => {
            let tasks = conns.into_iter().enumerate().map(|(i, mut c)| {
                tokio::spawn(async move {
                    // Spread the clients over the interval.
                    tokio::time::sleep(every.mul_f64((i % 1000) as f64 / 1000.0)).await;
                    let deadline = tokio::time::Instant::now() + hold;
                    let mut errors = 0usize;
                    while tokio::time::Instant::now() < deadline {
                        // Result set: column count, then definition, EOF, row, EOF.
                        let ok = match c.command(b"\x03SELECT 1").await {
                            Ok(first) if first.payload.first() == Some(&1) => {
                                let mut rest = Ok(());
                                for _ in 0..4 {
                                    if let Err(e) = c.stream.read_packet().await {
                                        rest = Err(e);
                                        break;
                                    }
                                }
                                rest.is_ok()
                            }
                            _ => false,
                        };
                        if !ok {
                            errors += 1;
                        }
                        tokio::time::sleep(every).await;
                    }
                    errors
                })
            });
            let errors: usize = futures_util::future::join_all(tasks)
                .await
                .into_iter()
                .map(|r| r.unwrap_or(1))
                .sum();
            println!("errors {errors}");
        }
    }
    Ok(())
}
