#!/usr/bin/env python3
"""Validate rendered tracepipe manifests offline.

Reads the multi-document YAML that `kubectl kustomize k8s/overlays/<overlay>` prints and checks
every object in it:

- built-in Kubernetes kinds against the API schemas of one Kubernetes release, as bundled in the
  kubernetes-validate package, in its strict form (an unknown field is an error);
- custom resources against the openAPIV3Schema of their CRDs, in a folder of schema files given
  with --crds, with the API server's structural rules applied: fields it would prune are errors,
  list-type map/set keys must be unique, and the CRD's CEL rules must hold;
- custom resources named with --typed-elsewhere (apiVersion/Kind) only for their metadata, names
  and labels: tests/k8s.rs checks their spec against the CRDs' published types;
- any other kind is an error: nothing is skipped.

Usage:
    validate.py [--kubernetes-version 1.31] [--crds DIR] [--typed-elsewhere GROUP/VERSION/KIND,...] FILE...
    ('-' reads standard input)

Prints one line per problem, `<file>: <kind>/<name>: <json path>: <message>`, then
`N objects valid` (followed by `, M invalid, P problems` if any); exits 1 if there was any
problem.
"""

import argparse
import base64
import binascii
import importlib.resources
import json
import re
import sys
from collections import deque
from pathlib import Path

import celpy
import jsonschema
import re2
import referencing
import yaml

# One release, not "the newest bundled", so that a kubernetes-validate upgrade cannot change
# what passes; move it with the clusters the manifests are deployed to.
DEFAULT_KUBERNETES_VERSION = "1.31"

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class Problem:
    def __init__(self, message, path=()):
        self.message = message
        self.path = tuple(path)


# ---------------------------------------------------------------------------------------------
# YAML, read as the API machinery reads it


class _Loader(yaml.SafeLoader):
    """YAML 1.1 like sigs.k8s.io/yaml, but keeping dates as strings and refusing duplicate keys."""


# Kubernetes turns every timestamp-looking scalar into a JSON string; PyYAML would make a
# datetime of it, which no schema accepts.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node, deep=False):
    # kubectl refuses a duplicated key, where PyYAML would silently keep the last value.
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may be overridden by design
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool, type(None))):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


def _construct_value(loader, node):
    # A bare `=` is the YAML 1.1 "value" type: go-yaml reads it as the string "=".
    return loader.construct_scalar(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:value", _construct_value)


# ---------------------------------------------------------------------------------------------
# Formats the API server enforces; jsonschema checks none unless told.


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("byte", raises=(binascii.Error, ValueError))
def _is_base64(value):
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


@FORMATS.checks("int32")
def _is_int32(value):
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _is_int64(value):
    return not isinstance(value, int) or -(2**63) <= value < 2**63


# ---------------------------------------------------------------------------------------------
# Built-in kinds


class BuiltinSchemas:
    def __init__(self, kubernetes_version):
        # The schemas are per minor release: 1.31.4 validates as 1.31.
        kubernetes_version = ".".join(kubernetes_version.lstrip("v").split(".")[:2])
        root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
        self.version = kubernetes_version
        self.dir = root / f"v{kubernetes_version}.0-local-strict"
        if not self.dir.is_dir():
            have = sorted(p.name.split("-")[0][1:].rsplit(".", 1)[0]
                          for p in root.iterdir() if p.name.endswith("-local-strict"))
            raise SystemExit(f"kubernetes-validate bundles no schemas for Kubernetes "
                             f"{kubernetes_version}; it has {', '.join(have)}")
        definitions = json.loads((self.dir / "_definitions.json").read_text())
        self.registry = referencing.Registry().with_resource(
            definitions["$id"], referencing.Resource.from_contents(definitions))
        self.definitions_id = definitions["$id"]
        self.validators = {}

    def validator(self, api_version, kind):
        """The validator of a built-in kind, or None if the release has no such kind."""
        group, _, version = api_version.rpartition("/")
        # A CRD's group is a domain of its own; only the bare and *.k8s.io groups are built in,
        # so that e.g. a `apps.example.com/v1 Deployment` is not taken for apps/v1.
        if "." in group and not group.endswith(".k8s.io"):
            return None
        key = (api_version, kind)
        if key not in self.validators:
            # Named as kubernetes-validate names its files: kind, first label of the group, version.
            name = "-".join(filter(None, [kind.lower(), group.split(".")[0], version])) + ".json"
            path = self.dir / name
            validator = None
            if path.is_file():
                schema = json.loads(path.read_text())
                # Kinds are case-sensitive for the API server, the file names are not.
                if {"group": group, "version": version, "kind": kind} in \
                        schema.get("x-kubernetes-group-version-kind", []):
                    validator = jsonschema.Draft202012Validator(
                        schema, registry=self.registry, format_checker=FORMATS)
            self.validators[key] = validator
        return self.validators[key]

    def object_meta_validator(self):
        if "ObjectMeta" not in self.validators:
            schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                      "$ref": f"{self.definitions_id}#/$defs/{OBJECT_META}"}
            self.validators["ObjectMeta"] = jsonschema.Draft202012Validator(
                schema, registry=self.registry, format_checker=FORMATS)
        return self.validators["ObjectMeta"]


