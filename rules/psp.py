"""PodSecurityPolicy (policy/v1beta1) -> Falco rules that flag pods violating it (`falconet rules from-psp`).

Compatibility reference: falcoctl v0.0.4's `convert psp` (the converter Falco 0.25's users had). Its names are
kept so that dashboards and exceptions keyed on them keep working: the prefix is the PSP's name with spaces
and dashes as `_`; rules are `PSP <prefix> Violation (<property>)` with ` K8s Audit` / ` System Activity`
variants where a property has both; macros `<prefix>_psp_ka_container`, `<prefix>_psp_container`, ...; the
annotation `falco-rules-psp-images: "[nginx, ...]"` scopes every rule to those image repositories (the list
`<prefix>_psp_images`). Like falcoctl, a boolean the PSP leaves unset means "not allowed" (Kubernetes'
default), so privileged/hostPID/hostIPC/hostNetwork rules appear unless the PSP allows them.

Where Falconet departs, on purpose: audit rules also look at pod updates; the syscall rules only look inside
containers (falcoctl's matched host processes too when no image was annotated); `*` in volumes or
allowedCapabilities allows everything (no rule); requiredDropCapabilities is checked (through Falconet's own
field ka.req.pod.containers.drops_capability); host ports count declared hostPorts and, with hostNetwork,
container ports. Fields no rule can check are named in `warnings`, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

PSP_TAGS = ["k8s-psp"]
AUDIT_FIELDS = ("user=%ka.user.name pod=%ka.resp.name ns=%ka.target.namespace images=%ka.req.pod.containers.image "
                "spec=%jevt.value[/requestObject/spec]")  # fmt: skip
SYSCALL_FIELDS = ("command=%proc.cmdline uid=%user.uid gid=%group.gid container_id=%container.id "
                  "image=%container.image.repository")  # fmt: skip

# Spec fields with no rule, and why (a warning names each one the PSP sets).
UNSUPPORTED = {
    "seLinux": "SELinux options are not in the audit fields",
    "allowedUnsafeSysctls": "sysctls are not checked",
    "forbiddenSysctls": "sysctls are not checked",
    "runtimeClass": "runtime classes are not checked",
    "allowedCSIDrivers": "CSI drivers are not checked",
    "defaultAddCapabilities": "a default applied by admission, not a restriction",
    "defaultAllowPrivilegeEscalation": "a default applied by admission, not a restriction",
}
SUPPORTED = frozenset({
    "privileged", "hostPID", "hostIPC", "hostNetwork", "hostPorts", "volumes", "allowedHostPaths",
    "allowedFlexVolumes", "fsGroup", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "supplementalGroups",
    "allowPrivilegeEscalation", "allowedCapabilities", "requiredDropCapabilities", "allowedProcMountTypes",
})  # fmt: skip

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_./:*+@-]+\Z")


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


class PspError(ValueError):
    """The document is not a PodSecurityPolicy this converter can read; the message names the field."""


@dataclass
class RulesDoc:
    """A generated rules file: its items in order (each with an optional comment) and the warnings."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    header: str = ""

    def add(self, item: dict[str, Any], comment: str = "") -> None:
        self.items.append((comment, item))

    @property
    def rule_names(self) -> list[str]:
        return [item["rule"] for _, item in self.items if "rule" in item]

    def text(self) -> str:
        parts = [self.header]
        for comment, item in self.items:
            if comment:
                parts.append("".join(f"# {line}\n" for line in comment.splitlines()))
            # A block mapping with flow lists (tags: [k8s-psp]), as rules files are written by hand.
            body = yaml.dump(item, Dumper=_Dumper, sort_keys=False, width=112, allow_unicode=True,
                             default_flow_style=False)  # fmt: skip
            parts.append("- " + body.rstrip("\n").replace("\n", "\n  ") + "\n\n")
        return "".join(parts)


def literal(text: str, what: str) -> str:
    """A value as a condition literal (quoted when it has characters a bare word cannot)."""
    if not text or any(not ch.isprintable() or ch in "\"\\" for ch in text):
        raise PspError(f"{what}: {text!r} cannot be written in a rule condition")
    return text if _SAFE_TOKEN.match(text) else f'"{text}"'


