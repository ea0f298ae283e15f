"""Prometheus metrics of a neurorad installation (``GET /metrics``, official ``prometheus_client``).

Every figure is read from the database at scrape time by one collector, so one scrape of
``neurorad serve`` describes the whole installation, however many ``neurorad worker``
processes on however many hosts run its jobs (they share the database, docs/data-plane.md),
and a restarted process loses nothing. Exposition format: Prometheus text format 0.0.4.

* ``neurorad_queue_depth{kind}``: pending jobs; ``neurorad_queue_oldest_pending_seconds{kind}``.
* ``neurorad_jobs{kind,workflow,state}``: jobs by state (``failed``: ended for good).
* ``neurorad_job_duration_seconds{kind,workflow}``: histogram of succeeded jobs' run time
  (``finished_at - started_at`` of the last attempt).
* ``neurorad_workflow_step_duration_seconds{workflow,step}``: histogram of the step times each
  workflow records in its result's provenance (``result.json``; read once per result).
* ``neurorad_instances_stored_total``, ``neurorad_instances_received_total`` (duplicates
  included), ``neurorad_instances_refused_total``: ingest; the ingest rate is
  ``rate(neurorad_instances_stored_total[5m])``.
* ``neurorad_studies{state}``, ``neurorad_runs{workflow,state}``.
* ``neurorad_deliveries{destination,state}``.

No label carries an identifier: only job kinds, workflow names, states, step names and
destination names from the site's configuration.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

JOB_BUCKETS_S: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STEP_BUCKETS_S: tuple[float, ...] = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


class _Histogram:
    """Cumulative bucket counts and sum of observations (for one label set)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.bounds):
            if value <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for b, c in zip([*map(str, map(float, self.bounds)), "+Inf"], self.counts, strict=True):
            acc += c
            out.append((b, acc))
        return out


def _histogram_family(name: str, doc: str, labels: list[str],
                      hists: dict[tuple[str, ...], _Histogram]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, h in sorted(hists.items()):
        fam.add_metric(list(key), h.buckets(), sum_value=h.total)
    return fam


class DatabaseCollector:
    """Collects the installation's figures from its database (and result provenance) per scrape."""

    def __init__(self, db, storage, now=None) -> None:
        self.db, self.storage = db, storage
        self._now = now or (lambda: datetime.utcnow())
        self._steps: dict[tuple[str, str], _Histogram] = defaultdict(lambda: _Histogram(STEP_BUCKETS_S))
        self._seen_results: set[int] = set()
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # collected on demand; no up-front description (avoids a query at registration)

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from neurorad.store.models import Delivery, Instance, Job, QuarantineItem, Result, Study, WorkflowRun

        now = self._now()
        with self.db.read_session() as s:
            jobs = s.execute(select(Job.kind, WorkflowRun.workflow, Job.state, Job.created_at, Job.run_after,
                                    Job.started_at, Job.finished_at)
                             .outerjoin(WorkflowRun, WorkflowRun.id == Job.run_id)).all()
            stored, received = s.execute(select(func.count(Instance.id),
                                                func.coalesce(func.sum(Instance.times_received), 0))).one()
            refused = s.scalar(select(func.count(QuarantineItem.id))) or 0
            studies = s.execute(select(Study.state, func.count()).group_by(Study.state)).all()
            runs = s.execute(select(WorkflowRun.workflow, WorkflowRun.state, func.count())
                             .group_by(WorkflowRun.workflow, WorkflowRun.state)).all()
            deliveries = s.execute(select(Delivery.destination, Delivery.state, func.count())
                                   .group_by(Delivery.destination, Delivery.state)).all()
            anchors = s.execute(select(Result.id, Result.workflow, Result.path)
                                .where(Result.id.in_(select(WorkflowRun.result_id)))).all()

        depth: dict[str, int] = defaultdict(int)
        oldest: dict[str, float] = defaultdict(float)
        by_state: dict[tuple[str, str, str], int] = defaultdict(int)
        durations: dict[tuple[str, str], _Histogram] = defaultdict(lambda: _Histogram(JOB_BUCKETS_S))
        for kind, workflow, state, created, _run_after, started, finished in jobs:
            workflow = workflow or ""
            by_state[(kind, workflow, state)] += 1
            if state == "pending":
                depth[kind] += 1
                oldest[kind] = max(oldest[kind], (now - created).total_seconds() if created else 0.0)
            elif state == "succeeded" and started is not None and finished is not None:
                durations[(kind, workflow)].observe(max((finished - started).total_seconds(), 0.0))

        g = GaugeMetricFamily("neurorad_queue_depth", "Pending jobs (waiting for a worker or a retry).",
                              labels=["kind"])
        for kind in sorted({k for k, _, _ in by_state} | set(depth)):
            g.add_metric([kind], depth.get(kind, 0))
        yield g
        g = GaugeMetricFamily("neurorad_queue_oldest_pending_seconds", "Age of the oldest pending job.",
                              labels=["kind"])
        for kind, age in sorted(oldest.items()):
            g.add_metric([kind], age)
        yield g
        g = GaugeMetricFamily("neurorad_jobs", "Jobs by kind, workflow and state.",
                              labels=["kind", "workflow", "state"])
        for key, n in sorted(by_state.items()):
            g.add_metric(list(key), n)
        yield g
        yield _histogram_family("neurorad_job_duration_seconds", "Run time of succeeded jobs (last attempt).",
                                ["kind", "workflow"], durations)
        with self._lock:
            for rid, workflow, path in anchors:
                if rid in self._seen_results:
                    continue
                self._seen_results.add(rid)
                for step in self._read_steps(path):
                    self._steps[(workflow, str(step.get("name", "")))].observe(float(step.get("seconds", 0.0)))
            yield _histogram_family("neurorad_workflow_step_duration_seconds",
                                    "Step times recorded in workflow results' provenance.",
                                    ["workflow", "step"], dict(self._steps))
        yield CounterMetricFamily("neurorad_instances_stored", "DICOM instances stored (each once).", value=stored)
        yield CounterMetricFamily("neurorad_instances_received", "DICOM instances received, duplicates included.",
                                  value=int(received))
        yield CounterMetricFamily("neurorad_instances_refused", "Instances refused and listed in the quarantine.",
                                  value=refused)
        g = GaugeMetricFamily("neurorad_studies", "Studies by state.", labels=["state"])
        for state, n in sorted(studies):
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("neurorad_runs", "Workflow runs by workflow and state.", labels=["workflow", "state"])
        for workflow, state, n in sorted(runs):
            g.add_metric([workflow, state], n)
        yield g
        g = GaugeMetricFamily("neurorad_deliveries", "Result deliveries by destination and state.",
                              labels=["destination", "state"])
        for dest, state, n in sorted(deliveries):
            g.add_metric([dest, state], n)
        yield g

    def _read_steps(self, relpath: str) -> list[dict]:
        try:
            doc = json.loads(self.storage.abspath(relpath).read_text())
        except (OSError, ValueError):
            return []
        prov = doc.get("provenance") or {}
        steps = prov.get("steps") if isinstance(prov, dict) else None
        return [st for st in steps or [] if isinstance(st, dict) and isinstance(st.get("seconds"), (int, float))]


def make_registry(db, storage) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding the installation's collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(db, storage))
    return reg
