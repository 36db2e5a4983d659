"""Wire compatibility with Falco's clients: the compiled descriptors of falco.outputs, falco.schema and
falco.version against Falco's field list (names, numbers, types, streaming directions)."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from falconet.sdk.api.falco import outputs_pb2, schema_pb2, version_pb2

T = FieldDescriptor


def _fields(msg: Descriptor) -> dict[int, tuple[str, int, str]]:
    out = {}
    for f in msg.fields:
        type_name = (
            f.message_type.full_name if f.message_type else (f.enum_type.full_name if f.enum_type else "")
        )
        out[f.number] = (f.name, f.type, type_name)
    return out


def test_packages_and_no_top_level_falco_module() -> None:
    assert outputs_pb2.DESCRIPTOR.package == "falco.outputs"
    assert schema_pb2.DESCRIPTOR.package == "falco.schema"
    assert version_pb2.DESCRIPTOR.package == "falco.version"
    assert outputs_pb2.__name__.startswith("falconet.")


def test_outputs_service_methods_and_streaming() -> None:
    service = outputs_pb2.DESCRIPTOR.services_by_name["service"]
    assert service.full_name == "falco.outputs.service"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {"sub", "get"}
    sub, get = methods["sub"], methods["get"]
    assert (sub.client_streaming, sub.server_streaming) == (True, True)
    assert (get.client_streaming, get.server_streaming) == (False, True)
    for m in (sub, get):
        assert m.input_type.full_name == "falco.outputs.request"
        assert m.output_type.full_name == "falco.outputs.response"


def test_outputs_response_falco_fields() -> None:
    fields = _fields(outputs_pb2.DESCRIPTOR.message_types_by_name["response"])
    falco = {
        1: ("time", T.TYPE_MESSAGE, "google.protobuf.Timestamp"),
        2: ("priority", T.TYPE_ENUM, "falco.schema.priority"),
        3: ("source_deprecated", T.TYPE_ENUM, "falco.schema.source"),
        4: ("rule", T.TYPE_STRING, ""),
        5: ("output", T.TYPE_STRING, ""),
        6: ("output_fields", T.TYPE_MESSAGE, "falco.outputs.response.OutputFieldsEntry"),
        7: ("hostname", T.TYPE_STRING, ""),
        8: ("tags", T.TYPE_STRING, ""),
        9: ("source", T.TYPE_STRING, ""),
    }
    for number, expected in falco.items():
        assert fields[number] == expected, number
    desc = outputs_pb2.DESCRIPTOR.message_types_by_name["response"]
    entry = desc.fields_by_name["output_fields"].message_type
    assert entry is not None and entry.GetOptions().map_entry
    assert entry.fields_by_name["key"].type == T.TYPE_STRING
    assert entry.fields_by_name["value"].type == T.TYPE_STRING
    assert desc.fields_by_name["tags"].is_repeated
    assert desc.fields_by_name["source_deprecated"].GetOptions().deprecated
    # Our additions only: new numbers, explicit presence or repeated.
    extra = {n: f for n, f in fields.items() if n not in falco}
    assert {f[0] for f in extra.values()} == {"cursor", "output_fields_json"}
    assert desc.fields_by_name["cursor"].has_presence


def test_outputs_request_has_only_optional_additions() -> None:
    desc = outputs_pb2.request.DESCRIPTOR
    assert 1 not in {f.number for f in desc.fields}  # Falco's placeholder for tags stays free
    for f in desc.fields:
        assert f.has_presence, f.name  # an empty Falco request never reads as a filter or start position
    assert outputs_pb2.request().ByteSize() == 0


def test_schema_enums_with_aliases() -> None:
    prio = schema_pb2.DESCRIPTOR.enum_types_by_name["priority"]
    names = {v.name: v.number for v in prio.values}
    for number, name in enumerate(
        ["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFORMATIONAL", "DEBUG"]
    ):
        assert names[name] == names[name.lower()] == names[name.capitalize()] == number
    src = schema_pb2.DESCRIPTOR.enum_types_by_name["source"]
    names = {v.name: v.number for v in src.values}
    assert names["SYSCALL"] == names["syscall"] == names["Syscall"] == 0
    assert names["K8S_AUDIT"] == names["k8s_audit"] == names["K8s_audit"] == names["K8S_audit"] == 1
    assert names["INTERNAL"] == names["internal"] == names["Internal"] == 2
    assert names["PLUGIN"] == names["plugin"] == names["Plugin"] == 3


def test_version_service_and_fields() -> None:
    service = version_pb2.DESCRIPTOR.services_by_name["service"]
    assert service.full_name == "falco.version.service"
    [method] = service.methods
    assert method.name == "version" and not method.client_streaming and not method.server_streaming
    assert method.input_type.full_name == "falco.version.request"
    assert not version_pb2.request.DESCRIPTOR.fields
    expected = {
        1: ("version", T.TYPE_STRING),
        2: ("major", T.TYPE_UINT32),
        3: ("minor", T.TYPE_UINT32),
        4: ("patch", T.TYPE_UINT32),
        5: ("prerelease", T.TYPE_STRING),
        6: ("build", T.TYPE_STRING),
        7: ("engine_minor", T.TYPE_UINT32),
        8: ("engine_fields_checksum", T.TYPE_STRING),
        9: ("engine_major", T.TYPE_UINT32),
        10: ("engine_patch", T.TYPE_UINT32),
        11: ("engine_version", T.TYPE_STRING),
    }
    fields = _fields(version_pb2.DESCRIPTOR.message_types_by_name["response"])
    got = {n: (name, typ) for n, (name, typ, _) in fields.items()}
    assert got == expected
