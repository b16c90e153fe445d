"""A client in another language: drives one permitted and one refused exchange
through a node's API with grpcio stubs generated from the project's .proto files,
then reads a refusal's details (google.rpc.Status with its ErrorInfo) the way a
generic tool does: the message types come from the node's reflection service,
not from compiled stubs.

Run by the Rust test `e2e::python_client` (which starts the network and enrols
the person); exits non-zero if the node does not behave as documented.
"""

import argparse
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def generate(proto_dir: str, out: str) -> None:
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    # Every file of the contract: the node's API imports most of them.
    files = sorted(
        os.path.relpath(os.path.join(root, name), proto_dir)
        for root, _, names in os.walk(os.path.join(proto_dir, "cii"))
        for name in names
        if name.endswith(".proto")
    )
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # The generated packages are plain folders: make them importable.
    for root, _, _ in os.walk(os.path.join(out, "cii")):
        open(os.path.join(root, "__init__.py"), "a").close()
    sys.path.insert(0, out)


def error_info_through_reflection(channel, node, node_pb2, metadata) -> dict:
    """Sends a transfer id the network refuses, then decodes the status details with
    descriptors fetched from the server's reflection service (grpcio-reflection)."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    try:
        node.Send(node_pb2.SendRequest(transfer_id="not an id", recipient="AI-VS"), metadata=metadata, timeout=30)
    except grpc.RpcError as error:
        details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    else:
        raise SystemExit("a transfer id with spaces was accepted")
    if details is None:
        raise SystemExit("the refusal carries no grpc-status-details-bin")
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    status_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))
    status = status_class.FromString(details)
    for any_detail in status.details:
        name = any_detail.type_url.rsplit("/", 1)[-1]
        detail = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))()
        any_detail.Unpack(detail)
        if name == "google.rpc.ErrorInfo":
            return {
                "error_reason": detail.reason,
                "error_domain": detail.domain,
                "error_field": detail.metadata.get("field", ""),
            }
    raise SystemExit(f"no ErrorInfo among the details: {[d.type_url for d in status.details]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--node", required=True, help="host:port of the ORP node's API")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--record", required=True)
    options = parser.parse_args()

    out = tempfile.mkdtemp(prefix="cii-py-")
    generate(options.proto_dir, out)
    from cii.exchange.v1 import catalogue_pb2
    from cii.gateway.v1 import gateway_pb2
    from cii.node.v1 import node_pb2, node_pb2_grpc
    from google.protobuf import any_pb2

    with open(options.ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    with open(options.token_file) as f:
        metadata = [("authorization", f"Bearer {f.read().strip()}")]
    channel = grpc.secure_channel(options.node, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
    node = node_pb2_grpc.NodeStub(channel)

    report = catalogue_pb2.EarlyDetectionReport(
        employment_situation="unemployed since 2026-03",
        health_limitations="back pain",
        accident_benefits="SUVA daily allowance",
    )
    payload = any_pb2.Any()
    payload.Pack(report, type_url_prefix="type.googleapis.com/")

    def send(transfer_id, facts):
        return node.Send(
            node_pb2.SendRequest(
                transfer_id=transfer_id,
                recipient="AI-VS",
                local_record_id=options.record,
                trigger=gateway_pb2.SPONTANEOUS_REPORT,
                purpose="early_detection",
                payload=payload,
                attested_facts=facts,
                case_reference="ORP-2026-0417",
            ),
            metadata=metadata,
            timeout=30,
        )

    permitted = send("py-1", ["person_informed_before", "incapacity_for_work_or_threatened"])
    refused = send("py-2", [])
    result = {
        "permitted": permitted.decision.Outcome.Name(permitted.decision.outcome),
        "permitted_bases": [b.id for b in permitted.decision.bases],
        "withheld": [w.category for w in permitted.decision.withheld],
        "refused": refused.decision.Outcome.Name(refused.decision.outcome),
        "refused_reasons": [r.code for r in refused.decision.reasons],
    }
    result.update(error_info_through_reflection(channel, node, node_pb2, metadata))
    print(json.dumps(result))
    ok = (
        result["permitted"] == "PERMIT"
        and "LAI-3b-2-i" in result["permitted_bases"]
        and "accident_benefits" in result["withheld"]
        and result["refused"] == "DENY"
        and "CONDITION_NOT_MET" in result["refused_reasons"]
        and result["error_reason"] == "TRANSFER_ID_INVALID"
        and result["error_domain"] == "cii.exchange"
        and result["error_field"] == "transfer_id"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
