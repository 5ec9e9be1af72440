"""Checks that the EventBridge patterns in deploy/finding-intake/cloudformation.yaml select the finding events in
tests/fixtures/findings/ that they should, and no others, using moto's event pattern matcher.

    "$(dev/install-venv moto python)" dev/check-event-patterns.py

Prints one line per case; exits 1 on any mismatch, 2 when the template or a fixture cannot be read.

moto's matcher does not look inside arrays of objects (it flattens objects only), but EventBridge does: a field
under an array matches when any element's value matches, so {"findings": {"Severity": {"Label": ["HIGH"]}}}
selects a Security Hub event whose detail.findings[0].Severity.Label is HIGH. Before matching, each event is
rewritten the way EventBridge reads it: an array of objects becomes one object whose leaves are the arrays of
the elements' values. moto's own verdict on the unrewritten event is printed too when it differs.
"""
import copy
import json
import sys
from pathlib import Path

import yaml
from moto.events.models import EventPattern

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "deploy/finding-intake/cloudformation.yaml"
FIXTURES = REPO / "tests/fixtures/findings"

ACCOUNT_ID = "111122223333"
REGION = "eu-west-1"
SAMPLE = {
    "{{INSTANCE_ID}}": "i-0123456789abcdef0",
    "{{ACCOUNT_ID}}": ACCOUNT_ID,
    "{{REGION}}": REGION,
    "{{FINDING_ID}}": "4f8b2c6d1e3a5b7c9d0e2f4a6b8c0d1e",
    "{{EVENT_ID}}": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_template():
    # safe_load refuses short-form tags such as !Sub, which the template must not use.
    try:
        return yaml.safe_load(TEMPLATE.read_text())
    except yaml.YAMLError as error:
        fail(f"{TEMPLATE.name} is not plain YAML (short-form intrinsics?): {error}")


def parameter_defaults(template):
    return {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}


def attributes(template):
    """The values of the Fn::GetAtt attributes the patterns may use, as the deployed stack would have them."""
    action = template["Resources"]["SecurityHubCustomAction"]["Properties"]
    arn = f"arn:aws:securityhub:{REGION}:{ACCOUNT_ID}:action/custom/{action['Id']}"
    return {("SecurityHubCustomAction", "ActionTargetArn"): arn}


def resolve(node, attrs):
    """Replaces the intrinsics a pattern may hold; any other intrinsic is an error, so the check cannot drift."""
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)).startswith(("Fn::", "Ref")):
            key, value = next(iter(node.items()))
            if key == "Fn::GetAtt" and tuple(value) in attrs:
                return attrs[tuple(value)]
            fail(f"unexpected intrinsic in an event pattern: {node}")
        return {k: resolve(v, attrs) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, attrs) for v in node]
    return node


def pattern(template, rule, parameters):
    raw = template["Resources"][rule]["Properties"]["EventPattern"]
    if isinstance(raw, dict) and list(raw) == ["Fn::Sub"]:
        text = raw["Fn::Sub"]
        if not isinstance(text, str):
            fail(f"{rule}: Fn::Sub with a variable map is not expected")
        for name, value in parameters.items():
            text = text.replace("${" + name + "}", str(value))
        if "${" in text:
            fail(f"{rule}: unresolved variable in {text}")
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            fail(f"{rule}: the pattern is not JSON after substitution: {error}")
    return resolve(raw, attributes(template))


def fixture(name, severity=None):
    text = (FIXTURES / name).read_text()
    values = dict(SAMPLE)
    if severity is not None:
        values["{{SEVERITY}}"] = json.dumps(severity)
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    if "{{" in text:
        fail(f"{name}: placeholder left after substitution")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"{name}: not JSON after substitution: {error}")


def as_eventbridge_reads(node):
    """An array of objects becomes one object whose leaves list the elements' values (see the module docstring)."""
    if isinstance(node, dict):
        return {k: as_eventbridge_reads(v) for k, v in node.items()}
    if isinstance(node, list) and node and all(isinstance(e, dict) for e in node):
        merged = {}
        for element in (as_eventbridge_reads(e) for e in node):
            for key, value in element.items():
                merged.setdefault(key, []).append(value)
        return {key: merge(values) for key, values in merged.items()}
    return node


def merge(values):
    if all(isinstance(v, dict) for v in values):
        return as_eventbridge_reads([v for v in values])
    flat = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def without(event, *path):
    event = copy.deepcopy(event)
    node = event
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return event


