"""ka.* and jevt.* fields: what rules with `source: k8s_audit` read from a Kubernetes audit event.

Field names, arguments and meanings are Falco's (0.25's k8s_audit filterchecks, and the k8saudit plugin's current
field list, which adds init/ephemeral containers, command/args and a few more). Values and comparisons follow
Falco 0.25's JSON semantics (rules/k8saudit_values.py), which both Falco's own k8s_audit rules and the
PodSecurityPolicy rules falcoctl generated were written against.

Where a field walks a list (containers, volumes, role rules), an element that lacks the key contributes `<NA>`
rather than failing the whole field (0.25 failed it, the plugin skips the element): a second privileged
container is then seen (`intersects (true)`), and a container without readOnlyRootFilesystem still fails
`in (true)`. The effective run-as ids use the pod's securityContext as the default for each container, then 0,
as Falco 0.25 did.

These fields register into the shared table (rules/fields/registry.py) with a `check` builder, so the compiler hands
their comparisons to rules/k8saudit_values.py; rules/sources.py keeps them to k8s_audit rules.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

from falconet.model.audit import JsonValue

from ..errors import CompileError
from ..k8saudit_values import NA, HasMemo, Value, as_text, build_check, parse_value, render, value_text
from .registry import Extractor, FieldSpec, FieldType, register

Reader = Callable[[dict[str, JsonValue], str | None], list[str] | None]
"""Reads a field's texts from the audit object (with the field's argument); None when it cannot be read."""

K8S_AUDIT_PREFIXES = ("ka.", "jevt.")

_MISSING = object()


def _get(obj: JsonValue, *keys: str) -> JsonValue | object:
    for key in keys:
        if not isinstance(obj, dict):
            return _MISSING
        obj = obj.get(key, _MISSING)  # type: ignore[arg-type]
        if obj is _MISSING:
            return _MISSING
    return obj


def _texts(value: JsonValue | object) -> list[str] | None:
    """A value at the end of a path: an array gives one text per element, anything else one text."""
    if value is _MISSING:
        return None
    if isinstance(value, list):
        return [as_text(v) for v in value]
    return [as_text(value)]  # type: ignore[arg-type]


def _index(arg: str | None) -> int | None:
    return None if arg is None else int(arg)


def _pick(items: list[JsonValue], arg: str | None) -> list[JsonValue] | None:
    i = _index(arg)
    if i is None:
        return items
    return [items[i]] if i < len(items) else None


def path(*keys: str) -> Reader:
    return lambda data, _arg: _texts(_get(data, *keys))


def _each(list_keys: tuple[str, ...], *item_keys: str, default: Callable[[dict[str, JsonValue]], str] | None = None,
          optional: bool = False) -> Reader:  # fmt: skip
    """One text per element of the list at `list_keys`: the value at `item_keys` (lists flattened), `<NA>` (or
    the default) where an element lacks it; the argument, if any, picks one element. An absent list is
    unreadable (`<NA>`), or, when `optional` (initContainers, ephemeralContainers), simply has no elements."""

    def read(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
        items = _get(data, *list_keys)
        if items is _MISSING and optional:
            return []
        if not isinstance(items, list):
            return None
        picked = _pick(items, arg)
        if picked is None:
            return None
        out: list[str] = []
        for item in picked:
            value = _get(item, *item_keys)
            if value is _MISSING:
                out.append(default(data) if default is not None else NA)
            elif isinstance(value, list):
                out.extend(as_text(v) for v in value)
            else:
                out.append(as_text(value))  # type: ignore[arg-type]
        return out

    return read


def _repository(image: str) -> str:
    """The repository part of an image reference, as libsinsp splits it (no registry host, no tag or digest)."""
    host, slash, rest = image.partition("/")
    if not (slash and ("." in host or ":" in host or host == "localhost")):
        rest = image
    if "@" in rest:
        return rest.partition("@")[0]
    return rest.partition(":")[0]


def _images(list_name: str, repository: bool, first_only: bool = False) -> Reader:
    read = _each(("requestObject", "spec", list_name), "image", optional=list_name != "containers")

    def images(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
        found = read(data, "0" if first_only else arg)
        if found is None:
            return None
        return [_repository(v) if repository and v != NA else v for v in found]

    return images


def _effective(list_name: str, key: str) -> Reader:
    def pod_default(data: dict[str, JsonValue]) -> str:
        value = _get(data, "requestObject", "spec", "securityContext", key)
        return as_text(value) if value is not _MISSING else "0"  # type: ignore[arg-type]

    return _each(("requestObject", "spec", list_name), "securityContext", key, default=pod_default,
                 optional=list_name != "containers")


def _pod_list(data: dict[str, JsonValue], list_name: str) -> list[JsonValue] | None:
    """The pod spec's `containers`, `initContainers` or `ephemeralContainers`: an absent optional list is
    empty; an absent or malformed `containers` (every pod has one) is unknown (None)."""
    items = _get(data, "requestObject", "spec", list_name)
    if items is _MISSING and list_name != "containers":
        return []
    return items if isinstance(items, list) else None


def _drops(list_name: str) -> Reader:
    def read(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
        items = _pod_list(data, list_name)
        if items is None:
            return None
        out = []
        for item in items:
            drop = _get(item, "securityContext", "capabilities", "drop")
            names = {str(c) for c in drop} if isinstance(drop, list) else set()
            out.append("true" if arg in names or "ALL" in names else "false")
        return out

    return read


def _effective_flag(list_name: str, *keys: str) -> Reader:
    def pod_default(data: dict[str, JsonValue]) -> str:
        value = _get(data, "requestObject", "spec", "securityContext", *keys)
        return NA if value is _MISSING else as_text(value)  # type: ignore[arg-type]

    return _each(("requestObject", "spec", list_name), "securityContext", *keys, default=pod_default,
                 optional=list_name != "containers")


def _declared_host_ports(list_name: str) -> Reader:
    def ports(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
        items = _pod_list(data, list_name)
        if items is None:
            return None
        out = []
        for item in _pick(items, arg) or []:
            declared = item.get("ports") if isinstance(item, dict) else None
            for port in declared if isinstance(declared, list) else []:
                if isinstance(port, dict) and "hostPort" in port:
                    out.append(as_text(port["hostPort"]))
        return out

    return ports


def _host_ports(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
    containers = _get(data, "requestObject", "spec", "containers")
    if not isinstance(containers, list):
        return None
    picked = _pick(containers, arg)
    if picked is None:
        return None
    out: list[str] = []
    for container in picked:
        ports = _get(container, "ports")
        for port in ports if isinstance(ports, list) else ():
            if isinstance(port, dict):
                # With hostNetwork the container port is the host port.
                value = port["hostPort"] if "hostPort" in port else port.get("containerPort")
                if "hostPort" in port or "containerPort" in port:
                    out.append(as_text(value))
    return out


def _volume_types(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
    vols = _get(data, "requestObject", "spec", "volumes")
    if not isinstance(vols, list):
        return None
    picked = _pick(vols, arg)
    if picked is None:
        return None
    return [key for vol in picked if isinstance(vol, dict) for key in vol if key != "name"]


def _volume_hostpath_flag(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
    """Deprecated ka.req.volume.hostpath[PATH]: "true" when a hostPath volume is PATH (or under PATH* )."""
    paths = _each(("requestObject", "spec", "volumes"), "hostPath", "path")(data, None)
    want = arg or ""
    for p in paths or ():
        if p != NA and (p.startswith(want[:-1]) if want.endswith("*") else p == want):
            return ["true"]
    return ["false"]


def _any_privileged(data: dict[str, JsonValue], _arg: str | None) -> list[str] | None:
    flags = _each(("requestObject", "spec", "containers"), "securityContext", "privileged")(data, None)
    if flags is None:
        return None
    return ["true" if "true" in flags else "false"]


def _rule_attr(attr: str) -> Reader:
    def read(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
        found = _each(("requestObject", "rules"), attr)(data, arg)
        return None if found is None else [v for v in found if v != NA]

    return read


def _subjects(kind: str, namespaced: bool = False) -> Reader:
    def read(data: dict[str, JsonValue], _arg: str | None) -> list[str] | None:
        subjects = _get(data, "requestObject", "subjects")
        if not isinstance(subjects, list):
            return [] if subjects is _MISSING else None
        out = []
        for s in subjects:
            if isinstance(s, dict) and s.get("kind") == kind and isinstance(s.get("name"), str):
                name = str(s["name"])
                if namespaced:
                    ns = s.get("namespace")
                    if not isinstance(ns, str):
                        continue
                    name = f"{ns}:{name}"
                out.append(name)
        return out

    return read


def _unquote(text: str) -> str:
    """Percent-decoding of a query component (`+` is a space), invalid escapes left as they are."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        hexpair = text[i + 1 : i + 3]
        if text[i] == "%" and len(hexpair) == 2 and all(c in "0123456789abcdefABCDEF" for c in hexpair):
            out.append(int(hexpair, 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode("utf-8", errors="replace")


def _query_param(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
    """ka.uri.param[NAME]: the first NAME=value of the request URI's query, decoded."""
    uri = _get(data, "requestURI")
    if not isinstance(uri, str) or "?" not in uri:
        return None
    for part in uri.partition("?")[2].split("&"):
        key, _, value = part.partition("=")
        if _unquote(key) == arg:
            return [_unquote(value)]
    return None


def _target_pod_name(data: dict[str, JsonValue], _arg: str | None) -> list[str] | None:
    if _get(data, "objectRef", "resource") != "pods" or _get(data, "objectRef", "subresource") is not _MISSING:
        return None
    return _texts(_get(data, "responseObject", "metadata", "name"))


def _pointer(arg: str | None) -> tuple[str, ...]:
    """A JSON pointer (RFC 6901) as its unescaped reference tokens; raises CompileError for a malformed one."""
    text = arg or ""
    if text and not text.startswith("/"):
        raise CompileError(f"jevt.value[{text}]: a JSON pointer must be empty or start with '/'")
    tokens = text.split("/")[1:] if text else []
    for tok in tokens:
        if "~" in tok.replace("~0", "").replace("~1", ""):
            raise CompileError(f"jevt.value[{text}]: '~' must be followed by 0 or 1 in a JSON pointer")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def _jevt_value(data: dict[str, JsonValue], arg: str | None) -> list[str] | None:
    value: JsonValue | object = data
    for tok in _pointer(arg):
        if isinstance(value, list):
            if not tok.isdigit() or int(tok) >= len(value):
                return None
            value = value[int(tok)]
        elif isinstance(value, dict):
            value = value.get(tok, _MISSING)
            if value is _MISSING:
                return None
        else:
            return None
    return [as_text(value)]  # type: ignore[arg-type]  # jevt.value is one value, even for an array


def _utc(ts: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts // 1_000_000_000, tz=_dt.UTC)


# --- registration --------------------------------------------------------------------------------------------


def _check_index(name: str) -> Callable[[str], str | None]:
    def check(arg: str) -> str | None:
        return None if arg.isascii() and arg.isdigit() else f"field '{name}' requires a numeric index, not '{arg}'"

    return check


def _values_of(key: str, read: Reader, arg: str | None) -> Callable[[HasMemo], tuple[Value, ...]]:
    """The field's parsed values for an event, extracted once per event and field reference (the memo)."""

    def values(e: HasMemo) -> tuple[Value, ...]:
        memo = e.memo
        found = memo.get(key)
        if found is None:
            try:
                texts = read(e.data, arg)
            except (TypeError, ValueError, IndexError):  # an object of an unexpected shape: unreadable
                texts = None
            found = memo[key] = (NA,) if texts is None else tuple(parse_value(t) for t in texts)
        return found

    return values


def ka(name: str, read: Reader, desc: str, arg: str = "none", *, is_list: bool = False) -> None:
    """Registers one k8s_audit field; `arg` is none, index (optional number) or key (required text)."""

    def bound_values(a: str | None) -> Callable[[HasMemo], tuple[Value, ...]]:
        return _values_of(f"{name}[{a}]" if a is not None else name, read, a)

    def build(a: str | None) -> Extractor:
        values = bound_values(a)

        def extract(e: Any) -> str | None:  # an AuditEvent (the k8s_audit source's event)
            return render(tuple(value_text(v) for v in values(e)))

        return extract

    def check_builder(a: str | None) -> Callable[[str, tuple[str, ...]], Callable[[HasMemo], bool]]:
        values = bound_values(a)

        def make(op: str, literals: tuple[str, ...]) -> Callable[[HasMemo], bool]:
            try:
                return build_check(op, literals, values, f"{name}[{a}]" if a is not None else name)
            except ValueError as exc:
                raise CompileError(f"{exc} (field '{name}')") from None

        return make

    mode = {"none": "none", "index": "optional", "key": "required"}[arg]
    register(
        FieldSpec(
            name, FieldType.STRING, build, mode, desc=desc, is_list=False,
            check_arg=_check_index(name) if arg == "index" else None, check=check_builder,
        )
    )  # fmt: skip
    del is_list  # list-valued or not, every k8s_audit field compares through its value tuple


def _register_all() -> None:
    ka("ka.auditid", path("auditID"), "the unique id of the audit event")
    ka("ka.stage", path("stage"), "stage of the request (RequestReceived, ResponseComplete, ...)")
    ann = ("annotations",)
    ka("ka.auth.decision", path(*ann, "authorization.k8s.io/decision"), "the authorization decision")
    ka("ka.auth.reason", path(*ann, "authorization.k8s.io/reason"), "the authorization reason")
    ka("ka.auth.openshift.decision", path(*ann, "authentication.openshift.io/decision"), "OpenShift's decision")
    ka("ka.auth.openshift.username", path(*ann, "authentication.openshift.io/username"), "OpenShift's user")
    ka("ka.validations.admission.policy.failure",
       path(*ann, "validation.policy.admission.k8s.io/validation_failure"), "admission policy failures")
    ka("ka.security.pod.violations", path(*ann, "pod-security.kubernetes.io/audit-violations"),
       "Pod Security admission violations")  # fmt: skip
    ka("ka.cluster.name", path(*ann, "cluster_name"), "the cluster name, when annotated")
    ka("ka.user.name", path("user", "username"), "the user name performing the request")
    ka("ka.user.groups", path("user", "groups"), "the groups of the user", is_list=True)
    ka("ka.impuser.name", path("impersonatedUser", "username"), "the impersonated user name")
    ka("ka.verb", path("verb"), "the action being performed")
    ka("ka.uri", path("requestURI"), "the request URI as sent from client to server")
    ka("ka.uri.param", _query_param, "a query parameter of the URI, ka.uri.param[NAME]", "key")
    ka("ka.useragent", path("userAgent"), "the user agent of the client")
    ka("ka.sourceips", _each(("sourceIPs",)), "the client's addresses", "index", is_list=True)
    for attr in ("name", "namespace", "resource", "subresource"):
        ka(f"ka.target.{attr}", path("objectRef", attr), f"the target object {attr}")
    ka("ka.target.pod.name", _target_pod_name, "the pod name, for requests on pods")
    req = ("requestObject",)
    ka("ka.req.binding.subjects", path(*req, "subjects"), "the subjects a binding links", is_list=True)
    ka("ka.req.binding.subjects.user_names", _subjects("User"), "user subjects", is_list=True)
    ka("ka.req.binding.subjects.group_names", _subjects("Group"), "group subjects", is_list=True)
    ka("ka.req.binding.subjects.serviceaccount_names", _subjects("ServiceAccount"), "service accounts",
       is_list=True)  # fmt: skip
    ka("ka.req.binding.subjects.serviceaccount_ns_names", _subjects("ServiceAccount", True),
       "service accounts as NAMESPACE:NAME", is_list=True)  # fmt: skip
    ka("ka.req.binding.role", path(*req, "roleRef", "name"), "the role a binding links")
    ka("ka.req.binding.subject.has_name", lambda _d, _a: ["true"], "deprecated, always true", "key")
    ka("ka.req.configmap.name", path("objectRef", "name"), "the configmap name")
    ka("ka.req.configmap.obj", path(*req, "data"), "the configmap's data, as JSON")
    _register_pod_fields()
    ka("ka.req.role.rules", path(*req, "rules"), "the rules of a role", is_list=True)
    for attr in ("apiGroups", "nonResourceURLs", "verbs", "resources"):
        ka(f"ka.req.role.rules.{attr}", _rule_attr(attr), f"the role rules' {attr}", "index", is_list=True)
    ka("ka.req.service.type", path(*req, "spec", "type"), "the service type")
    ka("ka.req.service.ports", _each((*req, "spec", "ports")), "the service's ports", "index", is_list=True)
    ka("ka.resp.name", path("responseObject", "metadata", "name"), "the response object name")
    ka("ka.response.code", path("responseStatus", "code"), "the response code")
    ka("ka.response.reason", path("responseStatus", "reason"), "the response reason")
    ka("jevt.value", _jevt_value, "the value at a JSON pointer, jevt.value[/POINTER]", "key")
    ka("jevt.obj", lambda d, _a: [as_text(d)], "the whole event as JSON")


def _register_pod_fields() -> None:
    spec = ("requestObject", "spec")
    for key, attr in (("host_ipc", "hostIPC"), ("host_network", "hostNetwork"), ("host_pid", "hostPID")):
        ka(f"ka.req.pod.{key}", path(*spec, attr), f"the pod's {attr} flag")
    ka("ka.req.container.host_network", path(*spec, "hostNetwork"), "deprecated alias of ka.req.pod.host_network")
    sc = (*spec, "securityContext")
    ka("ka.req.pod.run_as_user", path(*sc, "runAsUser"), "the pod's runAsUser")
    ka("ka.req.pod.run_as_group", path(*sc, "runAsGroup"), "the pod's runAsGroup")
    ka("ka.req.pod.fs_group", path(*sc, "fsGroup"), "the pod's fsGroup")
    ka("ka.req.pod.supplemental_groups", path(*sc, "supplementalGroups"), "the pod's supplemental groups",
       is_list=True)  # fmt: skip
    ka("ka.req.container.image", _images("containers", False, True), "deprecated: the first container's image")
    ka("ka.req.container.image.repository", _images("containers", True, True),
       "deprecated: the first container's repository")  # fmt: skip
    ka("ka.req.container.privileged", _any_privileged, "deprecated: true if any container is privileged")
    vols = (*spec, "volumes")
    ka("ka.req.pod.volumes.hostpath", _each(vols, "hostPath", "path"), "hostPath paths", "index", is_list=True)
    ka("ka.req.volume.hostpath", _volume_hostpath_flag, "deprecated: a hostPath volume uses PATH", "key")
    ka("ka.req.pod.volumes.flexvolume_driver", _each(vols, "flexVolume", "driver"), "flexVolume drivers",
       "index", is_list=True)  # fmt: skip
    ka("ka.req.pod.volumes.volume_type", _volume_types, "volume types", "index", is_list=True)
    ka("ka.req.pod.containers.host_port", _host_ports, "the containers' host ports", "index", is_list=True)
    for lst in ("containers", "initContainers", "ephemeralContainers"):
        pre = f"ka.req.pod.{lst}."
        each = (*spec, lst)
        opt = lst != "containers"  # Falco 0.25 read containers only; an absent init/ephemeral list is empty
        ka(pre + "name", _each(each, "name", optional=opt), f"the {lst}' names", "index", is_list=True)
        ka(pre + "image", _images(lst, False), f"the {lst}' images", "index", is_list=True)
        ka(pre + "image.repository", _images(lst, True), f"the {lst}' repositories", "index", is_list=True)
        ka(pre + "command", _each(each, "command", optional=opt), f"the {lst}' commands", "index", is_list=True)
        ka(pre + "args", _each(each, "args", optional=opt), f"the {lst}' arguments", "index", is_list=True)
        for key, attr in (
            ("privileged", "privileged"), ("allow_privilege_escalation", "allowPrivilegeEscalation"),
            ("read_only_fs", "readOnlyRootFilesystem"), ("run_as_user", "runAsUser"),
            ("run_as_group", "runAsGroup"), ("proc_mount", "procMount"),
        ):  # fmt: skip
            ka(pre + key, _each(each, "securityContext", attr, optional=opt), f"the {lst}' {attr}", "index", is_list=True)
        ka(pre + "add_capabilities", _each(each, "securityContext", "capabilities", "add", optional=opt),
           f"the {lst}' added capabilities", "index", is_list=True)  # fmt: skip
        ka(pre + "eff_run_as_user", _effective(lst, "runAsUser"), f"the {lst}' effective uid", "index",
           is_list=True)  # fmt: skip
        ka(pre + "eff_run_as_group", _effective(lst, "runAsGroup"), f"the {lst}' effective gid", "index",
           is_list=True)  # fmt: skip
        # Falconet's own (the Pod Security Standards need them; Falco has no such fields).
        ka(pre + "drops_capability", _drops(lst), f"Falconet: per {lst} entry, whether it drops CAP (or ALL), "
           f"{pre}drops_capability[CAP]", "key", is_list=True)  # fmt: skip
        ka(pre + "run_as_non_root", _effective_flag(lst, "runAsNonRoot"),
           f"Falconet: the {lst}' effective runAsNonRoot (container, else pod)", "index", is_list=True)  # fmt: skip
        ka(pre + "seccomp_profile", _effective_flag(lst, "seccompProfile", "type"),
           f"Falconet: the {lst}' effective seccompProfile.type (container, else pod)", "index", is_list=True)  # fmt: skip
        ka(pre + "declared_host_port", _declared_host_ports(lst),
           f"Falconet: the {lst}' hostPort values (only those declared)", "index", is_list=True)  # fmt: skip


def _register_times() -> None:
    """jevt.time, jevt.time.iso8601 and jevt.rawtime read the event's time, not its object."""

    def timed(name: str, fmt: Callable[[int], str], desc: str) -> None:
        def build(_arg: str | None) -> Extractor:
            return lambda e: fmt(e.ts)

        def check_builder(_arg: str | None) -> Callable[[str, tuple[str, ...]], Callable[[HasMemo], bool]]:
            def make(op: str, literals: tuple[str, ...]) -> Callable[[HasMemo], bool]:
                def values(e: HasMemo) -> tuple[Value, ...]:
                    found = e.memo.get(name)
                    if found is None:
                        found = e.memo[name] = (parse_value(fmt(e.ts)),)
                    return found

                try:
                    return build_check(op, literals, values, name)
                except ValueError as exc:
                    raise CompileError(f"{exc} (field '{name}')") from None

            return make

        register(FieldSpec(name, FieldType.STRING, build, "none", desc=desc, check=check_builder))

    timed("jevt.time", lambda ts: f"{_utc(ts):%H:%M:%S}.{ts % 1_000_000_000:09d}", "the event time (UTC)")
    timed("jevt.time.iso8601", lambda ts: f"{_utc(ts):%Y-%m-%dT%H:%M:%S}.{ts % 1_000_000_000:09d}Z",
          "the event time, ISO 8601 (UTC)")  # fmt: skip
    timed("jevt.rawtime", str, "the event time, ns since the epoch")


_register_all()
_register_times()
