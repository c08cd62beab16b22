#!/usr/bin/env python3
"""An example exec hook for openshell-driver-wrapper (docs/hooks.md).

The wrapper runs this program once per invocation, in its own process group,
with a scrubbed environment (PATH, HOME, LANG, TRACEPARENT and the hook's
configured `env`). It writes one HookRequest (proto/hooks.proto) as protobuf
JSON with proto field names on stdin, then closes stdin. The program prints
one HookResponse the same way on stdout and exits 0. Anything on stderr goes
to the wrapper's log under the hook's name; a non-zero exit, no reply or a
reply that is not a HookResponse is a failure, handled by the hook's
failure_policy.

Phases:
  prepare   stamps the plan: the template label
            example.com/stamped-by=exec-example and the template environment
            variable EXAMPLE_STAMP=1, as RFC 6902 patches.
  validate  denies an image tagged ":latest" (FAILED_PRECONDITION),
            allows anything else.
  others    allowed (observe phases ignore the answer anyway).

If EXAMPLE_HOOK_RECORD names a file, the raw request is appended to it, one
line per invocation (the tests grep it for secrets). Configure it with:

  [[hooks]]
  name = "stamp"
  transport = "exec"
  command = ["/path/to/examples/hooks/exec/stamp_hook.py"]
  phases = ["prepare", "validate"]
  env = { EXAMPLE_HOOK_RECORD = "/tmp/stamp-requests.jsonl" }

Only the Python standard library is used.
"""

import json
import os
import sys

LABEL = "example.com/stamped-by"
STAMP = "exec-example"


def pointer_token(key):
    """One JSON pointer token (RFC 6901): "~" and "/" are escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def add_to_map(template, field, key, value):
    """An add patch for template.<field>[key]. An empty map is absent from
    protobuf JSON, so then the whole map is added."""
    base = "/spec/template/" + field
    if field in template:
        return {"op": "add", "path": base + "/" + pointer_token(key), "value": value}
    return {"op": "add", "path": base, "value": {key: value}}


def template_of(request):
    return request.get("sandbox", {}).get("spec", {}).get("template", {})


def prepare(request):
    template = template_of(request)
    return {
        "allowed": True,
        "patches": [
            add_to_map(template, "labels", LABEL, STAMP),
            add_to_map(template, "environment", "EXAMPLE_STAMP", "1"),
        ],
        "log_annotations": {"stamped": "true"},
    }


def validate(request):
    image = template_of(request).get("image", "")
    if ":latest" in image:
        return {
            "allowed": False,
            "reason": "image tag :latest is not allowed",
            "status_code": "FAILED_PRECONDITION",
        }
    return {"allowed": True}


def main():
    raw = sys.stdin.read()
    record = os.environ.get("EXAMPLE_HOOK_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(raw.rstrip("\n") + "\n")
    try:
        request = json.loads(raw)
    except ValueError as e:
        print("request is not JSON: %s" % e, file=sys.stderr)
        return 2
    phase = request.get("phase", "")
    if phase == "prepare":
        response = prepare(request)
    elif phase == "validate":
        response = validate(request)
    else:
        response = {"allowed": True}
    json.dump(response, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