# ---------------------------------------------------------------------------------------------
# Custom resources


def _list_type(validator, list_type, instance, schema):
    # Structural-schema list semantics, which the API server enforces on custom resources.
    if not validator.is_type(instance, "array") or list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = {}
    for index, item in enumerate(instance):
        if list_type == "map":
            if not isinstance(item, dict):
                continue
            identity = json.dumps([item.get(k) for k in keys])
            what = ", ".join(f"{k}={json.dumps(item.get(k))}" for k in keys)
        else:
            identity = json.dumps(item, sort_keys=True)
            what = json.dumps(item)
        if identity in seen:
            yield jsonschema.ValidationError(
                f"duplicate entry {what} (also at [{seen[identity]}])", path=deque([index]))
        else:
            seen[identity] = index


_CEL = celpy.Environment()
_CEL_PROGRAMS = {}


def _cel_rules(validator, rules, instance, schema):
    # The API server runs CEL rules only on a value that passed the rest of its schema; doing the
    # same avoids a second, more obscure report of a type error already reported.
    rest = {k: v for k, v in schema.items() if k != "x-kubernetes-validations"}
    if not validator.evolve(schema=rest).is_valid(instance):
        return
    for rule in rules:
        text = rule["rule"]
        if re.search(r"\boldSelf\b", text):
            continue  # a transition rule: it compares with the stored object, run only on update
        path = deque(re.findall(r"[^.\[\]']+", rule.get("fieldPath", "")))
        try:
            if text not in _CEL_PROGRAMS:
                _CEL_PROGRAMS[text] = _CEL.program(_CEL.compile(text))
            result = _CEL_PROGRAMS[text].evaluate({"self": celpy.json_to_cel(instance)})
        except (celpy.CELParseError, celpy.CELEvalError) as error:
            yield jsonschema.ValidationError(f"CEL rule {text!r} could not be evaluated: {error}",
                                             path=path)
            continue
        if isinstance(result, celpy.CELEvalError):
            yield jsonschema.ValidationError(f"CEL rule {text!r} could not be evaluated: {result}",
                                             path=path)
        elif not result:
            yield jsonschema.ValidationError(rule.get("message") or f"failed rule: {text}",
                                             path=path)


_RE2 = {}


def _re2(pattern):
    if pattern not in _RE2:
        _RE2[pattern] = re2.compile(pattern)
    return _RE2[pattern]


def _pattern(validator, pattern, instance, schema):
    # The API server matches with Go's regexp, RE2 syntax, which Python's re differs from: the
    # Prometheus-operator CRDs use `^(?i)(abort|warn)?$`, which Python 3.11 refuses.
    if validator.is_type(instance, "string") and not _re2(pattern).search(instance):
        yield jsonschema.ValidationError(f"{_short(instance)} does not match {pattern!r}")


