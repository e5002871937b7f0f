#!/usr/bin/env python3
"""Validates JSON documents against orchestrate's JSON Schemas with an
independent validator (python-jsonschema, Draft 2020-12), for the Rust
test tests/it/schema.rs.

Reads a JSON list of {"name", "schema" (a path), "instance"} from the file
named on the command line; prints a JSON object mapping each name to the
list of its validation errors ("at /path: message"), empty when valid.
"""
import json
import sys

import jsonschema

def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    schemas = {}
    out = {}
    for case in cases:
        path = case["schema"]
        if path not in schemas:
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
            jsonschema.Draft202012Validator.check_schema(schema)
            schemas[path] = jsonschema.Draft202012Validator(schema)
        errors = schemas[path].iter_errors(case["instance"])
        out[case["name"]] = [
            "at /%s: %s" % ("/".join(str(p) for p in e.absolute_path), e.message)
            for e in errors
        ]
    json.dump(out, sys.stdout, indent=1)

if __name__ == "__main__":
    main()
