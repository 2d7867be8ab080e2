"""CloudWatch Logs (JSON 1.1), reading what functions wrote: groups, streams, events.

Only the read side exists: a function's group `/aws/lambda/NAME` appears with its first
invocation, one stream per execution environment, one event per line, as on AWS. Filter
patterns are the unstructured kind: every term (a word, or a "quoted phrase") must occur in
the event's message, case-sensitively; `?term` alternatives and JSON patterns are not read
yet. Tokens are offsets into the (time-ordered) results.
"""

from __future__ import annotations

from typing import TypeVar

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError
from sluice.functions.logs import LogArchive, LogEvent

T = TypeVar("T")
_DEFAULT_LIMIT = 10_000
_MAX_GROUPS = 50


def _no_group() -> ApiError:
    return ApiError("ResourceNotFoundException", "The specified log group does not exist.", 400)


class Logs:
    """The CloudWatch Logs read operations."""

    name = "logs"

    def __init__(self, plane: Plane, archive: LogArchive) -> None:
        self.plane = plane
        self.archive = archive

    def _arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.plane.region}:{self.plane.account}:log-group:{group}"

    def DescribeLogGroups(self, call: Call, params: Params) -> Output:
        prefix = params.get("logGroupNamePrefix", "")
        groups = [(n, t) for n, t in self.archive.groups() if n.startswith(prefix)]
        page, token = _page(groups, params, params.get("limit", _MAX_GROUPS))
        out: Output = {"logGroups": [
            {"logGroupName": name, "creationTime": created, "metricFilterCount": 0,
             "arn": self._arn(name) + ":*", "logGroupArn": self._arn(name),
             "storedBytes": sum(s.stored_bytes for s in self.archive.streams(name))}
            for name, created in page
        ]}  # fmt: skip
        if token:
            out["nextToken"] = token
        return out

    def DescribeLogStreams(self, call: Call, params: Params) -> Output:
        group = self._group(params)
        streams = self.archive.streams(group)
        prefix = params.get("logStreamNamePrefix", "")
        streams = [s for s in streams if s.name.startswith(prefix)]
        if params.get("orderBy") == "LastEventTime":
            streams.sort(key=lambda s: s.last_event)
        if params.get("descending"):
            streams.reverse()
        page, token = _page(streams, params, params.get("limit", 50))
        arn = self._arn(group)
        out: Output = {"logStreams": [
            {"logStreamName": s.name, "creationTime": s.created, "storedBytes": s.stored_bytes,
             "firstEventTimestamp": s.first_event, "lastEventTimestamp": s.last_event,
             "lastIngestionTime": s.last_event, "arn": f"{arn}:log-stream:{s.name}"}
            for s in page
        ]}  # fmt: skip
        if token:
            out["nextToken"] = token
        return out

    def GetLogEvents(self, call: Call, params: Params) -> Output:
        group = self._group(params)
        events = _between(self.archive.events(group, params["logStreamName"]), params)
        limit = params.get("limit", _DEFAULT_LIMIT)
        token = params.get("nextToken", "")
        if token.startswith(("f/", "b/")) and token[2:].isdigit():
            start = int(token[2:])
            end = start + limit if token[0] == "f" else start
            start = start if token[0] == "f" else max(0, end - limit)
        elif params.get("startFromHead"):
            start, end = 0, limit
        else:
            start, end = max(0, len(events) - limit), len(events)
        page = events[start:end]
        return {
            "events": [_event(e) for e in page],
            "nextForwardToken": f"f/{start + len(page)}",
            "nextBackwardToken": f"b/{start}",
        }

    def FilterLogEvents(self, call: Call, params: Params) -> Output:
        group = self._group(params)
        names = params.get("logStreamNames")
        prefix = params.get("logStreamNamePrefix", "")
        terms = _terms(params.get("filterPattern", ""))
        found: list[tuple[int, str, LogEvent]] = []
        for stream in self.archive.streams(group):
            if (names and stream.name not in names) or not stream.name.startswith(prefix):
                continue
            for event in _between(self.archive.events(group, stream.name), params):
                if all(term in event.message for term in terms):
                    found.append((event.timestamp, stream.name, event))
        found.sort(key=lambda item: item[0])
        page, token = _page(found, params, params.get("limit", _DEFAULT_LIMIT))
        out: Output = {"events": [
            {**_event(event), "logStreamName": stream, "eventId": f"{stamp}-{i}"}
            for i, (stamp, stream, event) in enumerate(page)
        ]}  # fmt: skip
        if token:
            out["nextToken"] = token
        return out

    def _group(self, params: Params) -> str:
        group = params.get("logGroupName") or params.get("logGroupIdentifier", "")
        group = group.split(":log-group:")[-1].removesuffix(":*")
        if not self.archive.has_group(group):
            raise _no_group()
        return str(group)


def _event(event: LogEvent) -> Output:
    return {"timestamp": event.timestamp, "message": event.message,
            "ingestionTime": event.ingestion_time}  # fmt: skip


def _between(events: list[LogEvent], params: Params) -> list[LogEvent]:
    low = params.get("startTime", 0)
    high = params.get("endTime")
    return [e for e in events if e.timestamp >= low and (high is None or e.timestamp <= high)]


def _terms(pattern: str) -> list[str]:
    terms: list[str] = []
    rest = pattern.strip()
    while rest:
        if rest.startswith('"'):
            phrase, _, rest = rest[1:].partition('"')
            terms.append(phrase)
        else:
            word, _, rest = rest.partition(" ")
            terms.append(word)
        rest = rest.strip()
    return [t for t in terms if t]


def _page(items: list[T], params: Params, limit: int) -> tuple[list[T], str]:
    token = params.get("nextToken", "")
    start = int(token) if token.isdigit() else 0
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, str(start + limit) if more else ""