def id_ranges(entries: object, key: str, *, limit: int = 2**31 - 1) -> list[str]:
    """`ranges`/`hostPorts` entries ({min, max}) as quoted "LO:HI" literals."""
    if not isinstance(entries, list):
        raise PspError(f"{key} must be a list of {{min, max}} ranges")
    out = []
    for i, r in enumerate(entries):
        lo, hi = (r.get("min"), r.get("max")) if isinstance(r, dict) else (None, None)
        if not (isinstance(lo, int) and isinstance(hi, int)) or isinstance(lo, bool) or not 0 <= lo <= hi <= limit:
            raise PspError(f"{key}[{i}] must have integer min <= max, got {r!r}")
        out.append(f'"{lo}:{hi}"')
    return out


def _strategy(spec: dict[str, Any], key: str) -> tuple[str, list[str]]:
    value = spec.get(key)
    if value is None:
        return "", []
    if not isinstance(value, dict) or not isinstance(value.get("rule"), str):
        raise PspError(f"spec.{key} must be a mapping with a 'rule'")
    return value["rule"], id_ranges(value.get("ranges") or [], f"spec.{key}.ranges")


def _strings(spec: dict[str, Any], key: str, sub: str | None = None) -> list[str]:
    value = spec.get(key) or []
    if not isinstance(value, list):
        raise PspError(f"spec.{key} must be a list")
    out = []
    for i, item in enumerate(value):
        text = item.get(sub) if sub is not None and isinstance(item, dict) else item
        if not isinstance(text, str):
            raise PspError(f"spec.{key}[{i}] must be {'a mapping with ' + sub if sub else 'a string'}")
        out.append(literal(text, f"spec.{key}[{i}]"))
    return out


class _Builder:
    """Accumulates the rules of one PSP; `prefix` names everything it defines."""

    def __init__(self, name: str, prefix: str, images: list[str]) -> None:
        self.name, self.p, self.images = name, prefix, images
        self.doc = RulesDoc()
        self.audit_rules: list[dict[str, Any]] = []
        self.syscall_rules: list[tuple[str, dict[str, Any]]] = []
        self.extra_macros: list[tuple[str, dict[str, Any]]] = []

    def audit(self, prop: str, condition: str, what: str, suffix: str = "", comment: str = "") -> None:
        self.audit_rules.append({
            "rule": f"PSP {self.p} Violation ({prop}){suffix}",
            "desc": f"A pod that violates the {prop} restriction of PodSecurityPolicy {self.name}, seen in the "
                    "Kubernetes audit log.",
            "condition": f"{self.p}_psp_ka_container and {condition}",
            "output": f"Pod Security Policy {self.name} validation failure: {what} ({AUDIT_FIELDS})",
            "priority": "WARNING", "source": "k8s_audit", "tags": PSP_TAGS, "_comment": comment,
        })  # fmt: skip

    def syscall(self, prop: str, condition: str, what: str) -> None:
        self.syscall_rules.append(("", {
            "rule": f"PSP {self.p} Violation ({prop}) System Activity",
            "desc": f"A container process that shows the {prop} restriction of PodSecurityPolicy {self.name} "
                    "was not applied.",
            "condition": f"{self.p}_psp_container and {condition}",
            "output": f"Pod Security Policy {self.name} validation failure: {what} ({SYSCALL_FIELDS})",
            "priority": "WARNING", "source": "syscall", "tags": PSP_TAGS,
        }))  # fmt: skip

    def macro(self, name: str, condition: str) -> None:
        self.extra_macros.append(("", {"macro": f"{self.p}_{name}", "condition": condition}))

    def finish(self) -> RulesDoc:
        p, doc = self.p, self.doc
        if self.images:
            doc.add({"list": f"{p}_psp_images", "items": self.images}, "Image repositories the rules apply to "
                    "(annotation falco-rules-psp-images).")  # fmt: skip
        match_ka = f"(ka.req.pod.containers.image.repository in ({p}_psp_images))" if self.images else \
            f"({p}_psp_ka_always_true)"  # fmt: skip
        for name, cond in (
            ("psp_ka_always_true", "(jevt.rawtime exists)"),
            ("psp_ka_never_true", "(jevt.rawtime=0)"),
            ("psp_ka_enabled", f"({p}_psp_ka_always_true and not {p}_psp_ka_never_true)"),
            ("psp_kevt", '(jevt.value[/stage] in ("ResponseComplete"))'),
            ("psp_ka_pod", "(ka.target.resource=pods and not ka.target.subresource exists)"),
            ("psp_ka_match_image", match_ka),
            ("psp_ka_container", f"({p}_psp_ka_enabled and {p}_psp_kevt and {p}_psp_ka_pod and "
                                 f"ka.verb in (create, update) and {p}_psp_ka_match_image)"),
        ):  # fmt: skip
            doc.add({"macro": f"{p}_{name}", "condition": cond}, "Kubernetes audit events: pods created or "
                    "updated" if name == "psp_ka_always_true" else "")  # fmt: skip
        if self.syscall_rules:
            match = f"(container.image.repository in ({p}_psp_images))" if self.images else f"({p}_psp_always_true)"
            for name, cond in (
                ("psp_always_true", "(evt.num>=0)"),
                ("psp_never_true", "(evt.num=0)"),
                ("psp_enabled", f"({p}_psp_always_true and not {p}_psp_never_true)"),
                ("psp_match_image", match),
                ("psp_container", f"({p}_psp_enabled and container.id != host and {p}_psp_match_image)"),
            ):
                doc.add({"macro": f"{p}_{name}", "condition": cond},
                        "System activity inside the pods' containers" if name == "psp_always_true" else "")  # fmt: skip
        for comment, item in self.extra_macros:
            doc.add(item, comment)
        for rule in self.audit_rules:
            comment = rule.pop("_comment")
            doc.add(rule, comment)
        for comment, rule in self.syscall_rules:
            doc.add(rule, comment)
        return doc


