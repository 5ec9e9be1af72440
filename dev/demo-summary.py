"""Prints a ForensicCapture's artifacts, containment and conditions (JSON from `kubectl get fc -o json` on stdin)."""
import json
import sys

status = json.load(sys.stdin)["status"]
for artifact in status["artifacts"]:
    print(f"{artifact['type']:<14} {artifact['uri']}")
    print(f"{'':<14} sha256={artifact.get('sha256', '-')} size={artifact.get('sizeBytes', '-')} state={artifact['state']}")
isolation = status.get("isolation", {})
print(f"\nisolation group {isolation.get('securityGroupId')} (via {isolation.get('transitionGroupId')})")
for interface in isolation.get("previous", []):
    print(f"  {interface['networkInterfaceId']} was on {', '.join(interface['securityGroupIds'])}")
for action in isolation.get("actions", []):
    print(f"  {action['name']:<22} {action['state']:<10} {action.get('message', '')}")
print()
for condition in status["conditions"]:
    print(f"condition {condition['type']:<12} {condition['status']:<6} {condition['reason']}")
print(f"\nphase {status['phase']}, started {status['startedAt']}, completed {status['completedAt']}")
