"""`falconet sdk generate`: writes client stubs for Falconet's API into a user's own project.

The .proto files ship inside the package (falconet.sdk._proto), so a plain `pip install falconet` can generate
stubs for Python (grpcio or betterproto2), Go or Rust with the same pinned protoc (grpcio-tools) and the same
plugin versions that `make generate` uses for the SDKs in this repository. A missing protoc or plugin is not
a traceback: the command exits non-zero and prints the exact command that installs it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# Pinned together with the Makefile (tests/sdk_multilang/test_generate_cli.py checks they agree).
GRPCIO_TOOLS_VERSION = "1.76.0"
BETTERPROTO2_VERSION = "0.9.0"
PROTOC_GEN_GO_VERSION = "v1.36.12"
PROTOC_GEN_GO_GRPC_VERSION = "v1.6.2"
PROTOC_GEN_PROST_VERSION = "0.5.0"
PROTOC_GEN_TONIC_VERSION = "0.5.0"

# The import path the protos' go_package options use; --go-import-path replaces it.
_GO_PACKAGE_PREFIX = "falconet.local/sdk/go/api"

_EPILOG = """\
examples:
  falconet sdk generate --lang go --out ./internal/falconetapi --go-import-path example.com/app/internal/falconetapi
      Go messages and gRPC clients (protoc-gen-go, protoc-gen-go-grpc) in packages under that import path
  falconet sdk generate --lang rust --out ./src/falconet_api
      prost messages and tonic clients plus a mod.rs; add `mod falconet_api;` to your crate
  falconet sdk generate --lang python --flavor betterproto2 --out ./myapp/falconet_api
      typed dataclasses (betterproto2); import myapp.falconet_api.falco.outputs
  falconet sdk generate --lang python --out ./gen
      grpcio modules and .pyi stubs (the same ones falconet.sdk.api ships)
