"""Validate DICOM Audit Messages against tests/atna/audit-message.xsd with xmlschema.

Reads one XML message per line on stdin; prints one JSON line per message:
{"ok": bool, "error": str|null}."""
import json
import os
import sys

import xmlschema

schema = xmlschema.XMLSchema(os.path.join(os.path.dirname(os.path.abspath(__file__)), "audit-message.xsd"))
for line in sys.stdin:
    line = line.strip().lstrip("\ufeff")
    if not line:
        continue
    try:
        schema.validate(line)
        print(json.dumps({"ok": True, "error": None}))
    except Exception as e:  # noqa: BLE001 - the reason is the output
        print(json.dumps({"ok": False, "error": str(e)[:500]}))
