//! Test helper for the crash test: appends to an audit log from many writers
//! as fast as it can and prints `<index> <transfer id>` for every append that
//! was acknowledged (durable), until it is killed.
//!
//! Usage: cii-audit-load STORE_URL KEY_FILE ORIGIN

use std::io::Write;
use std::sync::Arc;

use cii_audit::note::Signer;
use cii_audit::{Entry, EntryKind, Log, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, origin] = args.as_slice() else {
        eprintln!("usage: cii-audit-load STORE_URL KEY_FILE ORIGIN");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pem = std::fs::read_to_string(key).expect("key");
        let signer = Arc::new(Signer::from_pem(origin, &pem).expect("signer"));
        let store = Store::open(url).await.expect("store");
        let (log, _task) = Log::open(store, signer, origin.clone()).await.expect("log");
        let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let run = std::process::id();
        let mut writers = Vec::new();
        for w in 0..16u32 {
            let (log, stdout) = (log.clone(), stdout.clone());
            writers.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let transfer_id = format!("r{run}-w{w}-{i}");
                    let entry = Entry {
                        kind: EntryKind::TransferPermitted as i32,
                        transfer_id: transfer_id.clone(),
                        sender: "ORP-VS".into(),
                        ..Entry::default()
                    };
                    let receipt = log.append(entry).await.expect("append");
                    let mut out = stdout.lock().expect("stdout");
                    let _ = writeln!(out, "{} {transfer_id}", receipt.index);
                    let _ = out.flush();
                }
            }));
        }
        for w in writers {
            let _ = w.await;
        }
    });
}
