//! Secured peer RPC (issue 13's targets): our HTTPS and WSS servers and clients against the
//! same without TLS, and against grenache-nodejs-http / -ws with `secure`, in one run. Every
//! side shows a certificate from one CA made for the run (mutual TLS, as the Node peers'
//! `secure` option does it). ZeroMQ rows are CURVE in place of TLS, ours against libzmq
//! (the `zeromq` npm package) with the same keys ([`rpc::CurveKeys`]).

use std::path::Path;

use grenache_io::testkit::pki::TestCa;

use super::grapes::{self, Kind};
use super::report::{RpcRow, TlsRow};
use super::rpc::{self, Run, Security};
use super::sections::Ctx;

/// The transports with TLS (CURVE for ZeroMQ), by the name the report uses.
const TRANSPORTS: [&str; 3] = ["http", "ws", "zmq"];

/// The TLS section.
pub fn tls(ctx: &mut Ctx) -> Result<(), String> {
    let dir = ctx.env.logs.join("tls-pem");
    write_pem(&dir)?;
    let only = ctx.rpc_only.clone();
    for kind in ctx.kinds.clone() {
        let grape = grapes::start_network(&ctx.env, kind, 1, "tls")?.remove(0);
        let url = format!("http://{}", grape.api);
        for tr in TRANSPORTS.into_iter().filter(|t| only.transport(t)) {
            // Node's plain rows are in the RPC section; here only its TLS ones.
            let modes: &[bool] = if kind == Kind::Rust {
                &[false, true]
            } else {
                &[true]
            };
            for &secure in modes {
                let pem = secure.then_some(dir.as_path());
                if let Err(e) = rows(ctx, kind, &url, tr, pem) {
                    ctx.part_failed(&format!("tls {} {tr} secure={secure}", kind.name()), &e);
                }
            }
        }
        drop(grape);
    }
    Ok(())
}

/// A CA, and one leaf for 127.0.0.1 that every server and client shows ([`rpc::pem_files`]).
fn write_pem(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = TestCa::new("grape-bench CA");
    let leaf = ca.issue("grape-bench");
    let [ca_path, cert, key] = rpc::pem_files(dir);
    for (path, text) in [
        (ca_path, ca.pem()),
        (cert, leaf.cert_pem),
        (key, leaf.key_pem),
    ] {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// One echo server of `kind` over `tr` (TLS with `pem`), and every payload and
/// concurrency against it from a client of the same kind.
fn rows(
    ctx: &mut Ctx,
    kind: Kind,
    url: &str,
    tr: &'static str,
    pem: Option<&Path>,
) -> Result<(), String> {
    let secure = pem.is_some();
    let service = format!("bench_tls_{tr}_{secure}");
    let log = ctx
        .env
        .logs
        .join(format!("tls-{}-{tr}-{secure}-server.log", kind.name()));
    let server = rpc::echo_server(ctx, kind, url, &service, tr, pem, &log)?;
    let only = ctx.rpc_only.clone();
    for bytes in rpc::PAYLOADS.into_iter().filter(|b| only.payload(*b)) {
        for c in rpc::CONCURRENCY {
            let run = Run {
                grape: url,
                service: &service,
                tr,
                bytes,
                concurrency: c,
                warmup: ctx.timing.warmup,
                measure: ctx.timing.measure,
                server: server.pid,
                security: Security::of(pem, tr),
                client_cores: ctx.client_cores,
                peer_connections: ctx.peer_connections,
                busy_poll: ctx.busy_poll,
            };
            let row: RpcRow = match kind {
                Kind::Rust => rpc::rust_load(&run, kind)?,
                Kind::Node => rpc::node_load(ctx, &run)?,
            };
            eprintln!(
                "  tls {:4} {tr:4} secure={secure:<5} {bytes:>5} B c={c:<2} {:>8.0} req/s p99 {} ms errors {} server cores {}",
                kind.name(),
                row.rps,
                super::stats::ms(row.p99),
                row.errors,
                row.server_cpu.map_or("-".into(), |v| format!("{v:.2}")),
            );
            ctx.report.tls.push(TlsRow { secure, rpc: row });
            if !server.is_running() {
                return Err(format!("the server exited:\n{}", server.log_tail(20)));
            }
        }
    }
    Ok(())
}