def name_prefix(name: str) -> str:
    """falcoctl's prefix (spaces and dashes as `_`), and any other character a macro name cannot hold as `_`."""
    prefix = re.sub(r"[^A-Za-z0-9_]", "_", name.replace(" ", "_").replace("-", "_")) or "psp"
    return prefix if prefix[0].isalpha() else "psp_" + prefix


def _images(annotations: Any) -> list[str]:
    raw = annotations.get("falco-rules-psp-images") if isinstance(annotations, dict) else None
    if raw is None:
        return []
    try:
        value = yaml.safe_load(str(raw))
    except yaml.YAMLError:
        raise PspError(f"annotation falco-rules-psp-images must be a list such as \"[nginx]\", got {raw!r}") from None
    items = value if isinstance(value, list) else [value]
    return [literal(str(i), "annotation falco-rules-psp-images") for i in items if i is not None]


def convert_psp(doc: Any) -> RulesDoc:
    """The rules for one PodSecurityPolicy document (decoded YAML). Raises PspError for anything unreadable."""
    if not isinstance(doc, dict) or doc.get("kind") != "PodSecurityPolicy":
        raise PspError("the document is not a PodSecurityPolicy (kind: PodSecurityPolicy)")
    if doc.get("apiVersion") not in ("policy/v1beta1", "extensions/v1beta1"):
        raise PspError(f"apiVersion {doc.get('apiVersion')!r} is not policy/v1beta1")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise PspError("metadata and spec must be mappings")
    name = str(meta.get("name") or "psp")
    shown = name if re.fullmatch(r"[A-Za-z0-9 _.-]+", name) else name_prefix(name)
    b = _Builder(shown, name_prefix(name), _images(meta.get("annotations")))
    warnings = [f"spec.{key}: not converted ({why})" for key, why in UNSUPPORTED.items()
                if key in spec and not (key == "seLinux" and (spec[key] or {}).get("rule") == "RunAsAny")]  # fmt: skip
    warnings += [f"spec.{key}: not a PodSecurityPolicy field; ignored" for key in spec
                 if key not in SUPPORTED and key not in UNSUPPORTED]  # fmt: skip
    for step in _STEPS:
        step(b, spec)
    out = b.finish()
    out.warnings = warnings
    out.header = (f"# Falco rules for PodSecurityPolicy {shown}, generated by `falconet rules from-psp`.\n"
                  f"# Rule names follow falcoctl convert psp (v0.0.4).\n"
                  + "".join(f"# Not converted: {w}\n" for w in warnings) + "\n- required_engine_version: 5\n\n")  # fmt: skip
    return out


