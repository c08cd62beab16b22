#!/usr/bin/python3
"""An example grpc hook: a LifecycleHook server on a Unix socket.

  prepare   adds the label example.com/grpc-hook: seen to the plan
  validate  denies a sandbox without a `team` label (FAILED_PRECONDITION)

Debian's python3-grpcio and python3-protobuf are all it needs. The message
modules come from protoc (generate.sh); the service is registered by hand
with grpc.method_handlers_generic_handler, so no grpc_tools plugin is needed.

  examples/hooks/grpc/generate.sh /tmp/hook-pb2
  /usr/bin/python3 examples/hooks/grpc/quota_label_hook.py \
      --socket /run/owrap-hooks/quota-label.sock --pb2-dir /tmp/hook-pb2 [--record FILE]
"""

import argparse
import json
import os
import signal
import sys
import threading
from concurrent import futures

SERVICE = "openshell.driver_wrapper.hooks.v1.LifecycleHook"
PROTOCOL_VERSION = 1
LABEL = "example.com/grpc-hook"


def json_pointer_token(key):
    return key.replace("~", "~0").replace("/", "~1")


class QuotaLabelHook:
    def __init__(self, pb, json_format, record):
        self.pb = pb
        self.json_format = json_format
        self.record = record
        self.record_lock = threading.Lock()

    def describe(self, request, context):
        return self.pb.HookManifest(
            name="quota-label",
            phases=["prepare", "validate"],
            failure_policy="fail_closed",
            # The block of driver_config.<wrapper> this hook owns: its
            # instance name, as the wrapper's configuration gives it.
            request_config_key=request.hook,
            protocol_version=PROTOCOL_VERSION,
        )

    def invoke(self, request, context):
        self.write_record(request)
        if request.phase == "prepare":
            return self.prepare(request)
        if request.phase == "validate":
            return self.validate(request)
        # Phases this hook does not claim in Describe: allow, change nothing.
        return self.pb.HookResponse(allowed=True)

    def prepare(self, request):
        op = self.pb.PatchOperation(op="add")
        spec = request.sandbox.spec
        # RFC 6902 `add` needs the parent to exist: add the smallest
        # missing object.
        if not spec.HasField("template"):
            op.path = "/spec/template"
            op.value.struct_value.update({"labels": {LABEL: "seen"}})
        elif not spec.template.labels:
            op.path = "/spec/template/labels"
            op.value.struct_value.update({LABEL: "seen"})
        else:
            op.path = "/spec/template/labels/" + json_pointer_token(LABEL)
            op.value.string_value = "seen"
        return self.pb.HookResponse(allowed=True, patches=[op], log_annotations={"labelled": LABEL})

    def validate(self, request):
        if "team" not in request.sandbox.spec.template.labels:
            return self.pb.HookResponse(
                allowed=False, reason="label team is required", status_code="FAILED_PRECONDITION"
            )
        return self.pb.HookResponse(allowed=True)

    def write_record(self, request):
        if not self.record:
            return
        line = json.dumps(self.json_format.MessageToDict(request, preserving_proto_field_name=True))
        with self.record_lock, open(self.record, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True, help="absolute Unix socket path to serve on")
    parser.add_argument("--pb2-dir", default=os.path.join(here, "gen"), help="where generate.sh put the _pb2 modules")
    parser.add_argument("--record", help="append each request as JSON to this file")
    args = parser.parse_args()

    sys.path.insert(0, args.pb2_dir)
    import grpc
    from google.protobuf import json_format
    import hooks_pb2 as pb

    hook = QuotaLabelHook(pb, json_format, args.record)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Describe": grpc.unary_unary_rpc_method_handler(
                hook.describe,
                request_deserializer=pb.DescribeRequest.FromString,
                response_serializer=pb.HookManifest.SerializeToString,
            ),
            "Invoke": grpc.unary_unary_rpc_method_handler(
                hook.invoke,
                request_deserializer=pb.HookRequest.FromString,
                response_serializer=pb.HookResponse.SerializeToString,
            ),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        handlers=[handler],
        # The wrapper pings every 30 s, also between calls: accept that
        # instead of answering with GOAWAY "too many pings".
        options=[
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10000),
        ],
    )
    if server.add_insecure_port("unix:" + args.socket) == 0:
        sys.exit("cannot serve on " + args.socket)
    server.start()
    print(json.dumps({"message": "quota-label hook serving", "socket": args.socket}), file=sys.stderr, flush=True)

    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
