"""Errors and load results of the rule engine: one exception root, stable codes, messages in one place.

Every way a rules file or a condition can be wrong ends up here, so that the CLI, the daemon and the tests
see the same codes and words. Errors point at the source: a position is file:line:column plus the line itself
and a caret, and a problem found deep inside (a macro used by a rule) carries its contexts outside-in, the way
Falco's loader prints "In rules content / rule 'X' / condition".

Exception tree::

    RuleError                      anything wrong with rules text; has .message, .offset, .contexts
     ├── ConditionSyntaxError      a condition that does not parse (parser.py)
     ├── CompileError              parses but cannot be compiled: unknown field, operator not allowed for the
     │    │                        field's type, undefined macro, malformed value (compiler.py, fields/)
     │    └── UnknownFieldError    a field name that no extractor provides (skip-if-unknown-filter applies)
     ├── OutputFormatError         an output format that does not compile (output.py)
     └── RulesLoadError            raised by Engine.from_files when loading found errors; carries the
                                   whole LoadResult (every error and warning), never just the first

Loading never raises for a bad file: it collects `Diagnostic`s into a `LoadResult` with Falco's codes
(falco userspace/engine/falco_load_result.cpp), so one run reports every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# --- load-result codes (Falco's names, so users can search for them) ---------------------------------------


class Code(str, Enum):
    """Stable codes of load errors (LOAD_ERR_*) and warnings (the rest), as Falco names them."""

    # errors
    ERR_FILE_READ = "LOAD_ERR_FILE_READ"
    ERR_YAML_PARSE = "LOAD_ERR_YAML_PARSE"
    ERR_YAML_VALIDATE = "LOAD_ERR_YAML_VALIDATE"
    ERR_COMPILE_CONDITION = "LOAD_ERR_COMPILE_CONDITION"
    ERR_COMPILE_OUTPUT = "LOAD_ERR_COMPILE_OUTPUT"
    ERR_VALIDATE = "LOAD_ERR_VALIDATE"
    ERR_EXTENSION = "LOAD_ERR_EXTENSION"
    # warnings
    UNKNOWN_SOURCE = "LOAD_UNKNOWN_SOURCE"
    UNSAFE_NA_CHECK = "LOAD_UNSAFE_NA_CHECK"
    NO_EVTTYPE = "LOAD_NO_EVTTYPE"
    UNKNOWN_FILTER = "LOAD_UNKNOWN_FILTER"
    UNUSED_MACRO = "LOAD_UNUSED_MACRO"
    UNUSED_LIST = "LOAD_UNUSED_LIST"
    UNKNOWN_ITEM = "LOAD_UNKNOWN_ITEM"
    DEPRECATED_ITEM = "LOAD_DEPRECATED_ITEM"
    WARNING_EXTENSION = "LOAD_WARNING_EXTENSION"
    APPEND_NO_VALUES = "LOAD_APPEND_NO_VALUES"
    EXCEPTION_NAME_NOT_UNIQUE = "LOAD_EXCEPTION_NAME_NOT_UNIQUE"
    INVALID_MACRO_NAME = "LOAD_INVALID_MACRO_NAME"
    INVALID_LIST_NAME = "LOAD_INVALID_LIST_NAME"
    COMPILE_CONDITION = "LOAD_COMPILE_CONDITION"
    UNKNOWN_KEY = "LOAD_UNKNOWN_KEY"
    FIELD_NOT_FILLED = "LOAD_FIELD_NOT_FILLED"  # Falconet's own: a rule reads a field the live sensor never fills

    @property
    def is_error(self) -> bool:
        return self.value.startswith("LOAD_ERR_")


# --- message texts (one module, so wording is consistent and tests can refer to them) ----------------------


class Msg:
    """Message templates; `str.format` fields are named. Wording follows Falco's where one exists."""

    # parser
    EMPTY = "filter input string is empty"
    UNEXPECTED_AFTER = "unexpected token after '{after}', expecting 'or', 'and'"
    EXPECTED_BLANK_AFTER = "expected blank or '(' after '{word}'"
    EXPECTED_CLOSE = "expected a ')' token"
    EXPECTED_CHECK = "expected a '(' token, a field check, or an identifier"
    EXPECTED_OPERATOR = "expected a valid check operator: one of {ops}"
    EXPECTED_VALUE = "expected a string value"
    EXPECTED_LIST = "expected a list or an identifier"
    EXPECTED_LIST_ITEM = "expected a list item (a string, a number or a field)"
    EXPECTED_FIELD = "expected a field name"
    EXPECTED_CLOSE_BRACKET = "expected a ']' after the field argument"
    EMPTY_FIELD_ARG = "empty field argument"
    UNTERMINATED_STRING = "unterminated quoted string"
    MAX_DEPTH = "exceeded max depth limit of {limit}"
    BAD_TRANSFORMER = "unknown transformer '{name}'; expected one of {names}"
    VAL_ON_LEFT = "val() can only be used on the right-hand side of a comparison"
    TRANSFORMER_NEEDS_FIELD = "a transformer takes a field or another transformer"
    # compiler
    UNKNOWN_FIELD = "unknown field '{name}'"
    UNDEFINED_MACRO = "Undefined macro '{name}' used in filter."
    MACRO_NOT_VISIBLE = "macro '{name}' is used before it is defined (a macro can only use earlier macros)"
    MACRO_CYCLE = "macro '{name}' refers to itself"
    OP_NOT_SUPPORTED = "'{op}' operator not supported for {kind} filters (field '{field}')"
    LIST_FIELD_OPS = "list filter '{field}' only supports operators 'exists', 'in' and 'intersects'"
    BAD_NUMBER = "'{value}' is not a valid number for field '{field}'"
    BAD_BOOL = "'{value}' is not a valid boolean for field '{field}' (expected true or false)"
    BAD_NET = "'{value}' is not a valid IP address or network for field '{field}'"
    BAD_HEX = "'{value}' is not a valid hex string for operator '{op}' (e.g. cafebabe)"
    BAD_REGEX = "invalid regular expression '{value}': {reason}"
    BAD_EVT_DIR = "evt.dir must be compared with '<' or '>'"
    EVT_DIR_DEPRECATED = (
        "evt.dir is deprecated: Falco drops enter events, so evt.dir='>' matches nothing and evt.dir='<' "
        "matches every event"
    )
    # loader
    FILE_READ = "could not read file: {reason}"
    YAML_PARSE = "Rules content is not yaml: {reason}"
    NOT_ARRAY = "Rules content is not yaml array of objects"
    NOT_MAPPING = "Unexpected element type. Each element should be a yaml associative array."
    UNKNOWN_ITEM = "Unknown top level item"
    UNKNOWN_KEY = "Unknown key '{key}'. The key will be ignored."
    NO_MAPPING = "Item has no mapping for key '{key}'"
    EMPTY_MAPPING = "Mapping for key '{key}' is empty"
    NOT_SCALAR = "Value is not a scalar value"
    NOT_SEQUENCE = "Value is not a sequence"
    NOT_BOOL = "Can't decode YAML scalar value"
    NON_EMPTY = "Value must be non-empty"
    INVALID_PRIORITY = "Invalid priority '{value}'"
    ENGINE_VERSION_PARSE = (
        "Unable to parse engine version '{value}' as a semver string. Expected \"x.y.z\" semver format."
    )
    ENGINE_VERSION_TOO_OLD = "Rules file {file} requires engine version {need}, but engine version is {have}"
    PLUGIN_VERSIONS_SEQ = "Value of required_plugin_versions must be a sequence"
    PLUGIN_VERSION_MAPPING = "Plugin version must be a mapping"
    PLUGIN_VERSION_INVALID = "Invalid required version '{version}' for plugin '{name}'"
    PLUGIN_NOT_LOADED = "plugin '{name}' (version {version}) is required but not available; rules using its fields are skipped"
    PLUGIN_CONTAINER_NEWER = (
        "plugin 'container' version {version} is required; Falconet provides {have} natively"
    )
    UNKNOWN_SOURCE = "Unknown source {source}, skipping"
    NO_PREVIOUS_LIST = (
        "List uses 'append' or 'override.items: append' but no list by that name already exists"
    )
    NO_PREVIOUS_MACRO = (
        "Macro uses 'append' or 'override.condition: append' but no macro by that name already exists"
    )
    NO_PREVIOUS_LIST_REPLACE = "List uses 'override.items: replace' but no list by that name already exists"
    NO_PREVIOUS_MACRO_REPLACE = (
        "Macro uses 'override.condition: replace' but no macro by that name already exists"
    )
    NO_PREVIOUS_RULE = (
        "Rule uses 'append' or 'override.<key>: append' but no rule by that name already exists"
    )
    NO_PREVIOUS_RULE_ENABLE = "Rule has 'enabled' key but no rule by that name already exists"
    APPEND_DEPRECATED = "'append' key is deprecated. Add an 'append' entry (e.g. 'condition: append') under 'override' instead."
    ENABLED_DEPRECATED = (
        "The standalone 'enabled' key usage is deprecated. The correct approach requires also a 'replace' entry "
        "under the 'override' key (i.e. 'enabled: replace')."
    )
    OVERRIDE_AND_APPEND = "Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry (e.g. 'condition: append') under 'override' instead."
    OVERRIDE_NOT_MAPPING = "Value of 'override' must be a mapping"
    OVERRIDE_BAD_OP = "Invalid override operation for key '{key}': '{op}'. Allowed values are: append replace"
    OVERRIDE_CANT_APPEND = "Key '{key}' cannot be appended to, use 'replace' instead"
    OVERRIDE_CANT_REPLACE = "Key '{key}' cannot be replaced"
    OVERRIDE_MISSING_KEY = "An {op} override for '{key}' was specified but '{key}' is not defined"
    OVERRIDE_UNEXPECTED_KEY = "Unexpected key '{key}': no corresponding entry under 'override' is defined."
    APPEND_NEEDS_COND = "Appended rule must have exceptions or condition property"
    NOTHING_TO_REPLACE = "The rule must have at least one field that can be replaced"
    SOURCE_CHANGED = "Rule has been re-defined with a different source"
    INVALID_MACRO_NAME = "Macro name '{name}' is not a valid identifier ([a-zA-Z]+[a-zA-Z0-9_]*)"
    INVALID_LIST_NAME = "List name '{name}' contains characters that cannot appear in a condition"
    UNUSED_MACRO = "Macro not referred to by any other rule/macro"
    UNUSED_LIST = "List not referred to by any other rule/macro"
    TOO_MANY_EVTTYPES = "Rule matches too many evt.type values. This has a significant performance penalty."
    UNKNOWN_FILTER_SKIPPED = "Rule skipped (skip-if-unknown-filter): {reason}"
    LIST_ITEM_SCALAR = "List items must be scalars"
    # exceptions
    EXC_SEQUENCE = "Rule exceptions must be a sequence"
    EXC_MAPPING = "Rule exception must be a mapping"
    EXC_NO_NAME = "Rule exception item must have name property"
    EXC_NO_FIELDS = "Rule exception item must have fields property with a list of fields"
    EXC_COMPS_LEN = "Fields and comps lists must have equal length"
    EXC_VALUES_LEN = "Fields and values lists must have equal length"
    EXC_BAD_COMP = "'{comp}' is not a supported comparison operator"
    EXC_BAD_FIELD = "'{field}' is not a supported filter field"
    EXC_BOTH_STRINGS = "Fields and comps must both be strings"
    EXC_SINGLE_COMP = (
        "When fields is a single value, comps must be one of (in, pmatch, intersects) or a modifier operator"
    )
    EXC_VALUES_SEQ = "Rule exception values must be a sequence"
    EXC_VALUES_LISTS = "Expected values array to contain a list of strings"
    EXC_NOT_UNIQUE = "Multiple definitions of exception '{name}' in the same rule"
    EXC_APPEND_FIELDS = "Can not append exception fields or comps to existing exception, only values"
    EXC_APPEND_NEW = "Appended exception '{name}' must have fields and values"
    EXC_NO_VALUES = "Overriding/appending exception with no values"


