#!/usr/bin/env bash
# What the schema tests need from outside the crate: an independent JSON
# Schema validator (python-jsonschema, draft 2020-12) to check every shipped
# playbook and inventory against docs/schema/ (tests/schema/validate.py).
# Idempotent; quick when everything is already there.
set -euo pipefail
exec bash "$(dirname "$0")/../pip-pinned.sh" schema jsonschema==4.26.0
