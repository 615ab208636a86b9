"""Generate docs/api.md, the API reference, from the comments in proto/credit_repair/v1/*.proto.

The .proto files are the one place the API is described; this script only re-presents them.
It asks protoc itself for the schema (``--include_source_info --descriptor_set_out``) and reads
the comments from ``SourceCodeInfo``, so nothing here parses .proto text and every construct
protoc understands is documented the way protoc understands it. Every proto file of the
``credit_repair.v1`` package is included, new ones as soon as they exist.

Each RPC gets a ``grpcurl`` example against the dev workspace (``credgate init --dir var/demo``).
Request bodies are hand-picked for the RPCs in ``EXAMPLE_BODIES`` and generated from the request
message for the rest; every body is parsed into its request message here, so an example that no
longer matches the schema stops the generator instead of reaching the docs.

    python scripts/gen_api_docs.py            # rewrite docs/api.md
    python scripts/gen_api_docs.py --check    # fail if docs/api.md is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gen_protos import PROTO_ROOT, ROOT, include_paths
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_tools import protoc

from credgate.api.credit_repair.v1 import input_rules_pb2

PACKAGE = "credit_repair.v1"
PACKAGE_DIR = PROTO_ROOT / "credit_repair" / "v1"
OUTPUT = ROOT / "docs" / "api.md"
REGENERATE = "python scripts/gen_api_docs.py"
TARGET = "127.0.0.1:50051"
PKI = "var/demo/pki"
DEFAULT_INSTITUTION = "court-demo"
INSTITUTIONS = {
    # Who may call, where the service (or one RPC) needs a role other than the default's.
    "RegulatorService": "regulator-demo",
    "ReconciliationService": "regulator-demo",
    "ProviderSyncService": "provider-disclosure",
    "SelfInquiryService": "subject.<k>",
    "ConsentService.EnrollSubjectKey": "office-demo",
    "ConsentService.GrantConsent": "bank-demo",
    "ConsentService.GetConsent": "bank-demo",
    "ConsentService.ListConsents": "bank-demo",
    "ConsentService.RevokeConsent": "bank-demo",
    "ObjectionService": "subject.<k>",
    "ObjectionService.RecordSourceReply": "provider-registry",
    "ObjectionService.ListOverdueObjections": "regulator-demo",
    "RepairApplicationService": "subject.<k>",
    "RepairApplicationService.ReviewRepairApplication": "court-demo",
    "RepairApplicationService.RuleOnRepairApplication": "court-demo",
    "RepairApplicationService.ObjectToRepairApplication": "bank-demo",
}
OBSERVATION_SUBJECT = "440304198511030421"
EXAMPLE_BODIES: dict[str, Any] = {
    "RepairStatusService.GetRepairStatus": {
        "identityNumber": OBSERVATION_SUBJECT,
        "purpose": "PURPOSE_JUDICIAL_INVESTIGATION",
        "caseReference": "(2026)粤03执1号",
    },
    "RepairStatusService.BatchGetRepairStatus": {"requests": [
        {"identityNumber": OBSERVATION_SUBJECT, "purpose": "PURPOSE_JUDICIAL_INVESTIGATION",
         "caseReference": "(2026)粤03执1号"},
        {"identityNumber": "44030519780512031X", "purpose": "PURPOSE_JUDICIAL_INVESTIGATION",
         "caseReference": "(2026)粤03执1号"},
    ]},
    "ConsentService.ListConsents": {"pageSize": 20, "state": "CONSENT_STATE_ACTIVE"},
    "ReconciliationService.ListOpenContradictions": {"pageSize": 20},
}
"""Hand-picked request bodies (JSON names), for RPCs a generated skeleton would explain badly."""

_SCALAR_EXAMPLES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: False,
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "",
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: 0.0,
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: 0.0,
}
_WELL_KNOWN_EXAMPLES: dict[str, Any] = {
    ".google.protobuf.Timestamp": "2026-11-01T00:00:00Z",
    ".google.protobuf.Duration": "60s",
    ".google.type.Date": {"year": 2026, "month": 11, "day": 1},
}
_TYPE_NAMES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}
# SourceCodeInfo paths: tag numbers of FileDescriptorProto, DescriptorProto, ...
_MESSAGE, _ENUM, _SERVICE, _PACKAGE = 4, 5, 6, 2
_FIELD, _NESTED, _NESTED_ENUM, _VALUE, _METHOD = 2, 3, 4, 2, 2


def descriptor_set(proto_dir: Path = PACKAGE_DIR) -> descriptor_pb2.FileDescriptorSet:
    """Compile every .proto of the package (with imports) into one descriptor set."""
    protos = sorted(proto_dir.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files in {proto_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = ["grpc_tools.protoc", *(f"-I{p}" for p in include_paths())]
        args += ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}"]
        args += [str(p.relative_to(PROTO_ROOT)) for p in protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc could not compile the protos (see above)")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


class Comments:
    """The comments of one file, by SourceCodeInfo path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {
            tuple(loc.path): loc for loc in file.source_code_info.location if loc.path
        }

    def __call__(self, *path: int) -> str:
        loc = self._by_path.get(path)
        if loc is None:
            return ""
        parts = [_dedent(c) for c in (loc.leading_comments, loc.trailing_comments) if c.strip()]
        return "\n\n".join(parts)


