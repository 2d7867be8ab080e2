"""RDS events: what happened to a DB instance (created, rebooted, restarted after a crash, ...).

One "rds_event" document per event, keyed by an increasing number, in the
Event output shape (Date as epoch seconds). `record` is what the instance
runner calls; DescribeEvents filters them by source and time as RDS does
(the last hour unless told otherwise). Only the newest `KEEP` are kept.
"""

from __future__ import annotations

import time

from sluice.control.context import Call, Output, Params, Plane, timestamp
from sluice.control.errors import invalid
from sluice.control.store import Doc, Store

EVENT = "rds_event"
KEEP = 1000
_HOUR = 3600.0


def record(store: Store, instance: Doc, message: str, *categories: str) -> None:
    """Note an event of a DB instance."""
    keys = store.keys(EVENT)
    number = int(keys[-1]) + 1 if keys else 1
    store.put(EVENT, f"{number:012d}", {
        "SourceIdentifier": instance["DBInstanceIdentifier"], "SourceType": "db-instance",
        "Message": message, "EventCategories": list(categories), "Date": time.time(),
        "SourceArn": instance["DBInstanceArn"],
    })  # fmt: skip
    for old in keys[: max(0, len(keys) + 1 - KEEP)]:
        store.delete(EVENT, old)


def _window(call: Call, params: Params) -> tuple[float, float]:
    end = params["EndTime"].timestamp() if "EndTime" in params else call.now
    if "StartTime" in params:
        return params["StartTime"].timestamp(), end
    minutes = int(params.get("Duration", 60))
    return end - minutes * 60.0 if "EndTime" in params else call.now - minutes * 60.0, end


def describe(plane: Plane, call: Call, params: Params) -> Output:
    """DescribeEvents of DB instances (other source types have none in Sluice)."""
    kind = params.get("SourceType")
    if kind is not None and kind != "db-instance":
        return {"Events": []}
    if params.get("SourceIdentifier") and kind is None:
        raise invalid("SourceType must be given with SourceIdentifier.")
    start, end = _window(call, params)
    wanted = params.get("SourceIdentifier")
    categories = set(params.get("EventCategories") or [])
    events = [
        e for e in plane.store.all(EVENT)
        if start <= e["Date"] <= end
        and (wanted is None or e["SourceIdentifier"] == wanted.lower())
        and (not categories or categories & set(e["EventCategories"]))
    ]  # fmt: skip
    size = int(params.get("MaxRecords", 100))
    if not 20 <= size <= 100:
        raise invalid(f"Invalid value {size} for MaxRecords. Must be between 20 and 100.")
    after = int(params.get("Marker") or 0)
    page = events[after : after + size]
    out: Output = {"Events": [{**e, "Date": timestamp(e["Date"])} for e in page]}
    if after + size < len(events):
        out["Marker"] = str(after + size)
    return out
