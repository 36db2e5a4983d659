"""Pod Security Standards (baseline, restricted) -> k8s_audit rules (`falconet rules from-pss`).

PodSecurityPolicy was removed in Kubernetes 1.25; its successor is the Pod Security Standards, enforced by the
Pod Security admission controller per namespace. These rules flag, from the audit log, pods created or updated
against a profile: useful where admission only warns or audits, or for namespaces not labelled at all.
Each control of the profile is one rule, `PSS <profile> Violation (<control>)`, tagged `k8s-pss` and
`pss-<profile>`; `--namespace` scopes the rules to namespaces (the list `pss_<profile>_namespaces`).

Controls a rule cannot see in the audit fields (AppArmor, SELinux options, sysctls, Windows HostProcess,
seccomp of individual containers in baseline) are listed in the generated file's header and in `warnings`.
"""

from __future__ import annotations

from .psp import RulesDoc, literal

PROFILES = ("baseline", "restricted")
LISTS = ("containers", "initContainers", "ephemeralContainers")

BASELINE_CAPS = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")  # fmt: skip
RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret")  # fmt: skip
NOT_CHECKED = ("AppArmor profiles", "SELinux options", "sysctls", "Windows HostProcess")
FIELDS = "user=%ka.user.name pod=%ka.resp.name ns=%ka.target.namespace images=%ka.req.pod.containers.image"


def _any_list(template: str) -> str:
    """A check over every container list (containers, initContainers, ephemeralContainers), or-ed."""
    return "(" + " or ".join(template.format(lst=lst) for lst in LISTS) + ")"


def _controls(profile: str) -> list[tuple[str, str, str]]:
    """(control, condition, what) for a profile; restricted includes baseline."""
    caps = ", ".join(BASELINE_CAPS)
    out = [
        ("Host Namespaces", "(ka.req.pod.host_network intersects (true) or ka.req.pod.host_pid intersects (true) "
                            "or ka.req.pod.host_ipc intersects (true))", "pod shares a host namespace"),
        ("Privileged Containers", _any_list("ka.req.pod.{lst}.privileged intersects (true)"),
         "privileged container"),
        ("Capabilities", _any_list(f'not ka.req.pod.{{lst}}.add_capabilities in ({caps}, "<NA>")'),
         "capability added beyond the baseline set"),
        ("HostPath Volumes", "ka.req.pod.volumes.volume_type intersects (hostPath)", "hostPath volume"),
        ("Host Ports", _any_list('not ka.req.pod.{lst}.declared_host_port in (0, "<NA>")'), "host port declared"),
        ("/proc Mount Type", _any_list('not ka.req.pod.{lst}.proc_mount in (Default, "<NA>")'),
         "proc mount type other than Default"),
        ("Seccomp", "jevt.value[/requestObject/spec/securityContext/seccompProfile/type] = Unconfined",
         "pod seccomp profile Unconfined"),
    ]  # fmt: skip
    if profile == "restricted":
        vols = ", ".join(RESTRICTED_VOLUMES)
        out += [
            ("Volume Types", f'not ka.req.pod.volumes.volume_type in ({vols}, "<NA>")',
             "volume type outside of the restricted set"),
            ("Privilege Escalation", _any_list("not ka.req.pod.{lst}.allow_privilege_escalation in (false)"),
             "a container may escalate privileges (allowPrivilegeEscalation is not false)"),
            ("Running as Non-root", _any_list("not ka.req.pod.{lst}.run_as_non_root in (true)"),
             "a container may run as root (runAsNonRoot is not true)"),
            ("Running as Non-root user", "(ka.req.pod.run_as_user = 0 or "
             + _any_list("ka.req.pod.{lst}.run_as_user intersects (0)")[1:], "runAsUser 0"),
            ("Seccomp (restricted)", _any_list("not ka.req.pod.{lst}.seccomp_profile in (RuntimeDefault, Localhost)"),
             "a container without the RuntimeDefault or Localhost seccomp profile"),
            ("Capabilities (restricted)",
             "(" + _any_list("ka.req.pod.{lst}.drops_capability[ALL] intersects (false)") + " or "
             + _any_list('not ka.req.pod.{lst}.add_capabilities in (NET_BIND_SERVICE, "<NA>")') + ")",
             "a container does not drop ALL, or adds more than NET_BIND_SERVICE"),
        ]  # fmt: skip
    return out


def convert_pss(profile: str, namespaces: list[str]) -> RulesDoc:
    """The rules for one Pod Security Standards profile, optionally scoped to namespaces. Raises ValueError."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected baseline or restricted")
    p = f"pss_{profile}"
    doc = RulesDoc()
    ns = [literal(n, "--namespace") for n in namespaces]
    if ns:
        doc.add({"list": f"{p}_namespaces", "items": ns}, "Namespaces the rules apply to (--namespace).")
    doc.add({"macro": f"{p}_pod", "condition": '(jevt.value[/stage] in ("ResponseComplete") and '
             "ka.target.resource=pods and not ka.target.subresource exists and ka.verb in (create, update)"
             + (f" and ka.target.namespace in ({p}_namespaces))" if ns else ")")},
            "Pods created or updated, as the audit log reports them.")  # fmt: skip
    for control, condition, what in _controls(profile):
        doc.add({
            "rule": f"PSS {profile} Violation ({control})",
            "desc": f"A pod that violates the {control} control of the Pod Security Standards' {profile} profile.",
            "condition": f"{p}_pod and {condition}",
            "output": f"Pod Security Standards ({profile}) violation: {what} ({FIELDS})",
            "priority": "WARNING", "source": "k8s_audit", "tags": ["k8s-pss", f"pss-{profile}"],
        })  # fmt: skip
    doc.warnings = [f"not checked: {c}" for c in NOT_CHECKED]
    doc.header = (f"# Pod Security Standards, {profile} profile, as Falco rules over Kubernetes audit events.\n"
                  "# Generated by `falconet rules from-pss`.\n"
                  + "".join(f"# {w}\n" for w in doc.warnings) + "\n- required_engine_version: 5\n\n")  # fmt: skip
    return doc