_RE2_FORMATS = jsonschema.FormatChecker(formats=())


@_RE2_FORMATS.checks("regex", raises=re2.error)
def _is_re2(pattern):
    _re2(pattern)
    return True


# openAPIV3Schema is OpenAPI 3.0's dialect of JSON Schema, which is draft 4's (exclusiveMinimum
# as a boolean and all); the Kubernetes extensions that validate are added as keywords.
CrdValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "x-kubernetes-list-type": _list_type,
    "x-kubernetes-validations": _cel_rules,
    "pattern": _pattern,
})
# The schemas' own patterns are RE2 too, so the meta-schema checks them with it.
_CrdMetaValidator = jsonschema.Draft4Validator(
    jsonschema.Draft4Validator.META_SCHEMA, format_checker=_RE2_FORMATS)


def _structural(schema):
    """The schema as the API server applies it, with pruning turned into errors."""
    schema = dict(schema)
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {k: _structural(v) for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        schema["items"] = _structural(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _structural(schema["additionalProperties"])
    # allOf/anyOf/oneOf/not may not declare fields in a structural schema, so they are left as
    # they are: closing them would refuse fields declared beside them.
    if schema.get("x-kubernetes-embedded-resource"):
        properties = schema.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            properties.setdefault(name, {"type": "string"})
        properties.setdefault("metadata", {"type": "object"})
    if (schema.get("type") == "object" and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        # The API server would drop such a field without a word (kubectl --validate=strict
        # refuses it): in a manifest it is a typo or a field of another version.
        schema["additionalProperties"] = False
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    return schema


class CrdSchemas:
    """The files are named <Kind>_<group>_<version>.json and hold that version's openAPIV3Schema."""

    def __init__(self, directory):
        self.directory = Path(directory) if directory else None
        self.validators = {}
        if self.directory is None:
            return
        files = sorted(self.directory.glob("*.json"))
        if not files:
            raise SystemExit(f"no CRD schema in {self.directory}")
        for path in files:
            match = re.fullmatch(r"([A-Za-z0-9]+)_([a-z0-9.-]+)_([a-z0-9]+)", path.stem)
            if not match:
                raise SystemExit(f"{path}: not named <Kind>_<group>_<version>.json")
            kind, group, version = match.groups()
            schema = _structural(json.loads(path.read_text()))
            # metadata is checked as ObjectMeta, in full, like a built-in kind's.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            for error in _CrdMetaValidator.iter_errors(schema):
                raise SystemExit(f"{path}: not a valid schema: {error.message[:300]} at "
                                 f"{json_path(error.absolute_path)}")
            self.validators[(f"{group}/{version}", kind)] = CrdValidator(
                schema, format_checker=FORMATS)

    def validator(self, api_version, kind):
        return self.validators.get((api_version, kind))

    def versions_of(self, api_version, kind):
        group = api_version.rpartition("/")[0]
        return sorted(v for v, k in self.validators
                      if k == kind and v.rpartition("/")[0] == group)


# ---------------------------------------------------------------------------------------------
# Names and labels, which the API server checks outside the schemas


DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _name_problems(api_version, kind, metadata):
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        yield Problem("required field is missing", ("metadata", "name"))
        return
    group = api_version.rpartition("/")[0]
    if group == "rbac.authorization.k8s.io":
        # Role names are path segments: `system:...` is usual there.
        ok, rule = name not in (".", "..") and not re.search(r"[/%]", name), "a path segment"
    elif (group, kind) == ("", "Service"):
        ok, rule = len(name) <= 63 and DNS1035_LABEL.fullmatch(name), "an RFC 1035 label"
    elif (group, kind) == ("", "Namespace"):
        ok, rule = len(name) <= 63 and DNS1123_LABEL.fullmatch(name), "an RFC 1123 label"
    else:
        ok, rule = len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name), "an RFC 1123 subdomain"
    if not ok:
        yield Problem(f"{name!r} is not {rule}", ("metadata", "name"))
    namespace = metadata.get("namespace")
    if isinstance(namespace, str) and not (len(namespace) <= 63
                                           and DNS1123_LABEL.fullmatch(namespace)):
        yield Problem(f"{namespace!r} is not an RFC 1123 label", ("metadata", "namespace"))


def _label_problems(labels, path):
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (not (len(name) <= 63 and LABEL_NAME.fullmatch(name))
                or (prefix and not (len(prefix) <= 253 and DNS1123_SUBDOMAIN.fullmatch(prefix)))):
            yield Problem(f"{key!r} is not a valid label key", path + (key,))
        if isinstance(value, str) and value and not (len(value) <= 63
                                                     and LABEL_NAME.fullmatch(value)):
            yield Problem(f"{value!r} is not a valid label value", path + (key,))


def _labels_of(obj, metadata):
    """Every label set whose syntax the API server checks, with its path."""
    yield metadata.get("labels"), ("metadata", "labels")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("metadata"), dict):
        yield template["metadata"].get("labels"), ("spec", "template", "metadata", "labels")
    selector = spec.get("selector")
    if isinstance(selector, dict):
        if isinstance(selector.get("matchLabels"), dict):
            yield selector["matchLabels"], ("spec", "selector", "matchLabels")
        elif obj.get("kind") == "Service" and obj.get("apiVersion") == "v1":
            yield selector, ("spec", "selector")


# ---------------------------------------------------------------------------------------------
# Reporting


def json_path(parts):
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", part):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _short(value, limit=120):
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_JSON_TYPES = [("null", type(None)), ("boolean", bool), ("integer", int), ("number", float),
               ("string", str), ("array", list), ("object", dict)]


def _type_name(value):
    return next(name for name, py in _JSON_TYPES if isinstance(value, py))


def _alternatives(error):
    """The types an anyOf/oneOf of bare types accepts (int-or-string, quantity), else None."""
    types = []
    for sub in error.validator_value:
        sub_type = sub.get("type") if isinstance(sub, dict) else None
        if sub_type is None or set(sub) - {"type", "format"}:
            return None
        types += [t for t in ([sub_type] if isinstance(sub_type, str) else sub_type)
                  if t != "null" and t not in types]
    return types


def schema_problems(validator, instance, prefix=()):
    """The schema errors, one Problem per field, with the offending field in the path."""
    for error in validator.iter_errors(instance):
        path = prefix + tuple(error.absolute_path)
        value = error.validator_value
        if error.validator == "additionalProperties" and value is False:
            declared = error.schema.get("properties", {})
            for name in error.instance:
                if name not in declared:
                    yield Problem("unknown field", path + (name,))
        elif error.validator == "required":
            for name in value:
                if name not in error.instance:
                    yield Problem("required field is missing", path + (name,))
        elif error.validator == "type":
            expected = [t for t in ([value] if isinstance(value, str) else value) if t != "null"]
            yield Problem(f"expected {' or '.join(expected)}, got {_type_name(error.instance)} "
                          f"{_short(error.instance)}", path)
        elif error.validator in ("anyOf", "oneOf") and _alternatives(error):
            yield Problem(f"expected {' or '.join(_alternatives(error))}, got "
                          f"{_type_name(error.instance)} {_short(error.instance)}", path)
        elif error.validator == "enum":
            yield Problem(f"{_short(error.instance)} is not one of "
                          f"{', '.join(json.dumps(v) for v in value if v is not None)}", path)
        elif error.validator == "format":
            what = {"byte": "base64 data", "int32": "32-bit integer", "int64": "64-bit integer"}
            yield Problem(f"{_short(error.instance)} is not {what.get(value, value)}", path)
        else:
            message = error.message
            yield Problem(message if len(message) <= 300 else message[:297] + "...", path)


class Checker:
    def __init__(self, builtins, crds, typed_elsewhere=()):
        self.builtins = builtins
        self.crds = crds
        self.typed_elsewhere = set(typed_elsewhere)

    def problems(self, obj):
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not api_version:
            yield Problem("required field is missing", ("apiVersion",))
        if not isinstance(kind, str) or not kind:
            yield Problem("required field is missing", ("kind",))
        if not (isinstance(api_version, str) and api_version and isinstance(kind, str) and kind):
            return
        # A metadata of the wrong type is a schema error, and a missing one a missing name.
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}

        builtin = self.builtins.validator(api_version, kind)
        crd = self.crds.validator(api_version, kind)
        if builtin is not None:
            yield from schema_problems(builtin, obj)
        elif crd is not None:
            yield from schema_problems(crd, obj)
            yield from schema_problems(self.builtins.object_meta_validator(), metadata,
                                       ("metadata",))
        elif f"{api_version}/{kind}" in self.typed_elsewhere:
            yield from schema_problems(self.builtins.object_meta_validator(), metadata,
                                       ("metadata",))
        else:
            others = self.crds.versions_of(api_version, kind)
            yield Problem(
                f"no schema for apiVersion {api_version} kind {kind}: "
                + (f"the CRD schemas have it as {', '.join(others)} only"
                   if others else
                   f"not a kind of Kubernetes {self.builtins.version}, and no CRD schema or "
                   f"typed check for it"))
            return

        yield from _name_problems(api_version, kind, metadata)
        for labels, path in _labels_of(obj, metadata):
            yield from _label_problems(labels, path)


