#!/usr/bin/env python3
"""Writes a JSONL usage file for `ratectl send`: events for `globex` (telecom-standard: voice,
SMS, data) and for accounts acct-0..acct-N (rated by a default plan, e.g. saas-pro: API requests
and storage; with --accounts 0 they all go to `acme`, subscribed to saas-pro in the shipped
config), timestamps within the last day, with a share of resent (duplicate) events.

    python3 scripts/gen_usage.py --events 100000 --accounts 1000 --dup-ratio 0.1 --out usage.jsonl
"""
import argparse
import datetime
import json
import random


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100000)
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--dup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--day", help="put every event on this UTC day (YYYY-MM-DD) instead of the last 24 hours")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rng = random.Random(a.seed)
    now = datetime.datetime.now(datetime.timezone.utc)
    if a.day:
        now = datetime.datetime.fromisoformat(a.day).replace(tzinfo=datetime.timezone.utc) + datetime.timedelta(days=1)
    destinations = ["+442071234567", "+447911123456", "+12125550100", "+33142000000"]
    lines = []

    def saas_account():
        return f"acct-{rng.randrange(a.accounts)}" if a.accounts > 0 else "acme"

    for i in range(a.events):
        if lines and rng.random() < a.dup_ratio:
            lines.append(lines[rng.randrange(len(lines))])
            continue
        at = (now - datetime.timedelta(seconds=rng.randrange(60, 86000))).isoformat(timespec="seconds").replace("+00:00", "Z")
        kind = rng.randrange(5)
        e = {"event_id": f"ev-{a.seed}-{i}", "timestamp": at}
        if kind == 0:
            e.update(account="globex", meter="voice.seconds", quantity=str(rng.randrange(900)),
                     attributes={"destination": rng.choice(destinations)})
        elif kind == 1:
            e.update(account="globex", meter="sms.count", quantity=str(rng.randrange(1, 5)))
        elif kind == 2:
            e.update(account=saas_account(), meter="storage.gb_hours", quantity=f"{rng.randrange(40)}.{rng.randrange(10)}")
        else:
            e.update(account=saas_account(), meter="api.requests", quantity=str(rng.randrange(1, 5000)))
        lines.append(json.dumps(e, separators=(",", ":")))
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