def _dedent(comment: str) -> str:
    lines = comment.rstrip().split("\n")
    return "\n".join(line[1:] if line.startswith(" ") else line for line in lines).strip()


def _cell(text: str) -> str:
    """A comment as one table cell: paragraphs kept apart, pipes escaped."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "<br><br>".join(p for p in paragraphs if p).replace("|", "\\|") or "—"


def _rules_text(field: descriptor_pb2.FieldDescriptorProto) -> str:
    """The field's declared input rules (input_rules.proto) in a few words, or ""."""
    if not field.options.HasExtension(input_rules_pb2.rules):
        return ""
    rules = field.options.Extensions[input_rules_pb2.rules]
    parts = []
    if rules.shape:
        shape = input_rules_pb2.FieldShape.Name(rules.shape).removeprefix("FIELD_SHAPE_")
        parts.append(shape.lower().replace("_", " "))
    if rules.required:
        parts.append("required")
    if rules.min_size:
        parts.append(f"at least {rules.min_size} bytes")
    if rules.max_size:
        unit = "bytes" if field.type == field.TYPE_BYTES else "characters"
        parts.append(f"at most {rules.max_size:,} {unit}")
    if rules.HasField("min_value"):
        parts.append(f"at least {rules.min_value}")
    if rules.HasField("max_value"):
        parts.append(f"at most {rules.max_value}")
    if rules.max_items:
        parts.append(f"at most {rules.max_items:,} items")
    if rules.per_item:
        parts.append("each item checked and answered on its own")
    return ", ".join(parts)


def _anchor(full_name: str) -> str:
    return full_name.lstrip(".")


