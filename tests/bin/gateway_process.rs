//! A gateway as a process of its own, for the fault tests (which SIGKILL, SIGSTOP and
//! SIGCONT it): what `cii gateway --config FILE` runs — the gRPC address bound once the gateway
//! may serve, stopped cleanly by SIGTERM. Exits 1 with the error on stderr (e.g. when its
//! sequencer lease was lost).
//!
//! Usage: cii-test-gateway CONFIG_FILE

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config] = args.as_slice() else {
        eprintln!("usage: cii-test-gateway CONFIG_FILE");
        std::process::exit(2);
    };
    let config = match cii_gateway::GatewayConfig::load(std::path::Path::new(config)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // Its log to stderr, as `cii gateway` writes it (the fault test reads it).
    cii_kit::telemetry::init(&config.file.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async move {
        let listeners = cii_gateway::Listeners {
            grpc: cii_gateway::GrpcListener::Address(config.file.listen),
            metrics: None,
        };
        cii_gateway::run(config, listeners, cii_kit::shutdown::signal()).await
    });
    if let Err(e) = result {
        eprintln!("gateway stopped: {e}");
        std::process::exit(1);
    }
}