def _host_namespaces(b: _Builder, spec: dict[str, Any]) -> None:
    if spec.get("privileged") is not True:
        b.audit("privileged", "ka.req.pod.containers.privileged intersects (true)", "pod with privileged=true",
                " K8s Audit")  # fmt: skip
        b.syscall("privileged", "evt.type in (execve, execveat) and proc.vpid = 1 and container.privileged = true",
                  "privileged container started")  # fmt: skip
    for key, fld in (("hostPID", "host_pid"), ("hostIPC", "host_ipc"), ("hostNetwork", "host_network")):
        if spec.get(key) is not True:
            b.audit(key, f"ka.req.pod.{fld} intersects (true)", f"pod with {key.lower()}=true")
    ports = id_ranges(spec.get("hostPorts") or [], "spec.hostPorts", limit=65535)
    if ports:
        joined = ", ".join(ports)
        b.audit("hostPorts", f'((ka.req.pod.host_network intersects (true) and not ka.req.pod.containers.host_port '
                f'in ({joined}, "<NA>")) or not ka.req.pod.containers.declared_host_port in ({joined}))',
                f"host port outside of the allowed ranges ({joined})")  # fmt: skip


def _volumes(b: _Builder, spec: dict[str, Any]) -> None:
    vols = _strings(spec, "volumes")
    if vols and "*" not in vols:
        joined = ", ".join(vols)
        b.audit("volumes", f'not ka.req.pod.volumes.volume_type in ({joined}, "<NA>")',
                f"volume type outside of the allowed set ({joined})")  # fmt: skip
    paths = _strings(spec, "allowedHostPaths", "pathPrefix")
    if paths:
        joined = ", ".join(paths)
        b.audit("allowedHostPaths", f'not ka.req.pod.volumes.hostpath pmatch ({joined}, "<NA>")',
                f"hostPath volume outside of the allowed paths ({joined})")  # fmt: skip
    drivers = _strings(spec, "allowedFlexVolumes", "driver")
    if drivers:
        joined = ", ".join(drivers)
        b.audit("allowedFlexVolumes", f'not ka.req.pod.volumes.flexvolume_driver in ({joined}, "<NA>")',
                f"FlexVolume driver outside of the allowed set ({joined})")  # fmt: skip