def _type_ref(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        name = _anchor(field.type_name)
        if name.startswith(PACKAGE + "."):
            return f"[{name.removeprefix(PACKAGE + '.')}](#{name})"
        return f"`{name}`"
    return f"`{_TYPE_NAMES[field.type]}`"


class Renderer:
    """Writes the reference for one descriptor set."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = files
        self.pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            self.pool.Add(file)
        self.messages = {
            f".{file.package}.{name}": message
            for file in files.file
            for name, message in _all_messages(file.message_type)
        }
        self.ours = sorted(
            (f for f in files.file if f.package == PACKAGE), key=lambda f: f.name
        )

    def render(self) -> str:
        out = [
            "# credgate API reference (`credit_repair.v1`)",
            "",
            f"<!-- Generated by `{REGENERATE}` from the comments in "
            "proto/credit_repair/v1/*.proto. Do not edit: change the .proto comments and "
            "regenerate. -->",
            "",
            *_CALLING,
            "## Services",
            "",
            "| Service | RPCs | Defined in |",
            "|---|---|---|",
        ]
        for file in self.ours:
            for service in file.service:
                full = f"{PACKAGE}.{service.name}"
                out.append(f"| [{service.name}](#{full}) | {len(service.method)} | `{file.name}` |")
        out.append("")
        for file in self.ours:
            out += self._file(file)
        return "\n".join(out).rstrip() + "\n"

    def _file(self, file: descriptor_pb2.FileDescriptorProto) -> list[str]:
        comments = Comments(file)
        out = [f"## `{file.name}`", ""]
        if summary := comments(_PACKAGE):
            out += [summary, ""]
        for index, service in enumerate(file.service):
            out += self._service(service, comments, (_SERVICE, index))
        for index, message in enumerate(file.message_type):
            out += self._message(message, f"{PACKAGE}.{message.name}", comments, (_MESSAGE, index))
        for index, enum in enumerate(file.enum_type):
            out += _enum(enum, f"{PACKAGE}.{enum.name}", comments, (_ENUM, index))
        return out

    def _service(
        self, service: descriptor_pb2.ServiceDescriptorProto, comments: Comments,
        path: tuple[int, ...],
    ) -> list[str]:
        full = f"{PACKAGE}.{service.name}"
        out = [f'<a id="{full}"></a>', "", f"### service `{service.name}`", ""]
        if text := comments(*path):
            out += [text, ""]
        for index, method in enumerate(service.method):
            request, response = _anchor(method.input_type), _anchor(method.output_type)
            arrow_in = "stream " if method.client_streaming else ""
            arrow_out = "stream " if method.server_streaming else ""
            out += [
                f'<a id="{full}.{method.name}"></a>', "",
                f"#### rpc `{method.name}`", "",
                f"`rpc {method.name}({arrow_in}{request.removeprefix(PACKAGE + '.')}) returns "
                f"({arrow_out}{response.removeprefix(PACKAGE + '.')})` — request "
                f"[{request.removeprefix(PACKAGE + '.')}](#{request}), response "
                f"[{response.removeprefix(PACKAGE + '.')}](#{response})", "",
            ]
            if text := comments(*path, _METHOD, index):
                out += [text, ""]
            out += self._example(service.name, method)
        return out

    def _message(
        self, message: descriptor_pb2.DescriptorProto, full: str, comments: Comments,
        path: tuple[int, ...],
    ) -> list[str]:
        if message.options.map_entry:
            return []
        out = [f'<a id="{full}"></a>', "", f"### message `{full.removeprefix(PACKAGE + '.')}`", ""]
        if text := comments(*path):
            out += [text, ""]
        if message.field:
            out += ["| Field | Number | Type | Description |", "|---|---|---|---|"]
            for index, field in enumerate(message.field):
                description = _cell(comments(*path, _FIELD, index))
                if rules := _rules_text(field):
                    description += f" *Input rules: {rules}.*"
                out.append(
                    f"| `{field.name}` | {field.number} | {self._field_type(field)} | "
                    f"{description} |"
                )
            out.append("")
        else:
            out += ["No fields.", ""]
        for index, nested in enumerate(message.nested_type):
            out += self._message(nested, f"{full}.{nested.name}", comments, (*path, _NESTED, index))
        for index, enum in enumerate(message.enum_type):
            out += _enum(enum, f"{full}.{enum.name}", comments, (*path, _NESTED_ENUM, index))
        return out

    def _field_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        entry = self.messages.get(field.type_name)
        if entry is not None and entry.options.map_entry:
            key, value = entry.field
            return f"map<{_type_ref(key)}, {_type_ref(value)}>"
        label = "repeated " if field.label == field.LABEL_REPEATED else ""
        oneof = ""
        if field.HasField("oneof_index") and not field.proto3_optional:
            oneof = " (oneof)"
        deprecated = " (deprecated)" if field.options.deprecated else ""
        return f"{label}{_type_ref(field)}{oneof}{deprecated}"

    def _example(self, service: str, method: descriptor_pb2.MethodDescriptorProto) -> list[str]:
        key = f"{service}.{method.name}"
        body = EXAMPLE_BODIES.get(key)
        if body is None:
            body = self._skeleton(method.input_type, depth=0)
        request_class = message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName(_anchor(method.input_type))
        )
        try:
            json_format.Parse(json.dumps(body), request_class())
        except json_format.ParseError as exc:
            raise SystemExit(f"example for {key} does not fit its request message: {exc}") from exc
        who = INSTITUTIONS.get(key) or INSTITUTIONS.get(service) or DEFAULT_INSTITUTION
        tls = f"-cacert {PKI}/ca.pem -cert {PKI}/{who}.pem -key {PKI}/{who}.key"
        text = json.dumps(body, ensure_ascii=False)
        if len(text) > 72:
            text = json.dumps(body, ensure_ascii=False, indent=2)
        name = f"{PACKAGE}.{service}/{method.name}"
        if method.client_streaming:
            lines = [f"grpcurl {tls} \\", f"  -d @ {TARGET} {name} <<'EOF'",
                     json.dumps(body, ensure_ascii=False), "EOF"]
        else:
            lines = [f"grpcurl {tls} \\", f"  -d {_shell_quote(text)} \\", f"  {TARGET} {name}"]
        return ["```sh", *lines, "```", ""]

    def _skeleton(self, type_name: str, depth: int) -> Any:
        """A request body naming every field once, with a placeholder of the right type."""
        if type_name in _WELL_KNOWN_EXAMPLES:
            return _WELL_KNOWN_EXAMPLES[type_name]
        message = self.messages[type_name]
        body: dict[str, Any] = {}
        oneofs_seen: set[int] = set()
        for field in message.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                if field.oneof_index in oneofs_seen:
                    continue
                oneofs_seen.add(field.oneof_index)
            entry = self.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                body[field.json_name] = {}
                continue
            if field.type == field.TYPE_MESSAGE and depth >= 2:
                continue
            value = self._value(field, depth)
            body[field.json_name] = [value] if field.label == field.LABEL_REPEATED else value
        return body

    def _value(self, field: descriptor_pb2.FieldDescriptorProto, depth: int) -> Any:
        if field.type == field.TYPE_MESSAGE:
            return self._skeleton(field.type_name, depth + 1)
        if field.type == field.TYPE_ENUM:
            enum = self.pool.FindEnumTypeByName(_anchor(field.type_name))
            values = [v.name for v in enum.values if v.number != 0] or [enum.values[0].name]
            return values[0]
        if field.type == field.TYPE_STRING:
            return OBSERVATION_SUBJECT if field.name == "identity_number" else f"<{field.name}>"
        if field.type in _SCALAR_EXAMPLES:
            return _SCALAR_EXAMPLES[field.type]
        if field.name == "page_size":
            return 20
        wide = field.type in (field.TYPE_INT64, field.TYPE_UINT64, field.TYPE_SINT64,
                              field.TYPE_FIXED64, field.TYPE_SFIXED64)
        return "0" if wide else 0


def _all_messages(
    messages: Sequence[descriptor_pb2.DescriptorProto], prefix: str = ""
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}{message.name}"
        yield name, message
        yield from _all_messages(message.nested_type, name + ".")


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, full: str, comments: Comments,
    path: tuple[int, ...],
) -> list[str]:
    out = [f'<a id="{full}"></a>', "", f"### enum `{full.removeprefix(PACKAGE + '.')}`", ""]
    if text := comments(*path):
        out += [text, ""]
    out += ["| Value | Number | Description |", "|---|---|---|"]
    for index, value in enumerate(enum.value):
        out.append(f"| `{value.name}` | {value.number} | {_cell(comments(*path, _VALUE, index))} |")
    return [*out, ""]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


_CALLING = [
    "## Calling the API",
    "",
    "The gateway speaks gRPC over mutual TLS; the caller is the institution named in its client",
    "certificate. The examples use the development workspace (`credgate init --dir var/demo`:",
    "a dev CA, a certificate per demo institution, `gateway.toml`) with the mock sources:",
    "",
    "```sh",
    "bash scripts/demo --serve    # credgate init --dir var/demo, the mocks, the gateway on :50051",
    "```",
    "",
    "The gateway serves gRPC server reflection (`grpc.reflection.v1` and the older `v1alpha`), "
    "so `grpcurl` and other tools need no .proto files:",
    "",
    "```sh",
    f"grpcurl -cacert {PKI}/ca.pem -cert {PKI}/court-demo.pem -key {PKI}/court-demo.key \\",
    f"  {TARGET} list",
    f"grpcurl -cacert {PKI}/ca.pem -cert {PKI}/court-demo.pem -key {PKI}/court-demo.key \\",
    f"  {TARGET} describe {PACKAGE}.RepairStatusService",
    "```",
    "",
    "Against a server without reflection, add",
    "`-import-path proto -proto credit_repair/v1/<file>.proto`. Each example uses the certificate",
    "of an institution whose role may call the RPC (`court-demo`, a judicial organ, unless the",
    "RPC needs another role). Bodies are the protobuf JSON mapping; values in `<angle brackets>`",
    "are placeholders to fill in. Errors come back as `google.rpc.Status` with an `ErrorInfo`",
    "reason (listed under each RPC).",
    "",
    "Any RPC may also end with these, before its own checks:",
    "",
    "* `UNAUTHENTICATED` when the client certificate does not name a valid institution (reasons",
    "  `INSTITUTION_…`), has expired or is not yet valid (`CERTIFICATE_EXPIRED`,",
    "  `CERTIFICATE_NOT_YET_VALID`: checked on every call, not only when the connection opened)",
    "  or has been revoked (`CERTIFICATE_REVOKED`). A certificate refused by the TLS handshake",
    "  itself shows as `UNAVAILABLE … Socket closed` (docs/deployment.md, \"Certificates\").",
    "* `DEADLINE_EXCEEDED` / `REQUEST_NOT_RECEIVED` when the request message has not arrived",
    "  within `[connections] first_message_seconds` (5 s) of the call opening, streams included;",
    "  `INVALID_ARGUMENT` / `REQUEST_MISSING` for a unary call closed without one.",
    "* `UNAVAILABLE` when the connection was closed under the call: past its maximum age and",
    "  grace, or the gateway stopping. Reconnect (gRPC does) and retry or resume.",
    "",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write (docs/api.md)")
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    args = parser.parse_args(argv)
    text = Renderer(descriptor_set()).render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current == text:
            print(f"{args.output} is current")
            return 0
        diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "committed",
                                    "regenerated", lineterm="", n=1)
        print(f"{args.output} is stale; run: {REGENERATE}", file=sys.stderr)
        print("\n".join(list(diff)[:60]), file=sys.stderr)
        return 1
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
