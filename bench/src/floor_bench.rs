//! `tessera-bench ping`: the per-request floor, to read slate figures
//! against. With the server's pid, `PING` round trips over the protocol
//! give what one request costs the server before any work; with `--echo`,
//! a bare blocking echo thread in this process (one `read`, one `write` per
//! message) gives what a round trip costs on this machine at all.

use crate::net_bench::{connect, process_cpu_us, stat_cpu_us, BoxError, TargetArgs};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Arguments of `tessera-bench ping`.
#[derive(Clone, Debug, clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Round trips timed (after a tenth as many untimed).
    #[arg(long, default_value_t = 50_000)]
    count: u64,
    /// Bytes sent each way.
    #[arg(long, default_value_t = 64)]
    bytes: usize,
    /// The server's pid, for its CPU time per round trip.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Round trips to a bare echo thread instead of a server.
    #[arg(long)]
    echo: bool,
}

/// Runs the round trips and prints the figures.
pub fn ping(args: &PingArgs) -> Result<(), BoxError> {
    let (hist, server_cpu) = if args.echo {
        echo_round_trips(args)?
    } else {
        ping_round_trips(args)?
    };
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let what = if args.echo {
        "bare echo thread"
    } else {
        "tessera PING"
    };
    println!(
        "{what}, {} B, {} round trips{}: p50 {:.1} µs, p99 {:.1} µs, p999 {:.1} µs{}",
        args.bytes,
        args.count,
        if args.target.busy_poll {
            ", client busy-polling"
        } else {
            ""
        },
        us(0.5),
        us(0.99),
        us(0.999),
        server_cpu.map_or(String::new(), |c| format!(
            ", server CPU {c:.1} µs per round trip"
        )),
    );
    Ok(())
}

type Timed = (Histogram<u64>, Option<f64>);

fn time_round_trips(
    count: u64,
    cpu: impl Fn() -> Option<u64>,
    mut trip: impl FnMut() -> Result<(), BoxError>,
) -> Result<Timed, BoxError> {
    for _ in 0..count / 10 {
        trip()?;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let before = cpu();
    for _ in 0..count {
        let t = Instant::now();
        trip()?;
        hist.record((t.elapsed().as_nanos() as u64).max(1))?;
    }
    let per_trip = before
        .zip(cpu())
        .map(|(b, a)| a.saturating_sub(b) as f64 / count.max(1) as f64);
    Ok((hist, per_trip))
}

fn ping_round_trips(args: &PingArgs) -> Result<Timed, BoxError> {
    let mut client = connect(&args.target)?;
    let payload = vec![7u8; args.bytes];
    let cpu = || args.server_pid.and_then(|p| process_cpu_us(p).ok());
    time_round_trips(args.count, cpu, || {
        client.ping(&payload)?;
        Ok(())
    })
}

fn echo_round_trips(args: &PingArgs) -> Result<Timed, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: gettid has no preconditions.
        let _ = tid_tx.send(unsafe { libc::gettid() });
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        }
    });
    let tid = tid_rx.recv()?;
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(args.target.busy_poll)?;
    let (msg, mut back) = (vec![7u8; args.bytes], vec![0u8; args.bytes]);
    let cpu = || stat_cpu_us(&format!("/proc/self/task/{tid}/stat")).ok();
    time_round_trips(args.count, cpu, || {
        s.write_all(&msg)?;
        let mut got = 0;
        while got < back.len() {
            match s.read(&mut back[got..]) {
                Ok(0) => return Err("the echo thread closed".into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
}