def check_file(checker, filename, out):
    """Returns (objects read, objects without a problem, problems found)."""
    shown = "<stdin>" if filename == "-" else filename
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        documents = list(yaml.load_all(text, Loader=_Loader))
    except OSError as error:
        print(f"{shown}: {error.strerror or error}", file=out)
        return 0, 0, 1
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        print(f"{shown}: {where}{getattr(error, 'problem', None) or error}", file=out)
        return 0, 0, 1

    objects = [doc for doc in documents if doc is not None]
    if not objects:
        # An empty rendering is a failed `kubectl kustomize`, not a valid deployment.
        print(f"{shown}: no objects", file=out)
        return 0, 0, 1

    valid = problems = 0
    seen = {}
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            print(f"{shown}: document {index + 1}: expected an object, got {_type_name(obj)}",
                  file=out)
            problems += 1
            continue
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        label = f"{obj.get('kind') or '?'}/{metadata.get('name') or '?'}"
        found = sorted({(json_path(p.path), p.message) for p in checker.problems(obj)})
        identity = (str(obj.get("apiVersion", "")).rpartition("/")[0], obj.get("kind"),
                    metadata.get("namespace"), metadata.get("name"))
        if identity in seen and metadata.get("name"):
            # kubectl apply would apply both, the later one silently winning.
            found.append(("$", f"same object as document {seen[identity] + 1}"))
        else:
            seen[identity] = index
        for path, message in found:
            print(f"{shown}: {label}: {path}: {message}", file=out)
        problems += len(found)
        valid += not found
    return len(objects), valid, problems


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Validate rendered tracepipe manifests (kubectl kustomize output) offline.")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="multi-document YAML file; '-' for standard input")
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                        help="Kubernetes release whose API schemas apply (default %(default)s)")
    parser.add_argument("--crds", type=Path,
                        help="folder of CRD schemas, <Kind>_<group>_<version>.json, each a "
                             "served version's openAPIV3Schema")
    parser.add_argument("--typed-elsewhere", default="",
                        help="comma-separated GROUP/VERSION/KIND whose spec another check "
                             "validates; only their metadata is checked here")
    args = parser.parse_args(argv)

    typed = [kind for kind in args.typed_elsewhere.split(",") if kind]
    checker = Checker(BuiltinSchemas(args.kubernetes_version), CrdSchemas(args.crds), typed)
    total = valid = problems = 0
    for filename in args.files:
        file_total, file_valid, file_problems = check_file(checker, filename, sys.stdout)
        total += file_total
        valid += file_valid
        problems += file_problems
    summary = [f"{valid} objects valid"]
    if total - valid:
        summary.append(f"{total - valid} invalid")
    if problems:
        summary.append(f"{problems} problems")
    print(", ".join(summary))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