def _ids(b: _Builder, spec: dict[str, Any]) -> None:
    rule, ranges = _strategy(spec, "fsGroup")
    if rule in ("MustRunAs", "MayRunAs") and ranges:
        joined = ", ".join(ranges)
        must = f"ka.req.pod.fs_group in ({joined})" if rule == "MustRunAs" else f"({b.p}_psp_ka_always_true)"
        may = f'ka.req.pod.fs_group in ({joined}, "<NA>")' if rule == "MayRunAs" else f"({b.p}_psp_ka_always_true)"
        b.macro("psp_fs_group_must_run_matches", must)
        b.macro("psp_fs_group_may_run_matches", may)
        b.macro("psp_fs_group", f"({b.p}_psp_fs_group_must_run_matches and {b.p}_psp_fs_group_may_run_matches)")
        b.audit("fsGroup", f"not {b.p}_psp_fs_group", f"fsGroup outside of the allowed set ({rule} {joined})")
    rule, ranges = _strategy(spec, "runAsUser")
    if rule == "MustRunAs" and ranges:
        joined = ", ".join(ranges)
        b.audit("runAsUser=MustRunAs", f"not (ka.req.pod.containers.eff_run_as_user in ({joined}))",
                f"runAsUser outside of the allowed set ({joined})", " K8s Audit")  # fmt: skip
        b.macro("psp_allowed_uids", " or ".join(f"(user.uid >= {r.strip(chr(34)).split(':')[0]} and user.uid <= "
                                                 f"{r.strip(chr(34)).split(':')[1]})" for r in ranges))  # fmt: skip
        b.syscall("runAsUser=MustRunAs", f"evt.type in (execve, execveat, setuid) and not {b.p}_psp_allowed_uids",
                  f"process uid outside of the allowed set ({joined})")  # fmt: skip
    elif rule == "MustRunAsNonRoot":
        b.audit("runAsUser=MustRunAsNonRoot", 'ka.req.pod.containers.eff_run_as_user intersects ("0:0")',
                "uid 0 with runAsUser MustRunAsNonRoot", " K8s Audit")  # fmt: skip
        b.syscall("runAsUser=MustRunAsNonRoot", "evt.type in (execve, execveat, setuid) and user.uid = 0",
                  "root process with runAsUser MustRunAsNonRoot")  # fmt: skip
    rule, ranges = _strategy(spec, "runAsGroup")
    if rule == "MustRunAs" and ranges:
        joined = ", ".join(ranges)
        b.audit("runAsGroup=MustRunAs", f"not (ka.req.pod.containers.eff_run_as_group in ({joined}))",
                f"runAsGroup outside of the MustRunAs set ({joined})", " K8s Audit")  # fmt: skip
        b.macro("psp_allowed_gids", " or ".join(f"(group.gid >= {r.strip(chr(34)).split(':')[0]} and group.gid <= "
                                                 f"{r.strip(chr(34)).split(':')[1]})" for r in ranges))  # fmt: skip
        b.syscall("runAsGroup=MustRunAs", f"evt.type in (execve, execveat, setgid) and not {b.p}_psp_allowed_gids",
                  f"process gid outside of the allowed set ({joined})")  # fmt: skip
    elif rule == "MayRunAs" and ranges:
        joined = ", ".join(ranges)
        b.audit("runAsGroup=MayRunAs", f"not ka.req.pod.containers.eff_run_as_group in ({joined}) and not "
                f'(ka.req.pod.containers.run_as_group in ("<NA>") and ka.req.pod.run_as_group="<NA>")',
                f"runAsGroup outside of the MayRunAs set ({joined})")  # fmt: skip
    rule, ranges = _strategy(spec, "supplementalGroups")
    if rule in ("MustRunAs", "MayRunAs") and ranges:
        joined = ", ".join(ranges)
        na = ', "<NA>"' if rule == "MayRunAs" else ""
        b.audit(f"supplementalGroups={rule}", f"not ka.req.pod.supplemental_groups in ({joined}{na})",
                f"supplementalGroups outside of the {rule} set ({joined})")  # fmt: skip


def _container_settings(b: _Builder, spec: dict[str, Any]) -> None:
    if spec.get("readOnlyRootFilesystem") is True:
        b.audit("readOnlyRootFilesystem", "not ka.req.pod.containers.read_only_fs in (true)",
                "pod without readOnlyRootFilesystem=true", " K8s Audit")  # fmt: skip
        b.macro("psp_open_write", "(evt.type in (open, openat, openat2) and evt.is_open_write=true and "
                                  "fd.typechar='f' and fd.num>=0)")  # fmt: skip
        b.syscall("readOnlyRootFilesystem", f"{b.p}_psp_open_write", "file opened for writing (file=%fd.name)")
    if spec.get("allowPrivilegeEscalation", True) is False:
        b.macro("psp_allow_privilege_escalation", "(ka.req.pod.containers.allow_privilege_escalation intersects (true))")
        b.audit("allowPrivilegeEscalation", f"{b.p}_psp_allow_privilege_escalation",
                "pod with allowPrivilegeEscalation=true")  # fmt: skip
    caps = _strings(spec, "allowedCapabilities")
    if caps and "*" not in caps:
        joined = ", ".join(caps)
        b.audit("allowedCapabilities", f'not ka.req.pod.containers.add_capabilities in ({joined}, "<NA>")',
                f"pod adds capabilities outside of the allowed set ({joined})")  # fmt: skip
    drops = _strings(spec, "requiredDropCapabilities")
    if drops:
        cond = " or ".join(f"ka.req.pod.containers.drops_capability[{cap}] intersects (false)" for cap in drops)
        b.audit("requiredDropCapabilities", f"({cond})",
                f"a container does not drop every required capability ({', '.join(drops)})")  # fmt: skip
    mounts = _strings(spec, "allowedProcMountTypes")
    if mounts:
        joined = ", ".join(mounts)
        b.audit("allowedProcMountTypes", f'not ka.req.pod.containers.proc_mount in ({joined}, "<NA>")',
                f"pod with a proc mount type outside of the allowed set ({joined})")  # fmt: skip


_STEPS: tuple[Callable[[_Builder, dict[str, Any]], None], ...] = (_host_namespaces, _volumes, _ids, _container_settings)