# --- positions and errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a source: 1-based line and column; `text` is that whole line, for the caret display."""

    file: str
    line: int
    column: int
    text: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def snippet(self, indent: str = "    ") -> str:
        """The line and a caret under the column, or "" when the line is unknown."""
        if not self.text:
            return ""
        gutter = f"{self.line} | "
        # Tabs before the column keep their width in the caret line so the caret lines up.
        lead = "".join(ch if ch == "\t" else " " for ch in self.text[: max(self.column - 1, 0)])
        return f"{indent}{gutter}{self.text}\n{indent}{' ' * len(gutter)}{lead}^"


@dataclass(frozen=True, slots=True)
class Context:
    """One enclosing thing an error happened in: "rule 'X'", "macro 'm'", "condition", "exception 'e'"."""

    label: str
    position: Position | None = None

    def __str__(self) -> str:
        return f"{self.label} ({self.position})" if self.position else self.label


class RuleError(Exception):
    """The root of every rules-language error.

    `offset` (0-based) points into the text being parsed or compiled when known; the loader turns it into a
    file position. `contexts` are outside-in; `position` is the innermost known place.
    """

    def __init__(
        self,
        message: str,
        offset: int | None = None,
        *,
        position: Position | None = None,
        contexts: tuple[Context, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.position = position
        self.contexts = contexts

    def __str__(self) -> str:
        where = (
            f"{self.position}: "
            if self.position
            else (f"offset {self.offset}: " if self.offset is not None else "")
        )
        chain = "".join(f"{c}: " for c in self.contexts)
        return f"{where}{chain}{self.message}"


class ConditionSyntaxError(RuleError):
    """A condition that does not parse. `offset` is always inside the condition (0 <= offset <= len)."""


class CompileError(RuleError):
    """A condition that parses but cannot be compiled (unknown field, bad operator for a type, ...)."""


class UnknownFieldError(CompileError):
    """A field no extractor provides; rules with `skip-if-unknown-filter: true` are skipped instead."""


class OutputFormatError(RuleError):
    """An output format that does not compile (bad %token, unknown field in the output)."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One error or warning of a load: stable code, message, where (outside-in contexts, innermost position)."""

    code: Code
    message: str
    position: Position | None = None
    contexts: tuple[Context, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.code.is_error

    def format(self) -> str:
        """Human form: "file:line:col: error LOAD_ERR_X: message", the contexts, then the line and a caret."""
        kind = "error" if self.is_error else "warning"
        head = f"{self.position}: " if self.position else ""
        lines = [f"{head}{kind} {self.code.value}: {self.message}"]
        lines.extend(f"    in {c}" for c in self.contexts)
        snip = self.position.snippet() if self.position else ""
        if snip:
            lines.append(snip)
        return "\n".join(lines)

    def __str__(self) -> str:
        """One line: "file:line:col: warning CODE: message (in rule 'X', macro 'm')"."""
        head = f"{self.position}: " if self.position else ""
        kind = "error" if self.is_error else "warning"
        where = ", ".join(c.label for c in self.contexts if c.label != "condition")
        return f"{head}{kind} {self.code.value}: {self.message}" + (f" (in {where})" if where else "")

    def to_dict(self) -> dict[str, object]:
        """JSON form (for `falconet rules validate --json`), shaped like Falco's context.as_json()."""
        return {
            "code": self.code.value,
            "severity": "error" if self.is_error else "warning",
            "message": self.message,
            "position": None
            if self.position is None
            else {"file": self.position.file, "line": self.position.line, "column": self.position.column},
            "contexts": [
                {
                    "label": c.label,
                    "position": None if c.position is None else str(c.position),
                }
                for c in self.contexts
            ],
        }


@dataclass(slots=True)
class LoadResult:
    """Everything a load found, in the order found. `ok` is true when there are no errors."""

    files: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(
        self,
        code: Code,
        message: str,
        position: Position | None = None,
        contexts: tuple[Context, ...] = (),
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, position, contexts))

    def summary(self) -> str:
        """Falco's `-V` summary style: "Ok", "Ok, with warnings" or "Invalid", with counts."""
        if self.errors:
            state = "Invalid"
        elif self.warnings:
            state = "Ok, with warnings"
        else:
            state = "Ok"
        return f"{state} ({len(self.errors)} errors, {len(self.warnings)} warnings)"

    def format(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


class RulesLoadError(RuleError):
    """Loading found errors; `.result` holds all of them (and the warnings)."""

    def __init__(self, result: LoadResult) -> None:
        first = result.errors[0] if result.errors else None
        msg = f"{len(result.errors)} error(s) loading rules"
        if first is not None:
            msg += f"; first: {first.format().splitlines()[0]}"
        super().__init__(msg, position=first.position if first else None)
        self.result = result

    def __str__(self) -> str:
        """The summary line, then every error with its contexts, line and caret."""
        return "\n".join([self.message, *(d.format() for d in self.result.errors)])
