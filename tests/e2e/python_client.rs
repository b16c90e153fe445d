//! A client in another language: `tests/python/exchange_client.py` drives a
//! permitted and a refused exchange with grpcio stubs generated from the
//! .proto files, and decodes a refusal's `google.rpc.ErrorInfo` with
//! descriptors from the node's reflection service, as a generic tool would. `.ci/run` prepares a Python with grpcio and grpcio-tools and
//! names it in `CII_PYTHON` (and sets `CII_REQUIRE_PYTHON`, so the test cannot
//! be skipped there).

use cii_proto::node::{self as node_pb, node_client::NodeClient};
use cii_tests::{Network, member, with_token};
use cii_types::{InstitutionType, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_sends_a_permitted_and_a_refused_exchange() {
    let Ok(python) = std::env::var("CII_PYTHON") else {
        assert!(
            std::env::var_os("CII_REQUIRE_PYTHON").is_none(),
            "CII_REQUIRE_PYTHON is set but CII_PYTHON is not"
        );
        eprintln!("CII_PYTHON not set: the Python client test runs in .ci/run");
        return;
    };
    let net = Network::start(&[
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ])
    .await;
    let token = net.token(0, "py.client", &[Role::Caseworker]);
    NodeClient::new(net.node_api_channel(0))
        .enrol(with_token(
            node_pb::EnrolRequest {
                avs_number: "756.1234.5678.97".into(),
                local_record_id: "ORP-PY-1".into(),
            },
            &token,
        ))
        .await
        .expect("enrol");
    let token_file = net.dir.path().join("py.token");
    std::fs::write(&token_file, &token).expect("token file");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let node = net.node(0).api;
    let mut command = std::process::Command::new(python);
    command
        .arg(root.join("tests/python/exchange_client.py"))
        .arg("--proto-dir")
        .arg(root.join("proto"))
        .arg("--node")
        .arg(format!("127.0.0.1:{}", node.port()))
        .arg("--ca")
        .arg(net.pki().join("ca.pem"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--record")
        .arg("ORP-PY-1");
    // The node runs on this runtime: wait for the child on a blocking thread.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("\"permitted\": \"PERMIT\"")
            && stdout.contains("\"refused\": \"DENY\"")
            && stdout.contains("\"error_reason\": \"TRANSFER_ID_INVALID\""),
        "{stdout}"
    );
    net.stop().await;
}
