"""Collecting `required_engine_version` and `required_plugin_versions` items: which engine and plugins a
rules file needs. A newer engine version is an error (Falco's); a plugin Falconet does not provide natively
is a warning, and the file's rules that use its unknown fields are then skipped instead of failing."""

from __future__ import annotations

import re

import yaml

from .errors import Code, Context, Msg, Position
from .reader import ItemError, ItemReader, Source, mapping_keys
from .sources import NATIVE_PLUGINS as NATIVE_PLUGINS  # re-exported for the loader

ENGINE_VERSION: tuple[int, int, int] = (0, 57, 0)
"""The Falco engine version whose rules language this engine implements (Falco 0.42's)."""
ENGINE_VERSION_TEXT = ".".join(map(str, ENGINE_VERSION))

# NATIVE_PLUGINS (container, k8saudit, json; re-exported) lives in sources.py.

_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)\Z")


class RequirementsReader(ItemReader):
    """Reads the requirement items; remembers, per file, the plugins it needs that Falconet lacks."""

    def __init__(self) -> None:
        super().__init__()
        self._missing_plugins: dict[str, list[str]] = {}  # file -> plugins it needs that we lack

    def _engine_version(
        self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position
    ) -> None:
        node = keys["required_engine_version"][1]
        ctx = (Context("required_engine_version", pos),)
        text = self._scalar(src, node, ctx)
        version = parse_version(text)
        if version is None:
            raise self._err(
                Code.ERR_YAML_VALIDATE,
                Msg.ENGINE_VERSION_PARSE.format(value=text),
                src.node_position(node),
                ctx,
            )
        if version > ENGINE_VERSION:
            self.result.add(
                Code.ERR_VALIDATE,
                Msg.ENGINE_VERSION_TOO_OLD.format(
                    file=src.name, need=".".join(map(str, version)), have=ENGINE_VERSION_TEXT
                ),
                src.node_position(node),
                ctx,
            )

    def _plugin_versions(
        self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position
    ) -> None:
        node = keys["required_plugin_versions"][1]
        ctx = (Context("required_plugin_versions", pos),)
        if not isinstance(node, yaml.SequenceNode):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.PLUGIN_VERSIONS_SEQ, src.node_position(node), ctx)
        for entry in node.value:
            if not isinstance(entry, yaml.MappingNode):
                self.result.add(
                    Code.ERR_YAML_VALIDATE, Msg.PLUGIN_VERSION_MAPPING, src.node_position(entry), ctx
                )
                continue
            ekeys = mapping_keys(entry)
            try:
                names = [self._plugin_requirement(src, ekeys, entry, ctx)]
                if "alternatives" in ekeys:
                    alts = ekeys["alternatives"][1]
                    if not isinstance(alts, yaml.SequenceNode):
                        raise self._err(
                            Code.ERR_YAML_VALIDATE, Msg.NOT_SEQUENCE, src.node_position(alts), ctx
                        )
                    for alt in alts.value:
                        if not isinstance(alt, yaml.MappingNode):
                            raise self._err(
                                Code.ERR_YAML_VALIDATE,
                                Msg.PLUGIN_VERSION_MAPPING,
                                src.node_position(alt),
                                ctx,
                            )
                        names.append(self._plugin_requirement(src, mapping_keys(alt), alt, ctx))
            except ItemError:
                continue
            if not any(name in NATIVE_PLUGINS for name, _ in names):
                name, version = names[0]
                self._missing_plugins.setdefault(src.name, []).append(name)
                self.result.add(
                    Code.WARNING_EXTENSION,
                    Msg.PLUGIN_NOT_LOADED.format(name=name, version=version),
                    src.node_position(entry),
                    ctx,
                )

    def _plugin_requirement(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        node: yaml.Node,
        ctx: tuple[Context, ...],
    ) -> tuple[str, str]:
        for key in ("name", "version"):
            if key not in keys:
                raise self._err(
                    Code.ERR_YAML_VALIDATE, Msg.NO_MAPPING.format(key=key), src.node_position(node), ctx
                )
        name = self._scalar(src, keys["name"][1], ctx)
        version = self._scalar(src, keys["version"][1], ctx)
        if parse_version(version) is None:
            raise self._err(
                Code.ERR_YAML_VALIDATE,
                Msg.PLUGIN_VERSION_INVALID.format(version=version, name=name),
                src.node_position(keys["version"][1]),
                ctx,
            )
        return name, version


def parse_version(text: str) -> tuple[int, int, int] | None:
    """Falco's engine versions: a semver string, or an integer N meaning 0.N.0."""
    t = text.strip()
    if t.isdigit():
        return (0, int(t), 0)
    m = _SEMVER.match(t)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))