"""


class GenerateError(Exception):
    """A missing tool or a failed generation, with a message that says how to fix it."""


@dataclass(frozen=True)
class Plugin:
    """A protoc plugin: its executable name and the exact command that installs the pinned version."""

    name: str
    install: str


_GO_PLUGINS = (
    Plugin(
        "protoc-gen-go", f"go install google.golang.org/protobuf/cmd/protoc-gen-go@{PROTOC_GEN_GO_VERSION}"
    ),
    Plugin(
        "protoc-gen-go-grpc",
        f"go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@{PROTOC_GEN_GO_GRPC_VERSION}",
    ),
)
_RUST_PLUGINS = (
    Plugin("protoc-gen-prost", f"cargo install --locked protoc-gen-prost@{PROTOC_GEN_PROST_VERSION}"),
    Plugin("protoc-gen-tonic", f"cargo install --locked protoc-gen-tonic@{PROTOC_GEN_TONIC_VERSION}"),
)
_BETTERPROTO_PLUGIN = Plugin(
    "protoc-gen-python_betterproto2",
    f"pip install 'betterproto2-compiler=={BETTERPROTO2_VERSION}' 'betterproto2[grpclib]=={BETTERPROTO2_VERSION}'",
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sdk",
        help="generate client stubs for your own project",
        description="Client SDK tools.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = parser.add_subparsers(dest="sdk_command", metavar="ACTION", required=True)
    gen = cmds.add_parser(
        "generate",
        help="write stubs for Python, Go or Rust from Falconet's .proto files",
        description="Write client stubs generated from the .proto files shipped with Falconet, with the pinned "
        "protoc of grpcio-tools and the pinned plugins `make generate` uses. Existing generated files in OUT "
        "are overwritten.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--lang", required=True, choices=("python", "go", "rust"), help="target language")
    gen.add_argument(
        "--flavor",
        choices=("grpcio", "betterproto2"),
        default=None,
        help="Python only: grpcio modules (default) or betterproto2 dataclasses",
    )
    gen.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    gen.add_argument(
        "--go-import-path",
        default=_GO_PACKAGE_PREFIX,
        help=f"Go only: import path the packages live under (default: {_GO_PACKAGE_PREFIX})",
    )
    gen.set_defaults(func=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    if args.flavor is not None and args.lang != "python":
        print("falconet sdk generate: --flavor applies to --lang python only", file=sys.stderr)
        return 2
    try:
        written = generate(
            args.lang, args.out, flavor=args.flavor or "grpcio", go_import_path=args.go_import_path
        )
    except GenerateError as exc:
        print(f"falconet sdk generate: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out}")
    if args.lang == "rust":
        print(
            'add to Cargo.toml: prost = "0.14", prost-types = "0.14", tonic-prost = "0.14", '
            'tonic = { version = "0.14", features = ["tls-ring"] }'
        )
    return 0


def proto_root() -> Path:
    """The directory holding falconet/sdk/api/**.proto (the package data, or proto/ in a source checkout)."""
    # Installed: package data beside this module; editable install: the checkout's proto/ folder.
    candidates = [
        Path(str(resources.files("falconet.sdk"))) / "_proto",
        Path(__file__).resolve().parents[2] / "proto",
    ]
    for root in candidates:
        if (root / "falconet/sdk/api/falco/outputs.proto").is_file():
            return root
    raise GenerateError(
        f"the .proto files are missing (looked in {', '.join(map(str, candidates))}); reinstall falconet"
    )


def proto_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))


def _search_path() -> list[str]:
    """PATH, then where the pinned tools are usually installed: the venv, Go's bin, cargo's bin, make tools."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    dirs.append(str(Path(sys.executable).parent))
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    dirs += [os.environ.get("GOBIN", ""), str(Path(gopath) / "bin"), str(Path.home() / ".cargo/bin")]
    checkout_tools = Path(__file__).resolve().parents[2] / ".tools/bin"
    dirs.append(str(checkout_tools))
    return [d for d in dirs if d]


def find_plugins(plugins: tuple[Plugin, ...]) -> dict[str, str]:
    """Each plugin's path; GenerateError listing every missing one with its install command."""
    path = os.pathsep.join(_search_path())
    found: dict[str, str] = {}
    missing: list[Plugin] = []
    for plugin in plugins:
        exe = shutil.which(plugin.name, path=path)
        if exe is None:
            missing.append(plugin)
        else:
            found[plugin.name] = exe
    if missing:
        lines = "\n".join(f"  {p.install}" for p in missing)
        names = ", ".join(p.name for p in missing)
        raise GenerateError(f"{names} not found on PATH; install with:\n{lines}\nand make sure it is on PATH")
    return found


def _protoc_main() -> Any:
    try:
        from grpc_tools import protoc
    except ImportError:
        raise GenerateError(
            f"protoc not found: install the pinned one with  pip install 'grpcio-tools=={GRPCIO_TOOLS_VERSION}'"
        ) from None
    return protoc


def run_protoc(args: list[str]) -> None:
    """Runs grpcio-tools' protoc in-process with its well-known types on the include path."""
    protoc = _protoc_main()
    include = Path(str(resources.files("grpc_tools"))) / "_proto"
    code = protoc.main(["protoc", *args, f"-I{include}"])
    if code != 0:
        raise GenerateError(f"protoc failed (exit status {code}); its messages are above")


def _go_mappings(root: Path, files: list[str], import_path: str) -> list[str]:
    """M options moving each file's go_package under the user's import path (package names kept)."""
    opts = []
    for rel in files:
        text = (root / rel).read_text(encoding="utf-8")
        m = re.search(r'option\s+go_package\s*=\s*"([^"]+)"', text)
        if m is None:
            raise GenerateError(f"{rel} has no go_package option")
        pkg = m.group(1)
        if pkg.startswith(_GO_PACKAGE_PREFIX):
            pkg = import_path.rstrip("/") + pkg[len(_GO_PACKAGE_PREFIX) :]
        opts.append(f"M{rel}={pkg}")
    return opts


def _rust_mod_rs(out: Path) -> None:
    """A mod.rs nesting one module per proto package, so prost's `super::super::...` paths resolve."""
    tree: dict[str, Any] = {}
    for f in sorted(out.glob("*.rs")):
        if f.name == "mod.rs" or f.name.endswith(".tonic.rs"):
            continue
        node = tree
        for part in f.name[: -len(".rs")].split("."):
            node = node.setdefault(part, {})
        node["__file__"] = f.name

    def emit(node: dict[str, Any], depth: int) -> list[str]:
        pad = "    " * depth
        lines = []
        if "__file__" in node:
            lines.append(f'{pad}include!("{node["__file__"]}");')
        for name, child in sorted((k, v) for k, v in node.items() if k != "__file__"):
            lines += [f"{pad}pub mod {name} {{", *emit(child, depth + 1), f"{pad}}}"]
        return lines

    body = "\n".join(emit(tree, 0))
    header = "// Generated by falconet sdk generate from Falconet's .proto files. DO NOT EDIT.\n"
    (out / "mod.rs").write_text(header + "#![allow(clippy::all)]\n" + body + "\n", encoding="utf-8")


def generate(
    lang: str, out: Path, *, flavor: str = "grpcio", go_import_path: str = _GO_PACKAGE_PREFIX
) -> list[Path]:
    """Writes the stubs for `lang` into `out`; returns the files written. Raises GenerateError."""
    root = proto_root()
    files = proto_files(root)
    out.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    base = [f"-I{root}"]
    if lang == "go":
        plugins = find_plugins(_GO_PLUGINS)
        maps = _go_mappings(root, files, go_import_path)
        run_protoc(
            base
            + [f"--plugin=protoc-gen-go={plugins['protoc-gen-go']}"]
            + [f"--plugin=protoc-gen-go-grpc={plugins['protoc-gen-go-grpc']}"]
            + [f"--go_out={out}", f"--go_opt=module={go_import_path}"]
            + [f"--go_opt={m}" for m in maps]
            + [f"--go-grpc_out={out}", f"--go-grpc_opt=module={go_import_path}"]
            + [f"--go-grpc_opt={m}" for m in maps]
            + files
        )
    elif lang == "rust":
        plugins = find_plugins(_RUST_PLUGINS)
        run_protoc(
            base
            + [f"--plugin=protoc-gen-prost={plugins['protoc-gen-prost']}"]
            + [f"--plugin=protoc-gen-tonic={plugins['protoc-gen-tonic']}"]
            + [f"--prost_out={out}", "--prost_opt=flat_output_dir"]
            + [f"--tonic_out={out}", "--tonic_opt=no_server,flat_output_dir"]
            + files
        )
        _rust_mod_rs(out)
    elif lang == "python" and flavor == "betterproto2":
        plugin = find_plugins((_BETTERPROTO_PLUGIN,))[_BETTERPROTO_PLUGIN.name]
        # The compiler formats its output with ruff, which it expects beside itself.
        env_path = os.environ.get("PATH", "")
        os.environ["PATH"] = os.pathsep.join([str(Path(plugin).parent), env_path])
        try:
            run_protoc(
                base
                + [f"--plugin=protoc-gen-python_betterproto2={plugin}"]
                + [
                    f"--python_betterproto2_out={out}",
                    "--python_betterproto2_opt=client_generation=sync_async",
                ]
                + files
            )
        finally:
            os.environ["PATH"] = env_path
    elif lang == "python":
        run_protoc(base + [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"] + files)
    else:
        raise GenerateError(f"unknown language {lang!r}; expected python, go or rust")
    return sorted(p for p in out.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns)