def with_value(event, path, value):
    event = copy.deepcopy(event)
    node = event
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return event


def main():
    template = load_template()
    parameters = parameter_defaults(template)
    minimum = parameters["MinimumGuardDutySeverity"]
    rules = ["GuardDutyFindingsRule", "SecurityHubCustomActionRule", "SecurityHubImportedRule"]
    patterns = {rule: EventPattern.load(json.dumps(pattern(template, rule, parameters))) for rule in rules}

    gd_high = fixture("guardduty-ec2.json", 8)
    gd_low = fixture("guardduty-ec2.json", 2)
    eks_high = fixture("guardduty-eks-runtime.json", 8)
    eks_low = fixture("guardduty-eks-runtime.json", 2)
    action = fixture("securityhub-custom-action.json")
    imported = fixture("securityhub-imported.json")
    other_action = with_value(action, ["resources", 0], f"arn:aws:securityhub:{REGION}:{ACCOUNT_ID}:action/custom/Other")
    finding = ["detail", "findings", 0]

    # (description, event, rule, expected match)
    cases = [
        ("guardduty-ec2 severity 8", gd_high, "GuardDutyFindingsRule", True),
        ("guardduty-ec2 severity 2", gd_low, "GuardDutyFindingsRule", False),
        ("guardduty-eks-runtime severity 8", eks_high, "GuardDutyFindingsRule", True),
        ("securityhub-custom-action", action, "SecurityHubCustomActionRule", True),
        ("securityhub-custom-action", action, "GuardDutyFindingsRule", False),
        ("securityhub-imported", imported, "SecurityHubImportedRule", True),
        ("securityhub-imported", imported, "SecurityHubCustomActionRule", False),
        # Beyond the required cases: the edges of each pattern.
        (f"guardduty-ec2 severity {minimum} (the minimum)", fixture("guardduty-ec2.json", minimum), "GuardDutyFindingsRule", True),
        ("guardduty-ec2 severity 6.9", fixture("guardduty-ec2.json", 6.9), "GuardDutyFindingsRule", False),
        ("guardduty-eks-runtime severity 2", eks_low, "GuardDutyFindingsRule", False),
        ("guardduty-eks-runtime without instanceDetails (as audit-log findings)",
         without(eks_high, "detail", "resource", "instanceDetails"), "GuardDutyFindingsRule", False),
        ("guardduty-ec2 as resourceType AccessKey", with_value(gd_high, ["detail", "resource", "resourceType"], "AccessKey"),
         "GuardDutyFindingsRule", False),
        ("guardduty-ec2 severity 8", gd_high, "SecurityHubImportedRule", False),
        ("securityhub-custom-action for another custom action", other_action, "SecurityHubCustomActionRule", False),
        ("securityhub-custom-action", action, "SecurityHubImportedRule", False),
        ("securityhub-imported", imported, "GuardDutyFindingsRule", False),
        ("securityhub-imported with Severity.Label CRITICAL",
         with_value(imported, finding + ["Severity", "Label"], "CRITICAL"), "SecurityHubImportedRule", True),
        ("securityhub-imported with Severity.Label MEDIUM",
         with_value(imported, finding + ["Severity", "Label"], "MEDIUM"), "SecurityHubImportedRule", False),
        ("securityhub-imported about an AwsS3Bucket",
         with_value(imported, finding + ["Resources", 0, "Type"], "AwsS3Bucket"), "SecurityHubImportedRule", False),
        # GuardDuty's findings reach Security Hub too; GuardDutyFindingsRule forwards them, so this rule must not.
        ("securityhub-imported with ProductName GuardDuty",
         with_value(imported, finding + ["ProductName"], "GuardDuty"), "SecurityHubImportedRule", False),
    ]

    mismatches = 0
    for description, event, rule, expected in cases:
        got = patterns[rule].matches_event(as_eventbridge_reads(event))
        raw = patterns[rule].matches_event(event)
        verdict = "ok  " if got == expected else "FAIL"
        mismatches += got != expected
        note = "" if raw == got else f"  (moto on the unrewritten event: {'match' if raw else 'no match'})"
        print(f"{verdict} {description:<72} {rule:<28} expected {'match' if expected else 'no match':<8} "
              f"got {'match' if got else 'no match'}{note}")
    print(f"{len(cases) - mismatches}/{len(cases)} cases as expected (MinimumGuardDutySeverity={minimum})")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
